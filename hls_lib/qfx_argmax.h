// qfx_argmax.h: out = the index of the first largest of n values (docs/semantics.md, argmax).
// Comparisons of values of one type only; a strict > keeps the first index on ties.
#ifndef QFX_ARGMAX_H
#define QFX_ARGMAX_H

#include "qfx_types.h"

namespace qfx {

template <class C>
void argmax(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out) {
    QFX_PRAGMA(HLS INLINE off)
    typename C::in_t best = in.read();
    unsigned best_i = 0;
QFX_LABEL(elems)
    for (unsigned i = 1; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const typename C::in_t x = in.read();
        if (x > best) {
            best = x;
            best_i = i;
        }
    }
    out.write(from_raw<typename C::out_t>(best_i));
}

}  // namespace qfx

#endif
