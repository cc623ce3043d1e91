// qfx_shiftadd.h: dense / conv2d with K-hot weights as shift-and-add terms.
// The weight mantissa is sum_k sign[k] * 2^shift[k] (sign in {-1,0,+1}); each
// term is x's mantissa shifted (wiring once the constant arrays are unrolled),
// so no multiplier is used. Results are bit-identical to dense / conv2d.
// For straight-line generated code use qfx::shl<S>(x) (qfx_types.h).
#ifndef QFX_SHIFTADD_H
#define QFX_SHIFTADD_H

#include <stdint.h>
#include "qfx_dense.h"
#include "qfx_conv2d.h"

namespace qfx {

// sign/shift: [n_out][n_in][n_terms] flattened.
template <class C>
void dense_shiftadd(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                    const int8_t sign[C::n_out * C::n_in * C::n_terms],
                    const int8_t shift[C::n_out * C::n_in * C::n_terms], const typename C::b_raw_t b[C::n_out]) {
    QFX_PRAGMA(HLS INLINE off)
    static const unsigned MK = fold_shape<C::n_in * C::n_out, reuse_of<C>::value>::mults * C::n_terms;
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=sign cyclic factor=MK)  // term unit m reads weight r*M + m
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=shift cyclic factor=MK)
    (void)MK;
    dense_core<C, mac_shiftadd>(in, out, sign, shift, b);
}

// sign/shift: [n_filt][filt_height][filt_width][n_chan][n_terms] flattened.
template <class C>
void conv2d_shiftadd(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                     const int8_t sign[C::n_filt * C::filt_height * C::filt_width * C::n_chan * C::n_terms],
                     const int8_t shift[C::n_filt * C::filt_height * C::filt_width * C::n_chan * C::n_terms],
                     const typename C::b_raw_t b[C::n_filt]) {
    QFX_PRAGMA(HLS INLINE off)
    static const unsigned MK =
        fold_shape<C::n_filt * C::filt_height * C::filt_width * C::n_chan, reuse_of<C>::value>::mults * C::n_terms;
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=sign cyclic factor=MK)  // term unit m reads weight r*M + m
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=shift cyclic factor=MK)
    (void)MK;
    conv2d_core<C, mac_shiftadd>(in, out, sign, shift, b);
}

}  // namespace qfx

#endif
