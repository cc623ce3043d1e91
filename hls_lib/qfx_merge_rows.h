// qfx_merge_rows.h: the channels of two feature maps (or vectors) interleaved in a fixed order, no arithmetic.
// For every pixel p (HWC order; n_pixels = 1 for vectors) and output channel c in 0..n_chan:
// out[p][c] = the next value of in0 if part[c] == 0, else the next value of in1. Each input's channels
// keep their order; in0 gives the pixel the channels c with part[c] == 0, in1 the others.
// Where it is used: a layer with mixed rows (Mix and Match) runs as a multiplier core (fixed-point rows)
// and a shift-add core (K-hot rows) in parallel; this puts their outputs back in the layer's channel order.
#ifndef QFX_MERGE_ROWS_H
#define QFX_MERGE_ROWS_H

#include <stdint.h>
#include "qfx_types.h"

namespace qfx {

template <class C>
void merge_rows(hls::stream<typename C::in0_t>& in0, hls::stream<typename C::in1_t>& in1,
                hls::stream<typename C::out_t>& out, const int8_t part[C::n_chan]) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(pixels)
    for (unsigned p = 0; p < C::n_pixels; p++) {
    QFX_LABEL(chans)
        for (unsigned c = 0; c < C::n_chan; c++) {
            QFX_PRAGMA(HLS PIPELINE II=1)
            typename C::out_t y;
            if (part[c] == 0) {
                y = in0.read();
            } else {
                y = in1.read();
            }
            out.write(y);
        }
    }
}

}  // namespace qfx

#endif
