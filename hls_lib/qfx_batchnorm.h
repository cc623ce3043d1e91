// qfx_batchnorm.h: folded BatchNorm, out = cast(x * scale[c] + shift[c], out_t).
// x * scale and the + shift are exact (ap_fixed full-precision results); the
// assignment to out_t is the only rounding/overflow.
#ifndef QFX_BATCHNORM_H
#define QFX_BATCHNORM_H

#include "qfx_types.h"

namespace qfx {

// scale/shift: mantissas of scale_t / shift_t, one per channel (HWC: c innermost).
template <class C>
void batchnorm(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
               const typename C::scale_raw_t scale[C::n_chan], const typename C::shift_raw_t shift[C::n_chan]) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(pixels)
    for (unsigned p = 0; p < C::n_pixels; p++) {
    QFX_LABEL(chans)
        for (unsigned c = 0; c < C::n_chan; c++) {
            QFX_PRAGMA(HLS PIPELINE II=1)
            const typename C::in_t x = in.read();
            const typename C::scale_t s = from_raw<typename C::scale_t>(scale[c]);
            const typename C::shift_t h = from_raw<typename C::shift_t>(shift[c]);
            // exact (multiplier per mul_impl): acc_t holds every x * s + h (ir.passes.accumulators)
            const typename C::acc_t a = mul<C>(x, s) + h;
            const typename C::out_t y = convert<typename C::out_t>(a);  // the one cast
            out.write(y);
        }
    }
}

}  // namespace qfx

#endif
