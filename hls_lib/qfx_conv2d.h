// qfx_conv2d.h: streaming 2-D convolution (zero padding, stride, groups 1).
// out[oy][ox][f] = cast(b[f] + sum_{ky,kx,c} x_pad[oy*sh+ky][ox*sw+kx][c] * w[f][ky][kx][c], out_t):
// exact products and sums in acc_t, one cast to out_t per output.
#ifndef QFX_CONV2D_H
#define QFX_CONV2D_H

#include "qfx_types.h"
#include "qfx_mac.h"
#include "qfx_window.h"

namespace qfx {

// Shared body: walks the padded image in HWC order; pads are zeros made here,
// real pixels are read from `in` exactly once; a window is complete at the
// last (row, column) of each output position.
template <class C, class MAC, class WA, class WB>
void conv2d_core(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out, const WA wa[],
                 const WB wb[], const typename C::b_raw_t b[C::n_filt]) {
    typedef typename C::in_t in_t;
    static const unsigned HP = C::in_height + C::pad_top + C::pad_bottom;
    static const unsigned WP = C::in_width + C::pad_left + C::pad_right;
    static const unsigned KH = C::filt_height, KW = C::filt_width, NC = C::n_chan;
    in_t lb[line_rows<KH>::value][WP][NC];
    QFX_HLS(ARRAY_PARTITION variable=lb complete dim=1)
    in_t win[KH][KW][NC];
    QFX_HLS(ARRAY_PARTITION variable=win complete dim=0)
QFX_LABEL(rows)
    for (unsigned py = 0; py < HP; py++) {
    QFX_LABEL(cols)
        for (unsigned px = 0; px < WP; px++) {
            const bool inside = in_span(py, C::pad_top, C::in_height) && in_span(px, C::pad_left, C::in_width);
        QFX_LABEL(chans)
            for (unsigned c = 0; c < NC; c++) {
                QFX_HLS(PIPELINE II=1)
                in_t v = 0;  // zero padding
                if (inside) v = in.read();
                window_push<in_t, WP, NC, KH, KW>(lb, win, px, c, v);
            }
            if (!window_ends_at(py, KH, C::stride_height, C::out_height) ||
                !window_ends_at(px, KW, C::stride_width, C::out_width))
                continue;
        QFX_LABEL(filters)
            for (unsigned f = 0; f < C::n_filt; f++) {
                QFX_HLS(PIPELINE II=1)
                typename C::acc_t acc = from_raw<typename C::b_t>(b[f]);  // exact
            QFX_LABEL(win_y)
                for (unsigned ky = 0; ky < KH; ky++) {
                QFX_LABEL(win_x)
                    for (unsigned kx = 0; kx < KW; kx++) {
                    QFX_LABEL(win_c)
                        for (unsigned c = 0; c < NC; c++) {
                            MAC::template mac<C>(acc, win[ky][kx][c], wa, wb, ((f * KH + ky) * KW + kx) * NC + c);
                        }
                    }
                }
                const typename C::out_t y = acc;  // the one cast
                out.write(y);
            }
        }
    }
}

// w: mantissas of w_t, flattened [n_filt][filt_height][filt_width][n_chan].
template <class C>
void conv2d(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
            const typename C::w_raw_t w[C::n_filt * C::filt_height * C::filt_width * C::n_chan],
            const typename C::b_raw_t b[C::n_filt]) {
    QFX_HLS(INLINE off)
    conv2d_core<C, mac_multiply>(in, out, w, w, b);
}

}  // namespace qfx

#endif
