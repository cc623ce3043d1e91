// qfx_mac.h: the folded inner product of dense/conv2d, with multipliers or shifts.
//
// Everything here works on MANTISSAS (ap_int/ap_uint), not on ap_fixed values:
// x = xm * 2^-Fx, w = wm * 2^-Fw, so x * w = (xm * wm) * 2^-(Fx+Fw), and acc_t
// (F_acc >= Fx + Fw fractional bits, by contract) holds it as the mantissa
// (xm * wm) << (F_acc - Fx - Fw). The accumulator mantissa has acc_t's width
// and wraps like acc_t (AP_WRAP): a sum of integers modulo 2^W_acc is exact as
// soon as the final value fits, which the compiler's interval sizing of acc_t
// guarantees, so neither the truncation of a single product to W_acc bits nor
// the summation order can change the result. No rounding happens here.
#ifndef QFX_MAC_H
#define QFX_MAC_H

#include <stdint.h>
#include "qfx_types.h"

namespace qfx {

// Mantissa types of a dense/conv config C.
template <class C>
struct mac_types {
    typedef fixed_traits<typename C::in_t> X;
    typedef fixed_traits<typename C::w_t> Wt;
    typedef fixed_traits<typename C::acc_t> A;
    typedef typename X::raw_t x_m;                        // input mantissa
    typedef typename Wt::raw_t w_m;                       // weight mantissa
    typedef ap_int<A::width> acc_m;                       // accumulator mantissa (wraps like acc_t)
    typedef ap_int<X::width + Wt::width + 1> prod_m;      // any x_m * w_m fits (either signedness)
    static const int shift = A::frac_bits - X::frac_bits - Wt::frac_bits;  // product -> acc grid
    static_assert(A::frac_bits >= X::frac_bits + Wt::frac_bits,
                  "acc_t needs at least F_in + F_w fractional bits (exact products)");
};

// Product term with a multiplier: w[idx] is the mantissa of a w_t weight; ws is unused.
struct mac_multiply {
    static const unsigned per_weight = 1;  // array entries per weight
    template <class C, class WA, class WB>
    static typename mac_types<C>::prod_m term(const typename mac_types<C>::x_m& xm, const WA w[], const WB ws[],
                                              unsigned idx) {
        QFX_HLS(INLINE)
        (void)ws;
        const typename mac_types<C>::w_m wm = w[idx];  // low W_w bits of the raw integer (as set_raw)
        return mul<C>(xm, wm);                         // exact: W_x + W_w bits
    }
};

// Product term without a multiplier: weight mantissa = sum_k sign[idx*K+k] * 2^shift[idx*K+k].
struct mac_shiftadd {
    template <class C, class WA, class WB>
    static typename mac_types<C>::prod_m term(const typename mac_types<C>::x_m& xm, const int8_t sign[],
                                              const int8_t shift[], unsigned idx) {
        QFX_HLS(INLINE)
        typedef typename mac_types<C>::prod_m prod_m;
        // x_m * w_m needs at most W_x + W_w + 1 signed bits; the terms are summed
        // modulo 2^(W_x + W_w + 1), exact because the final product fits.
        const prod_m x = xm;  // sign- or zero-extended mantissa
        prod_m p = 0;
    QFX_LABEL(terms)
        for (unsigned k = 0; k < C::n_terms; k++) {
            QFX_HLS(UNROLL)
            const unsigned i = idx * C::n_terms + k;
            const prod_m t = x << shift[i];  // constant shift after unrolling: wiring
            if (sign[i] > 0) p += t;
            else if (sign[i] < 0) p -= t;
        }
        return p;
    }
};

// Folding of P = NI * NO products over `reuse` cycles (README "Folding").
template <unsigned P, unsigned REUSE>
struct fold_shape {
    static const unsigned reuse = REUSE < P ? REUSE : P;              // more cycles than products is idle
    static const unsigned mults = (P + reuse - 1) / reuse;            // multipliers (or term units)
    static const unsigned folds = (P + mults - 1) / mults;            // cycles; <= reuse, == reuse when it divides P
};

// acc[j] += x[i] * w[j*NI + i] for all j < NO, i < NI, exactly (mod 2^W_acc).
// Fold r, multiplier m computes product number r*M + m (row-major [j][i]); the
// last fold is partial when M does not divide P. (j0, i0) = position of product
// r*M, advanced by M each fold, so no division by NI sits on the datapath.
template <class C, class MAC, unsigned NI, unsigned NO, class WA, class WB>
void fold_mac(const typename mac_types<C>::x_m x[NI], typename mac_types<C>::acc_m acc[NO], const WA wa[],
              const WB wb[]) {
    QFX_HLS(INLINE)
    typedef mac_types<C> T;
    typedef fold_shape<NI * NO, reuse_of<C>::value> F;
    static const unsigned M = F::mults;
    unsigned j0 = 0, i0 = 0;
QFX_LABEL(folds)
    for (unsigned r = 0; r < F::folds; r++) {
        QFX_HLS(PIPELINE II=1)
    QFX_LABEL(mults)
        for (unsigned m = 0; m < M; m++) {
            QFX_HLS(UNROLL)
            if ((NI * NO) % M == 0 || r * M + m < NI * NO) {  // the last fold may be partial
                const unsigned t = i0 + m;
                const unsigned i = t % NI, j = j0 + t / NI;
                const typename T::acc_m p = MAC::template term<C, WA, WB>(x[i], wa, wb, j * NI + i);  // mod 2^W_acc
                acc[j] += p << T::shift;  // onto acc_t's grid, exact
            }
        }
        i0 += M % NI;
        j0 += M / NI;
        if (i0 >= NI) {
            i0 -= NI;
            j0++;
        }
    }
}

// Mantissa of cast(b, acc_t) for a bias mantissa of b_t (exact: acc_t holds b_t).
template <class C>
inline typename mac_types<C>::acc_m bias_mantissa(typename C::b_raw_t b) {
    const typename C::acc_t a = from_raw<typename C::b_t>(b);
    return raw_of(a);
}

// The one cast: the accumulator mantissa read as acc_t, assigned to out_t.
template <class C>
inline typename C::out_t acc_to_out(const typename mac_types<C>::acc_m& acc) {
    const typename C::acc_t a = from_raw<typename C::acc_t>(acc);
    const typename C::out_t y = a;  // out_t's rounding, then its overflow
    return y;
}

}  // namespace qfx

#endif
