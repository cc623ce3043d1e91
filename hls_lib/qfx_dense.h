// qfx_dense.h: fully connected layer.
// out[j] = cast(b[j] + sum_i x[i] * w[j][i], out_t): exact products and sums
// (acc_t's grid, see qfx_mac.h), the one rounding/overflow is the final cast to out_t.
// Folding: n_in * n_out products on ceil(n_in * n_out / reuse) multipliers.
#ifndef QFX_DENSE_H
#define QFX_DENSE_H

#include "qfx_types.h"
#include "qfx_mac.h"
#include "qfx_dsp_pack.h"

namespace qfx {

// Shared body: MAC computes x * w[j][i] (weights given by the arrays wa, wb).
template <class C, class MAC, class WA, class WB>
void dense_core(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out, const WA wa[],
                const WB wb[], const typename C::b_raw_t b[C::n_out]) {
    typedef mac_types<C> T;
    typedef mac_lanes<MAC, C> L;  // L::value outputs per row of MAC terms (2: DSP packing)
    static const unsigned NR = (C::n_out + L::value - 1) / L::value;
    typename T::x_m x[C::n_in];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=x complete)
    typename L::sum_t sum[NR];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=sum complete)
QFX_LABEL(read)
    for (unsigned i = 0; i < C::n_in; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        x[i] = T::mantissa(in.read());
    }
    fold_mac<C, MAC, C::n_in, NR>(x, sum, wa, wb);
QFX_LABEL(write)
    for (unsigned j = 0; j < C::n_out; j++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        out.write(acc_to_out<C>(bias_mantissa<C>(b[j]), lane_of(sum[j / L::value], j % L::value)));  // + bias, the one cast
    }
}

// w: mantissas of w_t, flattened [n_out][n_in]; b: mantissas of b_t.
template <class C>
void dense(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
           const typename C::w_raw_t w[C::n_out * C::n_in], const typename C::b_raw_t b[C::n_out]) {
    QFX_PRAGMA(HLS INLINE off)
    static const unsigned M = fold_shape<C::n_in * C::n_out, reuse_of<C>::value>::mults;
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=w cyclic factor=M)  // multiplier m reads w[r*M + m]
    (void)M;
    dense_core<C, mac_multiply>(in, out, w, w, b);
}

// DSP packing (qfx_dsp_pack.h): output rows 2q and 2q+1 share each input's DSP multiply. w: mantissas of
// w_t in row pairs, flattened [ceil(n_out/2)][n_in][2] (w[(q*n_in + i)*2 + k] = w[2q+k][i]; a zero row
// completes an odd n_out). Folding: n_in * ceil(n_out/2) packed products on ceil(that / reuse) DSPs.
template <class C>
void dense_packed(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                  const typename C::w_raw_t w[(C::n_out + 1) / 2 * C::n_in * 2], const typename C::b_raw_t b[C::n_out]) {
    QFX_PRAGMA(HLS INLINE off)
    static const unsigned M2 = 2 * fold_shape<C::n_in * ((C::n_out + 1) / 2), reuse_of<C>::value>::mults;
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=w cyclic factor=M2)  // packed multiplier m reads w[2(r*M + m) + k]
    (void)M2;
    dense_core<C, mac_dsp_pack>(in, out, w, w, b);
}

}  // namespace qfx

#endif
