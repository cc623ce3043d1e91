// qfx_pad.h: zero padding of a feature map (nn.ZeroPad2d / ONNX Pad, constant 0), no arithmetic.
// out is the (pad_top + in_height + pad_bottom) x (pad_left + in_width + pad_right) map, HWC order,
// with in at (pad_top, pad_left) and zeros around (the padding rule of qfx_compile/fixed/window.py).
#ifndef QFX_PAD_H
#define QFX_PAD_H

#include "qfx_types.h"
#include "qfx_window.h"

namespace qfx {

template <class C>
void zeropad2d(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
    static const unsigned HP = C::in_height + C::pad_top + C::pad_bottom;
    static const unsigned WP = C::in_width + C::pad_left + C::pad_right;
QFX_LABEL(rows)
    for (unsigned py = 0; py < HP; py++) {
    QFX_LABEL(cols)
        for (unsigned px = 0; px < WP; px++) {
            const bool inside = in_span(py, C::pad_top, C::in_height) && in_span(px, C::pad_left, C::in_width);
        QFX_LABEL(chans)
            for (unsigned c = 0; c < C::n_chan; c++) {
                QFX_PRAGMA(HLS PIPELINE II=1)
                typename C::out_t v = zero<typename C::out_t>();
                if (inside) v = in.read();
                out.write(v);
            }
        }
    }
}

}  // namespace qfx

#endif
