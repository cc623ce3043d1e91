// qfx_dense.h: fully connected layer.
// out[j] = cast(b[j] + sum_i x[i] * w[j][i], out_t): exact products and sums in
// acc_t, the one rounding/overflow is the final assignment to out_t.
#ifndef QFX_DENSE_H
#define QFX_DENSE_H

#include "qfx_types.h"
#include "qfx_mac.h"

namespace qfx {

// Shared body: MAC adds x * w[j][i] (weights given by the arrays wa, wb).
template <class C, class MAC, class WA, class WB>
void dense_core(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out, const WA wa[],
                const WB wb[], const typename C::b_raw_t b[C::n_out]) {
    typename C::in_t x[C::n_in];
    QFX_HLS(ARRAY_PARTITION variable=x complete)
QFX_LABEL(read)
    for (unsigned i = 0; i < C::n_in; i++) {
        QFX_HLS(PIPELINE II=1)
        x[i] = in.read();
    }
QFX_LABEL(outputs)
    for (unsigned j = 0; j < C::n_out; j++) {
        QFX_HLS(PIPELINE II=1)
        typename C::acc_t acc = from_raw<typename C::b_t>(b[j]);  // exact: acc_t holds b_t
    QFX_LABEL(products)
        for (unsigned i = 0; i < C::n_in; i++) {
            QFX_HLS(UNROLL)
            MAC::template mac<C>(acc, x[i], wa, wb, j * C::n_in + i);
        }
        const typename C::out_t y = acc;  // the one cast: out_t's rounding and overflow
        out.write(y);
    }
}

// w: mantissas of w_t, flattened [n_out][n_in]; b: mantissas of b_t.
template <class C>
void dense(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
           const typename C::w_raw_t w[C::n_out * C::n_in], const typename C::b_raw_t b[C::n_out]) {
    QFX_HLS(INLINE off)
    dense_core<C, mac_multiply>(in, out, w, w, b);
}

}  // namespace qfx

#endif
