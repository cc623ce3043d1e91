// qfx_cast.h: the Quant op, out = cast(x, out_t) (out_t's rounding, then overflow).
#ifndef QFX_CAST_H
#define QFX_CAST_H

#include "qfx_types.h"

namespace qfx {

template <class C>
void cast(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(elems)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const typename C::out_t y = convert<typename C::out_t>(in.read());  // the cast
        out.write(y);
    }
}

}  // namespace qfx

#endif
