// qfx_straight.h: stream drivers of layers generated as straight-line shift-add code (K-hot weights).
// P::apply(x, y, b) (generated per layer: firmware/shiftadd/<layer>.h) computes every output of one
// vector (dense) or one window (conv2d) with adders only; these drivers stream the data in and out as
// the other hls_lib kernels do. Called as qfx::dense_straight<C, P> / qfx::conv2d_straight<C, P>
// (also reachable as qfx_gen::..., the name the generated code used before).
#ifndef QFX_STRAIGHT_H
#define QFX_STRAIGHT_H

#include <hls_stream.h>
#include "qfx_types.h"
#include "qfx_window.h"

namespace qfx {


// dense: read the whole vector, compute all n_out outputs at once, write them one per cycle.
template <class C, class P>
void dense_straight(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                    const typename C::b_raw_t b[C::n_out]) {
    QFX_PRAGMA(HLS INLINE off)
    typename C::in_t x[C::n_in];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=x complete)
    typename C::out_t y[C::n_out];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=y complete)
QFX_LABEL(read)
    for (unsigned i = 0; i < C::n_in; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        x[i] = in.read();
    }
    P::apply(x, y, b);
QFX_LABEL(write)
    for (unsigned j = 0; j < C::n_out; j++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        out.write(y[j]);
    }
}

// conv2d: the hls_lib line buffer and window (qfx_window.h); at each complete window all
// n_filt outputs are computed at once and written one per cycle.
template <class C, class P>
void conv2d_straight(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                     const typename C::b_raw_t b[C::n_filt]) {
    QFX_PRAGMA(HLS INLINE off)
    typedef typename C::in_t in_t;
    static const unsigned HP = C::in_height + C::pad_top + C::pad_bottom;
    static const unsigned WP = C::in_width + C::pad_left + C::pad_right;
    static const unsigned KH = C::filt_height, KW = C::filt_width, NC = C::n_chan;
    in_t lb[qfx::line_rows<KH>::value][WP][NC];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=lb complete dim=1)
    in_t win[KH][KW][NC];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=win complete dim=0)
    typename C::out_t y[C::n_filt];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=y complete)
QFX_LABEL(rows)
    for (unsigned py = 0; py < HP; py++) {
    QFX_LABEL(cols)
        for (unsigned px = 0; px < WP; px++) {
            const bool inside = qfx::in_span(py, C::pad_top, C::in_height) && qfx::in_span(px, C::pad_left, C::in_width);
        QFX_LABEL(chans)
            for (unsigned c = 0; c < NC; c++) {
                QFX_PRAGMA(HLS PIPELINE II=1)
                in_t v = zero<in_t>();  // zero padding
                if (inside) v = in.read();
                qfx::window_push<in_t, WP, NC, KH, KW>(lb, win, px, c, v);
            }
            if (!qfx::window_ends_at(py, KH, C::stride_height, C::out_height) ||
                !qfx::window_ends_at(px, KW, C::stride_width, C::out_width))
                continue;
            P::apply(win, y, b);
        QFX_LABEL(filters)
            for (unsigned f = 0; f < C::n_filt; f++) {
                QFX_PRAGMA(HLS PIPELINE II=1)
                out.write(y[f]);
            }
        }
    }
}

}  // namespace qfx

namespace qfx_gen {
using qfx::dense_straight;
using qfx::conv2d_straight;
}  // namespace qfx_gen

#endif
