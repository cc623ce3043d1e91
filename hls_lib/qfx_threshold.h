// qfx_threshold.h: multithreshold, out = base[c] + step[c] * #{k : x >= thr[c][k]} (docs/semantics.md).
// The exact form of an integer accumulator times a float scale (+ float BatchNorm / bias) then a
// quantizer: a monotone step function of x per channel. Comparisons only: no arithmetic rounds.
#ifndef QFX_THRESHOLD_H
#define QFX_THRESHOLD_H

#include "qfx_types.h"

namespace qfx {

// thr: mantissas of thr_t (the input's binary point, one more bit of range), n_thr per channel
// (one row for every channel when n_thr_chan == 1); base/step: output mantissas, one per channel.
template <class C>
void multithreshold(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                    const typename C::thr_raw_t thr[C::n_thr_chan * C::n_thr],
                    const typename C::base_raw_t base[C::n_chan], const typename C::step_raw_t step[C::n_chan]) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(pixels)
    for (unsigned p = 0; p < C::n_pixels; p++) {
    QFX_LABEL(chans)
        for (unsigned c = 0; c < C::n_chan; c++) {
            QFX_PRAGMA(HLS PIPELINE II=1)
            const typename C::in_t x = in.read();
            const unsigned row = (C::n_thr_chan == 1 ? 0 : c) * C::n_thr;
            ap_uint<32> count = 0;
        QFX_LABEL(levels)
            for (unsigned k = 0; k < C::n_thr; k++) {
                QFX_PRAGMA(HLS UNROLL)
                const typename C::thr_t t = from_raw<typename C::thr_t>(thr[row + k]);
                if (x >= t) count++;  // exact comparison of two ap_fixed values
            }
            const long long y = (long long)base[c] + (long long)step[c] * (long long)count;
            out.write(from_raw<typename C::out_t>(y));
        }
    }
}

}  // namespace qfx

#endif
