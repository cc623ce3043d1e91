// qfx_mac.h: the folded inner product of dense/conv2d, with multipliers or shifts.
//
// Everything here works on MANTISSAS (ap_int/ap_uint), not on ap_fixed values:
// x = xm * 2^-Fx, w = wm * 2^-Fw, so x * w = (xm * wm) * 2^-(Fx+Fw) exactly,
// in W_x + W_w bits. acc_t has F_acc >= Fx + Fw fractional bits (contract) and
// width W_acc; with s = F_acc - Fx - Fw:
//   sum  = sum of the product mantissas, kept modulo 2^(W_acc - s)   (sum_m)
//   acc  = cast(b, acc_t) + (sum << s), modulo 2^W_acc               (acc_m)
// which is acc_t's mantissa of b + sum x*w. Modular sums are exact as soon as
// the final value fits, and acc_t holds the whole interval (the compiler sizes
// it), so neither the wrap of a partial sum nor the summation order can change
// the result: (S mod 2^(W-s)) * 2^s = S * 2^s (mod 2^W). No rounding here.
// (Mantissas also keep the C simulation fast: every ap_[u]fixed temporary of
// the Xilinx headers costs several volatile stores.)
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
    typedef ap_int<X::width + Wt::width + 1> prod_m;      // any x_m * w_m fits (either signedness)
    static const int shift = A::frac_bits - X::frac_bits - Wt::frac_bits;  // product grid -> acc grid
    static_assert(A::frac_bits >= X::frac_bits + Wt::frac_bits,
                  "acc_t needs at least F_in + F_w fractional bits (exact products)");
    static_assert(A::frac_bits - X::frac_bits - Wt::frac_bits < A::width,
                  "acc_t's LSB is too fine for its width (no product would fit)");
    typedef ap_int<A::width> acc_m;                       // acc_t's mantissa (wraps like acc_t)
    typedef ap_int<A::width - shift> sum_m;               // sum of products on the product grid (wraps)
};

// Product term with a multiplier: w[idx] is the mantissa of a w_t weight; ws is unused.
struct mac_multiply {
    template <class C> struct product {  // x_m * w_m: W_x + W_w bits (ap_int rules), exact
        typedef decltype(typename mac_types<C>::x_m() * typename mac_types<C>::w_m()) type;
    };
    template <class C, class WA, class WB>
    static typename product<C>::type term(const typename mac_types<C>::x_m& xm, const WA w[], const WB ws[],
                                              unsigned idx) {
        QFX_PRAGMA(HLS INLINE)
        (void)ws;
        const typename mac_types<C>::w_m wm = w[idx];  // low W_w bits of the raw integer (as set_raw)
        return mul<C>(xm, wm);                         // exact: W_x + W_w bits
    }
};

// Product term without a multiplier: weight mantissa = sum_k sign[idx*K+k] * 2^shift[idx*K+k].
struct mac_shiftadd {
    template <class C> struct product { typedef typename mac_types<C>::prod_m type; };
    template <class C, class WA, class WB>
    static typename mac_types<C>::prod_m term(const typename mac_types<C>::x_m& xm, const int8_t sign[],
                                              const int8_t shift[], unsigned idx) {
        QFX_PRAGMA(HLS INLINE)
        typedef typename mac_types<C>::prod_m prod_m;
        // x_m * w_m needs at most W_x + W_w + 1 signed bits; the terms are summed
        // modulo 2^(W_x + W_w + 1), exact because the final product fits.
        const prod_m x = xm;  // sign- or zero-extended mantissa
        prod_m p = 0;
    QFX_LABEL(terms)
        for (unsigned k = 0; k < C::n_terms; k++) {
            QFX_PRAGMA(HLS UNROLL)
            const unsigned i = idx * C::n_terms + k;
            const prod_m t = x << shift[i];  // reuse 1: a constant shift (wiring); folded: a small shifter
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

// sum[j] = sum_i x[i] * w[j*NI + i] for all j < NO (product mantissas, mod 2^(W_acc - s)).
// Fold r, multiplier m computes product number r*M + m (row-major [j][i]); the
// last fold is partial when M does not divide P. (j0, i0) = position of product
// r*M, advanced by M each fold, so no division by NI sits on the datapath.
template <class C, class MAC, unsigned NI, unsigned NO, class WA, class WB>
void fold_mac(const typename mac_types<C>::x_m x[NI], typename mac_types<C>::sum_m sum[NO], const WA wa[],
              const WB wb[]) {
    QFX_PRAGMA(HLS INLINE)
    typedef fold_shape<NI * NO, reuse_of<C>::value> F;
    static const unsigned M = F::mults;
QFX_LABEL(clear)
    for (unsigned j = 0; j < NO; j++) {
        QFX_PRAGMA(HLS UNROLL)
        sum[j] = 0;
    }
    unsigned j0 = 0, i0 = 0;
QFX_LABEL(folds)
    for (unsigned r = 0; r < F::folds; r++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
    QFX_LABEL(mults)
        for (unsigned m = 0; m < M; m++) {
            QFX_PRAGMA(HLS UNROLL)
            if ((NI * NO) % M == 0 || r * M + m < NI * NO) {  // the last fold may be partial
                const unsigned t = i0 + m;
                const unsigned i = t % NI, j = j0 + t / NI;
                sum[j] += MAC::template term<C, WA, WB>(x[i], wa, wb, j * NI + i);  // exact product, sum mod 2^(W_acc-s)
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

// acc = bias + (sum << s) on acc_t's grid (exact, mod 2^W_acc), then the one
// cast: the mantissa read as acc_t, assigned to out_t.
template <class C>
inline typename C::out_t acc_to_out(const typename mac_types<C>::acc_m& bias, const typename mac_types<C>::sum_m& sum) {
    typedef mac_types<C> T;
    typename T::acc_m acc = sum;  // sign-extended to W_acc
    acc <<= T::shift;
    acc += bias;
    const typename C::acc_t a = from_raw<typename C::acc_t>(acc);
    const typename C::out_t y = a;  // out_t's rounding, then its overflow
    return y;
}

}  // namespace qfx

#endif
