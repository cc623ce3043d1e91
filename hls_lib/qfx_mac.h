// qfx_mac.h: the folded inner product of dense/conv2d, with multipliers or shifts.
//
// Everything here works on MANTISSAS, not on ap_fixed values:
// x = xm * 2^-Fx, w = wm * 2^-Fw, so x * w = (xm * wm) * 2^-(Fx+Fw) exactly,
// in W_x + W_w bits. acc_t has width W_acc and F_acc fractional bits; s = F_acc - Fx - Fw:
//   sum  = sum of the product mantissas, kept modulo 2^(W_acc - s)   (sum_m)
//   acc  = cast(b, acc_t) + sum * 2^s, modulo 2^W_acc                (acc_m)
// which is acc_t's mantissa of b + sum x*w. Modular sums are exact as soon as
// the final value fits, and acc_t holds the whole interval (the compiler sizes
// it), so neither the wrap of a partial sum nor the summation order can change
// the result: (S mod 2^(W-s)) * 2^s = S * 2^s (mod 2^W). No rounding here.
// s < 0 (acc_t coarser than the product grid) is the compiler's choice when every
// weight mantissa is a multiple of 2^-s (weights on a coarser grid than w_t): every
// product, hence the sum, is then a multiple of 2^-s and the shift right is exact.
//
// Mantissa storage: ap_int/ap_uint under synthesis. In C simulation (no __SYNTHESIS__)
// the same code runs on native integers where that is exact: x and w mantissas
// sign- or zero-extended into int64_t (W_x, W_w <= 63), products and sums in uint64_t,
// i.e. modulo 2^64, which equals the sums modulo 2^(W_acc - s) for W_acc - s <= 64 once
// the sum is read back as ap_int<W_acc - s> (sum_bits). Define QFX_CSIM_AP_MANTISSAS
// to simulate with ap_int everywhere (the slower reference build).
#ifndef QFX_MAC_H
#define QFX_MAC_H

#include <stdint.h>
#include "qfx_types.h"

namespace qfx {

#if !defined(__SYNTHESIS__) && !defined(QFX_CSIM_AP_MANTISSAS)
#define QFX_NATIVE_MANTISSAS 1
static const bool native_mantissas = true;
#else
static const bool native_mantissas = false;
#endif

template <bool B> struct bool_tag {};
template <bool B, class T, class F> struct select_type { typedef T type; };
template <class T, class F> struct select_type<false, T, F> { typedef F type; };

// The low W bits of an integer, sign-extended (SIGNED) or zero-extended, as int64_t
// (W <= 63): what assigning it to ap_int<W> / ap_uint<W> keeps.
template <int W, bool SIGNED, class R>
inline int64_t low_bits(R raw) {
    const bool same = sizeof(R) * 8 == W && (R(-1) < R(0)) == SIGNED;  // nothing to drop
    if (same) return (int64_t)raw;
    const uint64_t u = (uint64_t)raw << (64 - W);
    return SIGNED ? (int64_t)u >> (64 - W) : (int64_t)(u >> (64 - W));
}

// Mantissa types of a dense/conv config C.
template <class C>
struct mac_types {
    typedef fixed_traits<typename C::in_t> X;
    typedef fixed_traits<typename C::w_t> Wt;
    typedef fixed_traits<typename C::acc_t> A;
    static const int shift = A::frac_bits - X::frac_bits - Wt::frac_bits;  // product grid -> acc grid
    static_assert(shift < A::width, "acc_t's LSB is too fine for its width (no product would fit)");
    static const int sum_width = A::width - shift;
    static const bool native = native_mantissas && X::width <= 63 && Wt::width <= 63 && sum_width <= 64;
    typedef ap_int<A::width> acc_m;                       // acc_t's mantissa (wraps like acc_t)
    typedef ap_int<sum_width> sum_ap;                     // sum of products on the product grid (wraps)
    typedef typename select_type<native, int64_t, typename X::raw_t>::type x_m;   // input mantissa
    typedef typename select_type<native, int64_t, typename Wt::raw_t>::type w_m;  // weight mantissa
    typedef typename select_type<native, uint64_t, sum_ap>::type sum_m;           // the running sum
    typedef typename select_type<native, uint64_t, ap_int<X::width + Wt::width + 1> >::type prod_m;  // any x_m * w_m

    static x_m mantissa(const typename C::in_t& v) {  // x's mantissa
        QFX_PRAGMA(HLS INLINE)
        return mantissa_of(v, bool_tag<native>());
    }
    template <class R>
    static w_m weight(R raw) {  // the low W_w bits of a raw weight (as set_raw)
        QFX_PRAGMA(HLS INLINE)
        return weight_of(raw, bool_tag<native>());
    }
    static sum_ap sum_bits(const sum_m& s) {  // the sum modulo 2^(W_acc - s), as ap_int
        QFX_PRAGMA(HLS INLINE)
        return sum_of(s, bool_tag<native>());
    }

  private:
    static x_m mantissa_of(const typename C::in_t& v, bool_tag<false>) { return raw_of(v); }
    static x_m mantissa_of(const typename C::in_t& v, bool_tag<true>) {
        return X::is_signed ? (x_m)raw_of(v).to_int64() : (x_m)raw_of(v).to_uint64();
    }
    template <class R> static w_m weight_of(R raw, bool_tag<false>) {
        const w_m wm = raw;
        return wm;
    }
    template <class R> static w_m weight_of(R raw, bool_tag<true>) {
        return low_bits<(Wt::width < 64 ? Wt::width : 63), Wt::is_signed>(raw);
    }
    static sum_ap sum_of(const sum_m& s, bool_tag<false>) { return s; }
    static sum_ap sum_of(const sum_m& s, bool_tag<true>) {
        const ap_int<64> bits = (ap_int<64>)(int64_t)s;
        const sum_ap r = bits;  // low bits
        return r;
    }
};

// Product term with a multiplier: w[idx] is the mantissa of a w_t weight; ws is unused.
struct mac_multiply {
    template <class C> struct product {  // x_m * w_m: W_x + W_w bits (ap_int rules), exact; uint64_t natively
        typedef typename select_type<mac_types<C>::native, uint64_t,
                                     decltype(typename fixed_traits<typename C::in_t>::raw_t() *
                                              typename fixed_traits<typename C::w_t>::raw_t())>::type type;
    };
    template <class C, class WA, class WB>
    static typename product<C>::type term(const typename mac_types<C>::x_m& xm, const WA w[], const WB ws[],
                                          unsigned idx) {
        QFX_PRAGMA(HLS INLINE)
        (void)ws;
        const typename mac_types<C>::w_m wm = mac_types<C>::weight(w[idx]);  // low W_w bits (as set_raw)
        return prod<C>(xm, wm, bool_tag<mac_types<C>::native>());
    }
    template <class C>
    static typename product<C>::type prod(const typename mac_types<C>::x_m& xm,
                                          const typename mac_types<C>::w_m& wm, bool_tag<false>) {
        return mul<C>(xm, wm);  // exact: W_x + W_w bits
    }
    template <class C>
    static uint64_t prod(const typename mac_types<C>::x_m& xm, const typename mac_types<C>::w_m& wm, bool_tag<true>) {
        return (uint64_t)xm * (uint64_t)wm;  // native: modulo 2^64
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

// Outputs per MAC term and the type summed per row of terms: one output (sum_m) unless the MAC policy
// declares `lanes` and `sum<C>::type` (qfx_dsp_pack.h: two outputs per packed DSP product).
template <class MAC, class C, class = void> struct mac_lanes {
    static const unsigned value = 1;
    typedef typename mac_types<C>::sum_m sum_t;
};
template <class MAC, class C>
struct mac_lanes<MAC, C, typename void_if_valid<decltype(MAC::lanes)>::type> {
    static const unsigned value = MAC::lanes;
    typedef typename MAC::template sum<C>::type sum_t;
};
// Output k of a row's sum (the sum itself for a one-lane MAC).
template <class S> inline S lane_of(const S& s, unsigned) { return s; }

// Folding of P = NI * NO products over `reuse` cycles (README "Folding").
template <unsigned P, unsigned REUSE>
struct fold_shape {
    static const unsigned reuse = REUSE < P ? REUSE : P;              // more cycles than products is idle
    static const unsigned mults = (P + reuse - 1) / reuse;            // multipliers (or term units)
    static const unsigned folds = (P + mults - 1) / mults;            // cycles; <= reuse, == reuse when it divides P
};

// sum[j] = sum_i x[i] * w[j*NI + i] for all j < NO (product mantissas, mod 2^(W_acc - s)).
// Fold r, multiplier m computes product number r*M + m (row-major [j][i]); the
// last fold is partial when M does not divide P. Three loop shapes of that one
// schedule (M multipliers, `folds` pipelined cycles), chosen at compile time:
//   M a multiple of NI: each fold completes M/NI whole outputs;
//   NI a multiple of M: each output takes NI/M folds of M products;
//   otherwise: (j0, i0) = position of product r*M, advanced by M each fold.
// The first two sum each fold into a local before touching sum[] (a plain dot
// product for the C simulation); no division by NI sits on the datapath. The
// third is simulated row by row on native mantissas (see below).
// A MAC of several lanes (mac_lanes) computes NO rows of terms, each giving `lanes` outputs.
template <class C, class MAC, unsigned NI, unsigned NO, class WA, class WB>
void fold_mac(const typename mac_types<C>::x_m x[NI], typename mac_lanes<MAC, C>::sum_t sum[NO], const WA wa[],
              const WB wb[]) {
    QFX_PRAGMA(HLS INLINE)
    typedef fold_shape<NI * NO, reuse_of<C>::value> F;
    typedef typename mac_lanes<MAC, C>::sum_t sum_m;
    static const unsigned M = F::mults;
    if (M % NI == 0) {
        static const unsigned K = M / NI;  // outputs per fold
    QFX_LABEL(folds_whole)
        for (unsigned r = 0; r < F::folds; r++) {
            QFX_PRAGMA(HLS PIPELINE II=1)
        QFX_LABEL(outs)
            for (unsigned k = 0; k < K; k++) {
                QFX_PRAGMA(HLS UNROLL)
                const unsigned j = r * K + k;
                if (NO % K == 0 || j < NO) {  // the last fold may be partial
                    sum_m s = 0;
                QFX_LABEL(ins)
                    for (unsigned i = 0; i < NI; i++) {
                        QFX_PRAGMA(HLS UNROLL)
                        s += MAC::template term<C, WA, WB>(x[i], wa, wb, j * NI + i);  // exact product
                    }
                    sum[j] = s;
                }
            }
        }
        return;
    }
QFX_LABEL(clear)
    for (unsigned j = 0; j < NO; j++) {
        QFX_PRAGMA(HLS UNROLL)
        sum[j] = 0;
    }
    if (NI % M == 0) {
        unsigned j = 0, i0 = 0;  // output of fold r and its first input
    QFX_LABEL(folds_part)
        for (unsigned r = 0; r < F::folds; r++) {
            QFX_PRAGMA(HLS PIPELINE II=1)
            sum_m s = 0;
        QFX_LABEL(mults_part)
            for (unsigned m = 0; m < M; m++) {
                QFX_PRAGMA(HLS UNROLL)
                s += MAC::template term<C, WA, WB>(x[i0 + m], wa, wb, r * M + m);  // exact product
            }
            sum[j] += s;  // sum mod 2^(W_acc-s)
            i0 += M;
            if (i0 == NI) {
                i0 = 0;
                j++;
            }
        }
        return;
    }
#ifdef QFX_NATIVE_MANTISSAS
    if (mac_types<C>::native) {
        // C simulation only, for folds that straddle outputs: the same P products and the same
        // terms, summed row by row (exact modular sums do not depend on the order). The fold walk
        // below is what synthesis reads; -DQFX_CSIM_AP_MANTISSAS simulates it (tests/test_hls_lib.py).
        for (unsigned j = 0; j < NO; j++) {
            sum_m s = 0;
            for (unsigned i = 0; i < NI; i++) s += MAC::template term<C, WA, WB>(x[i], wa, wb, j * NI + i);
            sum[j] = s;
        }
        return;
    }
#endif
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

// sum * 2^s on acc_t's grid, modulo 2^W_acc (s < 0: an exact shift right, see the top).
template <int S> struct to_acc_grid {
    template <class A, class B> static A apply(const B& sum) {
        A acc = sum;  // low W_acc bits
        acc <<= S;
        return acc;
    }
};
template <> struct to_acc_grid<0> {
    template <class A, class B> static A apply(const B& sum) {
        const A acc = sum;
        return acc;
    }
};
template <int S, bool NEG = (S < 0)> struct to_acc_pick : to_acc_grid<S> {};
template <int S> struct to_acc_pick<S, true> {
    template <class A, class B> static A apply(const B& sum) {
        const B q = sum >> (-S);  // arithmetic shift: exact, sum is a multiple of 2^-S
        const A acc = q;
        return acc;
    }
};

// acc = bias + sum * 2^s on acc_t's grid (exact, mod 2^W_acc), then the one
// cast: the mantissa read as acc_t, assigned to out_t.
template <class C>
inline typename C::out_t acc_to_out(const typename mac_types<C>::acc_m& bias, const typename mac_types<C>::sum_m& sum) {
    typedef mac_types<C> T;
    typename T::acc_m acc = to_acc_pick<T::shift>::template apply<typename T::acc_m>(T::sum_bits(sum));
    acc += bias;
    const typename C::acc_t a = from_raw<typename C::acc_t>(acc);
    return convert<typename C::out_t>(a);  // out_t's rounding, then its overflow
}

}  // namespace qfx

#endif
