// qfx_batchnorm.h: folded BatchNorm, out = cast(x * scale[c] + shift[c], out_t).
// x * scale and the + shift are exact (ap_fixed full-precision results); the
// assignment to out_t is the only rounding/overflow.
#ifndef QFX_BATCHNORM_H
#define QFX_BATCHNORM_H

#include "qfx_types.h"

namespace qfx {

#ifdef QFX_NATIVE_MANTISSAS
// C simulation: x * s + h on int64_t mantissas (exact: every term below 2^62), then the two casts the
// ap_fixed expression performs (the assignment to acc_t, then to out_t) by native_cast.
template <class C>
struct batchnorm_native {
    typedef fixed_traits<typename C::in_t> X;
    typedef fixed_traits<typename C::scale_t> S;
    typedef fixed_traits<typename C::shift_t> H;
    typedef fixed_traits<typename C::acc_t> A;
    static const int fp = X::frac_bits + S::frac_bits;               // grid of x * s
    static const int f = fp > H::frac_bits ? fp : H::frac_bits;     // grid of the sum
    static const int lp = f - fp, lh = f - H::frac_bits;            // left shifts onto it
    static const int bp = signed_width<typename C::in_t>::value + signed_width<typename C::scale_t>::value + lp;
    static const int bh = signed_width<typename C::shift_t>::value + lh;
    static const int b = (bp > bh ? bp : bh) + 1;
    typedef native_cast<typename C::acc_t, f, b> to_acc;
    typedef native_cast<typename C::out_t, A::frac_bits, signed_width<typename C::acc_t>::value> to_out;
    static const bool ok = b <= 62 && X::width <= 62 && S::width <= 62 && H::width <= 62 && to_acc::ok && to_out::ok;
    template <class RS, class RH>
    static typename C::out_t apply(const typename C::in_t& x, RS scale, RH shift) {
        const int64_t sm = raw_mant64<typename C::scale_t>(scale), hm = raw_mant64<typename C::shift_t>(shift);
        const int64_t v = (int64_t)((uint64_t)(mant64(x) * sm) << lp) + (int64_t)((uint64_t)hm << lh);
        return to_out::to(to_acc::apply(v));
    }
};
#endif

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
#ifdef QFX_NATIVE_MANTISSAS
            if (batchnorm_native<C>::ok) {  // C simulation: the same arithmetic on int64_t mantissas
                out.write(batchnorm_native<C>::apply(x, scale[c], shift[c]));
                continue;
            }
#endif
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
