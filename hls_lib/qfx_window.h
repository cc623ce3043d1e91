// qfx_window.h: line buffer + sliding window for streaming 2-D kernels.
// Pixels arrive in HWC order over the (padded) image; the window holds the
// last KH rows x KW columns x C channels, so every input is read exactly once.
#ifndef QFX_WINDOW_H
#define QFX_WINDOW_H

#include "qfx_types.h"

namespace qfx {

// True when position p (0-based, along one axis of the padded image) is the
// last row/column of a window: p = k - 1 + o * s for an output index o < n_out.
inline bool window_ends_at(unsigned p, unsigned k, unsigned s, unsigned n_out) {
    if (p + 1 < k) return false;
    const unsigned d = p + 1 - k;
    return d % s == 0 && d / s < n_out;
}

// p - lo < n with unsigned wrap-around: lo <= p < lo + n (a pad test).
inline bool in_span(unsigned p, unsigned lo, unsigned n) { return p - lo < n; }

// Padding of a windowed kernel: C::pad_top/left/bottom/right when the config has them, else 0.
// The one padding rule (qfx_compile/fixed/window.py): the image is padded by (top, bottom) rows and
// (left, right) columns, windows run over the padded image in floor mode.
template <class C, class = void> struct pads_of {
    static const unsigned top = 0, left = 0, bottom = 0, right = 0;
};
template <class C>
struct pads_of<C, typename void_if_valid<decltype(C::pad_top)>::type> {
    static const unsigned top = C::pad_top, left = C::pad_left, bottom = C::pad_bottom, right = C::pad_right;
};

// The lowest value of an ap_fixed / ap_ufixed type (the padding of max pooling: it never wins).
template <class T>
inline T lowest() {
    T x = zero<T>();
    if (fixed_traits<T>::is_signed) x.range(fixed_traits<T>::width - 1, fixed_traits<T>::width - 1) = 1;
    return x;
}

// Rows kept by the line buffer: KH - 1 (at least 1: no zero-size arrays).
template <unsigned KH> struct line_rows { static const unsigned value = KH > 1 ? KH - 1 : 1; };

// The kernels own two plain arrays (so the partition pragmas sit next to them):
//   T lb[line_rows<KH>::value][WP][C];  the last KH-1 rows, oldest first
//   T win[KH][KW][C];                   the window, ky = 0 the oldest row
// window_push shifts value v of channel c at padded column px into both.
template <class T, unsigned WP, unsigned C, unsigned KH, unsigned KW>
void window_push(T lb[line_rows<KH>::value][WP][C], T win[KH][KW][C], unsigned px, unsigned c, const T& v) {
    QFX_PRAGMA(HLS INLINE)
QFX_LABEL(shift_cols)
    for (unsigned ky = 0; ky < KH; ky++) {
        QFX_PRAGMA(HLS UNROLL)
        for (unsigned kx = 0; kx + 1 < KW; kx++) {
            QFX_PRAGMA(HLS UNROLL)
            win[ky][kx][c] = win[ky][kx + 1][c];
        }
    }
QFX_LABEL(new_col)
    for (unsigned ky = 0; ky + 1 < KH; ky++) {
        QFX_PRAGMA(HLS UNROLL)
        win[ky][KW - 1][c] = lb[ky][px][c];
    }
    win[KH - 1][KW - 1][c] = v;
QFX_LABEL(shift_rows)
    for (unsigned ky = 0; ky + 2 < KH; ky++) {
        QFX_PRAGMA(HLS UNROLL)
        lb[ky][px][c] = lb[ky + 1][px][c];
    }
    if (KH > 1) lb[line_rows<KH>::value - 1][px][c] = v;
}

}  // namespace qfx

#endif
