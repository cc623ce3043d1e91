// qfx_add.h: residual addition, out = cast(a + b, out_t); a + b is exact.
#ifndef QFX_ADD_H
#define QFX_ADD_H

#include "qfx_types.h"

namespace qfx {

template <class C>
void add(hls::stream<typename C::in_a_t>& a, hls::stream<typename C::in_b_t>& b,
         hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(elems)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const typename C::in_a_t x = a.read();
        const typename C::in_b_t y = b.read();
        const typename C::acc_t s = x + y;  // exact: acc_t holds every sum (ir.passes.accumulators)
        const typename C::out_t z = convert<typename C::out_t>(s);  // the one cast
        out.write(z);
    }
}

}  // namespace qfx

#endif
