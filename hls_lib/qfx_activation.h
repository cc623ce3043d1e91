// qfx_activation.h: ReLU and Clip. No cast: out_t is in_t, values pass unchanged
// or are replaced by a bound that is already on in_t's grid.
#ifndef QFX_ACTIVATION_H
#define QFX_ACTIVATION_H

#include "qfx_types.h"

namespace qfx {

// out = max(x, 0)
template <class C>
void relu(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(elems)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        typename C::in_t x = in.read();
#ifdef QFX_NATIVE_MANTISSAS
        if (fixed_traits<typename C::in_t>::width <= 63) {  // C simulation: the sign of the mantissa
            out.write(mant64(x) < 0 ? zero<typename C::in_t>() : x);
            continue;
        }
#endif
        if (x < 0) x = zero<typename C::in_t>();  // (a zero from an int may read beyond the MSB)
        out.write(x);
    }
}

// out = min(max(x, lo), hi); lo_raw / hi_raw are mantissas of in_t.
template <class C>
void clip(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
    const typename C::in_t lo = from_raw<typename C::in_t>((long long)C::lo_raw);
    const typename C::in_t hi = from_raw<typename C::in_t>((long long)C::hi_raw);
QFX_LABEL(elems)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        typename C::in_t x = in.read();
        if (x < lo) x = lo;
        if (x > hi) x = hi;
        out.write(x);
    }
}

}  // namespace qfx

#endif
