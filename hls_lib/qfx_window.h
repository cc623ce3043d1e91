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

template <class T, unsigned WP, unsigned C, unsigned KH, unsigned KW>
struct line_window {
    static const unsigned LB_ROWS = KH > 1 ? KH - 1 : 1;  // no zero-size arrays
    T lb[LB_ROWS][WP][C];  // the last KH-1 rows, oldest first, lb[row][x][c]
    T win[KH][KW][C];      // win[ky][kx][c]: ky = 0 is the oldest row

    line_window() {
        QFX_HLS(ARRAY_PARTITION variable=lb complete dim=1)
        QFX_HLS(ARRAY_PARTITION variable=win complete dim=0)
    }

    // Push value v of channel c at padded column px of the current row.
    void push(unsigned px, unsigned c, const T& v) {
        QFX_HLS(INLINE)
    QFX_LABEL(shift_cols)
        for (unsigned ky = 0; ky < KH; ky++) {
            QFX_HLS(UNROLL)
            for (unsigned kx = 0; kx + 1 < KW; kx++) {
                QFX_HLS(UNROLL)
                win[ky][kx][c] = win[ky][kx + 1][c];
            }
        }
    QFX_LABEL(new_col)
        for (unsigned ky = 0; ky + 1 < KH; ky++) {
            QFX_HLS(UNROLL)
            win[ky][KW - 1][c] = lb[ky][px][c];
        }
        win[KH - 1][KW - 1][c] = v;
    QFX_LABEL(shift_rows)
        for (unsigned ky = 0; ky + 2 < KH; ky++) {
            QFX_HLS(UNROLL)
            lb[ky][px][c] = lb[ky + 1][px][c];
        }
        if (KH > 1) lb[LB_ROWS - 1][px][c] = v;
    }
};

}  // namespace qfx

#endif
