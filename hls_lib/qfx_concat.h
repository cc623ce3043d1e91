// qfx_concat.h: channel concatenation of 2, 3 or 4 feature maps (or vectors), each input cast to out_t.
// out[p][0 : n_chan0) = cast(in0[p], out_t), out[p][n_chan0 : n_chan0 + n_chan1) = cast(in1[p], out_t), ...
// for every pixel p (HWC order: the inputs take turns per pixel, n_pixels = 1 for vectors).
#ifndef QFX_CONCAT_H
#define QFX_CONCAT_H

#include "qfx_types.h"

namespace qfx {

// n values of `in`, each cast to OUT (its rounding, then its overflow), written to `out`.
template <class OUT, unsigned N, class IN>
void concat_part(hls::stream<IN>& in, hls::stream<OUT>& out) {
    QFX_PRAGMA(HLS INLINE)
QFX_LABEL(chans)
    for (unsigned c = 0; c < N; c++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const OUT y = in.read();  // the cast
        out.write(y);
    }
}

template <class C>
void concat(hls::stream<typename C::in0_t>& in0, hls::stream<typename C::in1_t>& in1,
            hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(pixels)
    for (unsigned p = 0; p < C::n_pixels; p++) {
        concat_part<typename C::out_t, C::n_chan0>(in0, out);
        concat_part<typename C::out_t, C::n_chan1>(in1, out);
    }
}

template <class C>
void concat(hls::stream<typename C::in0_t>& in0, hls::stream<typename C::in1_t>& in1,
            hls::stream<typename C::in2_t>& in2, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(pixels)
    for (unsigned p = 0; p < C::n_pixels; p++) {
        concat_part<typename C::out_t, C::n_chan0>(in0, out);
        concat_part<typename C::out_t, C::n_chan1>(in1, out);
        concat_part<typename C::out_t, C::n_chan2>(in2, out);
    }
}

template <class C>
void concat(hls::stream<typename C::in0_t>& in0, hls::stream<typename C::in1_t>& in1,
            hls::stream<typename C::in2_t>& in2, hls::stream<typename C::in3_t>& in3,
            hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(pixels)
    for (unsigned p = 0; p < C::n_pixels; p++) {
        concat_part<typename C::out_t, C::n_chan0>(in0, out);
        concat_part<typename C::out_t, C::n_chan1>(in1, out);
        concat_part<typename C::out_t, C::n_chan2>(in2, out);
        concat_part<typename C::out_t, C::n_chan3>(in3, out);
    }
}

}  // namespace qfx

#endif
