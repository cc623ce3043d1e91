// qfx_leaky_relu.h: LeakyReLU of a wide input, out = cast(x >= 0 ? x : x * a, out_t): the exact
// product (full-precision ap_fixed), one cast. Narrow inputs (<= 16 bits) use a table instead
// (qfx_table.h), which holds the same values.
#ifndef QFX_LEAKY_RELU_H
#define QFX_LEAKY_RELU_H

#include "qfx_types.h"

namespace qfx {

// C: in_t, slope_t, out_t, n, slope_raw (the mantissa of a in slope_t); optional mul_impl.
template <class C>
void leaky_relu(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
    const typename C::slope_t a = from_raw<typename C::slope_t>((long long)C::slope_raw);
QFX_LABEL(elems)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const typename C::in_t x = in.read();
        typename C::out_t y;
        if (x < 0) {
            y = convert<typename C::out_t>(mul<C>(x, a));  // exact product, the one cast
        } else {
            y = convert<typename C::out_t>(x);
        }
        out.write(y);
    }
}

}  // namespace qfx

#endif
