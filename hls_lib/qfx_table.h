// qfx_table.h: table-based activations (sigmoid, tanh, hardsigmoid, hardswish, leaky_relu).
// out = T[code(x)]: the table holds, for every code of in_t, the mantissa of cast(f(x), out_t),
// computed exactly by the compiler (qfx_compile/fixed/tables.py) and shipped as constants; no
// arithmetic happens here, so the C simulation is bit-exact by construction.
#ifndef QFX_TABLE_H
#define QFX_TABLE_H

#include "qfx_types.h"

namespace qfx {

// The table index of x: its mantissa minus in_t's smallest mantissa, i.e. the W bits of x read
// as unsigned, with the sign bit flipped for a signed type (0 .. 2^W - 1).
template <class T>
inline ap_uint<fixed_traits<T>::width> table_index(const T& x) {
    QFX_PRAGMA(HLS INLINE)
    static const int W = fixed_traits<T>::width;
    ap_uint<W> bits = x.range(W - 1, 0);
    if (fixed_traits<T>::is_signed) bits[W - 1] = !bits[W - 1];
    return bits;
}

// C: in_t, out_t, table_raw_t (plain integer type of the entries), n (elements), entries (= 2^W).
template <class C>
void table_lookup(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                  const typename C::table_raw_t table[C::entries]) {
    QFX_PRAGMA(HLS INLINE off)
    static_assert(C::entries == (1u << fixed_traits<typename C::in_t>::width),
                  "a table has one entry per code of in_t");
QFX_LABEL(elems)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const typename C::in_t x = in.read();
        out.write(from_raw<typename C::out_t>(table[table_index(x)]));
    }
}

}  // namespace qfx

#endif
