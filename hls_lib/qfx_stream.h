// qfx_stream.h: stream plumbing. fanout2 copies one stream into two (a tensor
// read by two consumers, e.g. the identity branch of a residual block). A
// dataflow stream has one reader, so the copy is an explicit process.
#ifndef QFX_STREAM_H
#define QFX_STREAM_H

#include "qfx_types.h"

namespace qfx {

// Reads N elements of `in` once, writes each to `out_a` and to `out_b` (no arithmetic).
template <class T, unsigned N>
void fanout2(hls::stream<T>& in, hls::stream<T>& out_a, hls::stream<T>& out_b) {
    QFX_PRAGMA(HLS INLINE off)
QFX_LABEL(elems)
    for (unsigned i = 0; i < N; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const T v = in.read();
        out_a.write(v);
        out_b.write(v);
    }
}

}  // namespace qfx

#endif
