// qfx_axis.h: AXI4-Stream words for the top-level ports and tensor <-> stream helpers.
// One element per word: data carries the raw mantissa (sign-extended for signed types).
#ifndef QFX_AXIS_H
#define QFX_AXIS_H

#include "qfx_types.h"

#if defined(__has_include)
#if __has_include(<ap_axi_sdata.h>)
#include <ap_axi_sdata.h>
#define QFX_HAVE_AP_AXI_SDATA 1
#endif
#endif

namespace qfx {

#ifdef QFX_HAVE_AP_AXI_SDATA
template <int W> using axis_word = ap_axiu<W, 0, 0, 0>;
#else
// Minimal side-channel word for C simulation without the Vitis headers.
template <int W> struct axis_word {
    ap_uint<W> data;
    ap_uint<W / 8> keep;
    ap_uint<W / 8> strb;
    ap_uint<1> last;
};
#endif

// Read N words; each data field holds a mantissa of T in its low bits.
template <class T, unsigned N, int W>
void axis_read(hls::stream<axis_word<W> >& src, hls::stream<T>& dst) {
    QFX_PRAGMA(HLS INLINE off)  // a DATAFLOW process of the top, like every layer
    static_assert(W % 8 == 0 && W >= fixed_traits<T>::width, "axis data width too small");
QFX_LABEL(elems)
    for (unsigned i = 0; i < N; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const axis_word<W> word = src.read();
        dst.write(from_raw<T>(word.data));
    }
}

// Write N words: data = the mantissa extended to W bits, all bytes valid, last on the final word.
template <class T, unsigned N, int W>
void axis_write(hls::stream<T>& src, hls::stream<axis_word<W> >& dst) {
    QFX_PRAGMA(HLS INLINE off)  // a DATAFLOW process of the top, like every layer
    static_assert(W % 8 == 0 && W >= fixed_traits<T>::width, "axis data width too small");
QFX_LABEL(elems)
    for (unsigned i = 0; i < N; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        axis_word<W> word;
        word = axis_word<W>();
        const ap_int<W + 1> m = raw_of(src.read());  // sign- or zero-extends
        word.data = m.range(W - 1, 0);
        word.keep = -1;
        word.strb = -1;
        word.last = (i == N - 1) ? 1 : 0;
        dst.write(word);
    }
}

}  // namespace qfx

#endif
