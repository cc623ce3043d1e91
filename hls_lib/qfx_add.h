// qfx_add.h: residual addition, out = cast(a + b, out_t); a + b is exact.
#ifndef QFX_ADD_H
#define QFX_ADD_H

#include "qfx_types.h"

namespace qfx {

#ifdef QFX_NATIVE_MANTISSAS
// C simulation: a + b on int64_t mantissas aligned to the finer grid (exact: below 2^62), then the two
// casts the ap_fixed expression performs (the assignment to acc_t, then to out_t) by native_cast.
template <class C>
struct add_native {
    typedef fixed_traits<typename C::in_a_t> TA;
    typedef fixed_traits<typename C::in_b_t> TB;
    static const int f = TA::frac_bits > TB::frac_bits ? TA::frac_bits : TB::frac_bits;
    static const int la = f - TA::frac_bits, lb = f - TB::frac_bits;
    static const int ba = signed_width<typename C::in_a_t>::value + la, bb = signed_width<typename C::in_b_t>::value + lb;
    static const int b = (ba > bb ? ba : bb) + 1;
    typedef native_cast<typename C::acc_t, f, b> to_acc;
    typedef native_cast<typename C::out_t, fixed_traits<typename C::acc_t>::frac_bits,
                        signed_width<typename C::acc_t>::value> to_out;
    static const bool ok = b <= 62 && TA::width <= 62 && TB::width <= 62 && to_acc::ok && to_out::ok;
    static typename C::out_t apply(const typename C::in_a_t& x, const typename C::in_b_t& y) {
        const int64_t v = (int64_t)((uint64_t)mant64(x) << la) + (int64_t)((uint64_t)mant64(y) << lb);
        return to_out::to(to_acc::apply(v));
    }
};
#endif

template <class C>
void add(hls::stream<typename C::in_a_t>& a, hls::stream<typename C::in_b_t>& b,
         hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(elems)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const typename C::in_a_t x = a.read();
        const typename C::in_b_t y = b.read();
#ifdef QFX_NATIVE_MANTISSAS
        if (add_native<C>::ok) {  // C simulation: the same arithmetic on int64_t mantissas
            out.write(add_native<C>::apply(x, y));
            continue;
        }
#endif
        const typename C::acc_t s = x + y;  // exact: acc_t holds every sum (ir.passes.accumulators)
        const typename C::out_t z = convert<typename C::out_t>(s);  // the one cast
        out.write(z);
    }
}

}  // namespace qfx

#endif
