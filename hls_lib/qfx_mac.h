// qfx_mac.h: the product term of dense/conv2d, with a multiplier or with shifts.
// Both add x * w EXACTLY into the accumulator (full-precision ap_fixed
// product, then += into acc_t: no rounding as long as acc_t has F_in + F_w
// fractional bits and holds the interval, which the compiler guarantees).
#ifndef QFX_MAC_H
#define QFX_MAC_H

#include <stdint.h>
#include "qfx_types.h"

namespace qfx {

// w[idx] is the mantissa of a w_t weight; ws is unused.
struct mac_multiply {
    template <class C, class WA, class WB>
    static void mac(typename C::acc_t& acc, const typename C::in_t& x, const WA w[], const WB ws[],
                    unsigned idx) {
        QFX_HLS(INLINE)
        (void)ws;
        acc += x * from_raw<typename C::w_t>(w[idx]);  // exact product, exact sum
    }
};

// Weight mantissa = sum_k sign[idx*K+k] * 2^shift[idx*K+k]; no multiplier.
struct mac_shiftadd {
    template <class C>
    static void mac(typename C::acc_t& acc, const typename C::in_t& x, const int8_t sign[],
                    const int8_t shift[], unsigned idx) {
        QFX_HLS(INLINE)
        typedef fixed_traits<typename C::in_t> X;
        typedef fixed_traits<typename C::w_t> Wt;
        // Product mantissa x_m * w_m needs at most Wx + Ww + 1 signed bits; the
        // sum of the terms is computed modulo 2^PW, exact because the final
        // product fits. Its value is p * 2^-(Fx + Fw), as for x * w.
        const int PW = X::width + Wt::width + 1;
        const ap_int<PW> xm = raw_of(x);  // sign- or zero-extended mantissa
        ap_int<PW> p = 0;
    QFX_LABEL(terms)
        for (unsigned k = 0; k < C::n_terms; k++) {
            QFX_HLS(UNROLL)
            const unsigned i = idx * C::n_terms + k;
            const ap_int<PW> t = xm << shift[i];  // constant shift after unrolling: wiring
            if (sign[i] > 0) p += t;
            else if (sign[i] < 0) p -= t;
        }
        acc += from_raw<ap_fixed<PW, PW - X::frac_bits - Wt::frac_bits> >(p);
    }
};

}  // namespace qfx

#endif
