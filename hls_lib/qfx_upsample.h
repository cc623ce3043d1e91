// qfx_upsample.h: nearest-neighbour upsampling by integer factors (nn.Upsample(scale_factor, "nearest")).
// out[y][x][c] = in[y / scale_height][x / scale_width][c]; one input row is kept in a buffer and
// written scale_height times, each pixel scale_width times. No arithmetic.
#ifndef QFX_UPSAMPLE_H
#define QFX_UPSAMPLE_H

#include "qfx_types.h"

namespace qfx {

template <class C>
void upsample2d(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
    typename C::in_t row[C::in_width][C::n_chan];
QFX_LABEL(rows)
    for (unsigned y = 0; y < C::in_height; y++) {
    QFX_LABEL(repeat_rows)
        for (unsigned ry = 0; ry < C::scale_height; ry++) {
        QFX_LABEL(cols)
            for (unsigned x = 0; x < C::in_width; x++) {
            QFX_LABEL(repeat_cols)
                for (unsigned rx = 0; rx < C::scale_width; rx++) {
                QFX_LABEL(chans)
                    for (unsigned c = 0; c < C::n_chan; c++) {
                        QFX_PRAGMA(HLS PIPELINE II=1)
                        if (ry == 0 && rx == 0) row[x][c] = in.read();  // each input read once
                        const typename C::out_t v = row[x][c];
                        out.write(v);
                    }
                }
            }
        }
    }
}

}  // namespace qfx

#endif
