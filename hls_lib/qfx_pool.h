// qfx_pool.h: max pooling, average pooling (both with optional padding: C::pad_top/left/bottom/right,
// see pads_of in qfx_window.h; max pads with the lowest value, which never wins; average pads with zeros
// and divides by the whole window, PyTorch's count_include_pad), global average pooling.
// Max: no cast. Average: S = exact window sum in acc_t, out = cast(S * r, out_t)
// with r = cast(1/N, recip_t) (recip_t = ap_ufixed<R, 1-floor(log2 N), AP_RND_CONV, AP_SAT>), whose
// mantissa C::recip_raw the compiler computes (fixed.types.reciprocal_raw: the one home of that rule).
#ifndef QFX_POOL_H
#define QFX_POOL_H

#include "qfx_types.h"
#include "qfx_window.h"

namespace qfx {

// The streaming window shared by max and average pooling: walks the padded image (pad cells hold
// `pad`); every input is read once into the line buffer; where a window is complete, reduce(win, c)
// gives the output of channel c. Inlined into the kernel that calls it.
template <class C, class Reduce>
void pool_windows(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out, const Reduce& reduce,
                  const typename C::in_t pad) {
    QFX_PRAGMA(HLS INLINE)
    typedef typename C::in_t in_t;
    typedef pads_of<C> P;
    static const unsigned KH = C::pool_height, KW = C::pool_width, NC = C::n_chan;
    static const unsigned HP = C::in_height + P::top + P::bottom, WP = C::in_width + P::left + P::right;
    in_t lb[line_rows<KH>::value][WP][NC];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=lb complete dim=1)
    in_t win[KH][KW][NC];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=win complete dim=0)
QFX_LABEL(rows)
    for (unsigned py = 0; py < HP; py++) {
    QFX_LABEL(cols)
        for (unsigned px = 0; px < WP; px++) {
            const bool inside = in_span(py, P::top, C::in_height) && in_span(px, P::left, C::in_width);
        QFX_LABEL(chans)
            for (unsigned c = 0; c < NC; c++) {
                QFX_PRAGMA(HLS PIPELINE II=1)
                in_t v = pad;
                if (inside) v = in.read();
                window_push<in_t, WP, NC, KH, KW>(lb, win, px, c, v);
            }
            if (!window_ends_at(py, KH, C::stride_height, C::out_height) ||
                !window_ends_at(px, KW, C::stride_width, C::out_width))
                continue;
        QFX_LABEL(outs)
            for (unsigned c = 0; c < NC; c++) {
                QFX_PRAGMA(HLS PIPELINE II=1)
                out.write(reduce(win, c));
            }
        }
    }
}

// max over the window, no cast (out_t == in_t)
template <class C>
struct max_of_window {
    template <class W>
    typename C::out_t operator()(const W& win, unsigned c) const {
        typename C::in_t m = win[0][0][c];
        for (unsigned ky = 0; ky < C::pool_height; ky++)
            for (unsigned kx = 0; kx < C::pool_width; kx++)
                if (win[ky][kx][c] > m) m = win[ky][kx][c];
        return m;
    }
};

// cast(S * r, out_t): S the exact window sum in acc_t, r = cast(1/N, recip_t)
template <class C>
struct mean_of_window {
    typename C::recip_t r;
    template <class W>
    typename C::out_t operator()(const W& win, unsigned c) const {
        typename C::acc_t s = zero<typename C::acc_t>();
        for (unsigned ky = 0; ky < C::pool_height; ky++)
            for (unsigned kx = 0; kx < C::pool_width; kx++) s += win[ky][kx][c];  // exact sum
        return convert<typename C::out_t>(mul<C>(s, r));  // exact product (multiplier per mul_impl), the one cast
    }
};

template <class C>
void maxpool2d(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
    pool_windows<C>(in, out, max_of_window<C>(), lowest<typename C::in_t>());  // padding never wins
}

template <class C>
void avgpool2d(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
    mean_of_window<C> mean;
    mean.r = from_raw<typename C::recip_t>(C::recip_raw);  // cast(1/N, recip_t), computed by the compiler
    pool_windows<C>(in, out, mean, zero<typename C::in_t>());  // zero padding, divided by the whole window
}

template <class C>
void global_avgpool(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
    const typename C::recip_t r = from_raw<typename C::recip_t>(C::recip_raw);  // cast(1/N, recip_t)
    typename C::acc_t sum[C::n_chan];
QFX_LABEL(init)
    for (unsigned c = 0; c < C::n_chan; c++) sum[c] = zero<typename C::acc_t>();
QFX_LABEL(pixels)
    for (unsigned p = 0; p < C::in_height * C::in_width; p++) {
    QFX_LABEL(chans)
        for (unsigned c = 0; c < C::n_chan; c++) {
            QFX_PRAGMA(HLS PIPELINE II=1)
            sum[c] += in.read();  // exact sum
        }
    }
QFX_LABEL(outs)
    for (unsigned c = 0; c < C::n_chan; c++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const typename C::out_t y = convert<typename C::out_t>(mul<C>(sum[c], r));  // exact product, the one cast
        out.write(y);
    }
}

}  // namespace qfx

#endif
