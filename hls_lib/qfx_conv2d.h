// qfx_conv2d.h: streaming 2-D convolution (zero padding, stride, groups: conv2d_grouped).
// out[oy][ox][f] = cast(b[f] + sum_{ky,kx,c} x_pad[oy*sh+ky][ox*sw+kx][c] * w[f][ky][kx][c], out_t):
// exact products and sums (acc_t's grid, see qfx_mac.h), one cast to out_t per output.
// Folding: the n_filt outputs of one pixel (kh*kw*n_chan*n_filt products) on
// ceil(products / reuse) multipliers.
#ifndef QFX_CONV2D_H
#define QFX_CONV2D_H

#include "qfx_types.h"
#include "qfx_mac.h"
#include "qfx_dsp_pack.h"
#include "qfx_window.h"

namespace qfx {

// Shared body: walks the padded image in HWC order; pads are zeros made here,
// real pixels are read from `in` exactly once; a window is complete at the
// last (row, column) of each output position. The line buffer and window hold
// input mantissas (converted once per input element, not once per product).
// G groups: filter f = g*(NF/G) + j reads the channels [g*NC/G, (g+1)*NC/G) of the window and
// weights wa[f*NI/G ...]; per window the groups run one after another on the same multipliers.
template <class C, class MAC, class WA, class WB, unsigned G = 1>
void conv2d_core(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out, const WA wa[],
                 const WB wb[], const typename C::b_raw_t b[C::n_filt]) {
    typedef mac_types<C> T;
    typedef mac_lanes<MAC, C> L;  // L::value outputs per row of MAC terms (2: DSP packing)
    typedef typename T::x_m x_m;
    static const unsigned HP = C::in_height + C::pad_top + C::pad_bottom;
    static const unsigned WP = C::in_width + C::pad_left + C::pad_right;
    static const unsigned KH = C::filt_height, KW = C::filt_width, NC = C::n_chan, NF = C::n_filt;
    static const unsigned CG = NC / G, NFG = NF / G;  // channels and filters of one group
    static const unsigned NI = KH * KW * CG;  // products per output
    static const unsigned NRG = (NFG + L::value - 1) / L::value;  // rows of MAC terms of one group
    static_assert(G >= 1 && NC % G == 0 && NF % G == 0, "groups must divide n_chan and n_filt");
    x_m lb[line_rows<KH>::value][WP][NC];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=lb complete dim=1)
    x_m win[KH][KW][NC];
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=win complete dim=0)
    typename T::acc_m bias[NF];  // bias on acc_t's grid, converted once per call
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=bias complete)
QFX_LABEL(bias_init)
    for (unsigned f = 0; f < NF; f++) bias[f] = bias_mantissa<C>(b[f]);
QFX_LABEL(rows)
    for (unsigned py = 0; py < HP; py++) {
    QFX_LABEL(cols)
        for (unsigned px = 0; px < WP; px++) {
            const bool inside = in_span(py, C::pad_top, C::in_height) && in_span(px, C::pad_left, C::in_width);
        QFX_LABEL(chans)
            for (unsigned c = 0; c < NC; c++) {
                QFX_PRAGMA(HLS PIPELINE II=1)
                x_m v = 0;  // zero padding
                if (inside) v = T::mantissa(in.read());
                window_push<x_m, WP, NC, KH, KW>(lb, win, px, c, v);
            }
            if (!window_ends_at(py, KH, C::stride_height, C::out_height) ||
                !window_ends_at(px, KW, C::stride_width, C::out_width))
                continue;
        QFX_LABEL(groups)
            for (unsigned g = 0; g < G; g++) {
                x_m x[NI];  // the group's window flattened [ky][kx][c] (wiring)
                QFX_PRAGMA(HLS ARRAY_PARTITION variable=x complete)
                typename L::sum_t sum[NRG];
                QFX_PRAGMA(HLS ARRAY_PARTITION variable=sum complete)
            QFX_LABEL(flatten)
                for (unsigned ky = 0; ky < KH; ky++) {
                    QFX_PRAGMA(HLS UNROLL)
                    for (unsigned kx = 0; kx < KW; kx++) {
                        QFX_PRAGMA(HLS UNROLL)
                        for (unsigned c = 0; c < CG; c++) {
                            QFX_PRAGMA(HLS UNROLL)
                            x[(ky * KW + kx) * CG + c] = win[ky][kx][g * CG + c];
                        }
                    }
                }
                fold_mac<C, MAC, NI, NRG>(x, sum, wa + g * NRG * L::value * NI, wb + g * NRG * L::value * NI);
            QFX_LABEL(filters)
                for (unsigned j = 0; j < NFG; j++) {
                    QFX_PRAGMA(HLS PIPELINE II=1)
                    out.write(acc_to_out<C>(bias[g * NFG + j], lane_of(sum[j / L::value], j % L::value)));  // + bias, the one cast
                }
            }
        }
    }
}

// w: mantissas of w_t, flattened [n_filt][filt_height][filt_width][n_chan].
template <class C>
void conv2d(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
            const typename C::w_raw_t w[C::n_filt * C::filt_height * C::filt_width * C::n_chan],
            const typename C::b_raw_t b[C::n_filt]) {
    QFX_PRAGMA(HLS INLINE off)
    static const unsigned M =
        fold_shape<C::n_filt * C::filt_height * C::filt_width * C::n_chan, reuse_of<C>::value>::mults;
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=w cyclic factor=M)  // multiplier m reads w[r*M + m]
    (void)M;
    conv2d_core<C, mac_multiply>(in, out, w, w, b);
}

// Grouped / depthwise convolution, C::n_groups groups (depthwise: n_groups = n_chan): filter f reads the
// n_chan / n_groups input channels of its group f / (n_filt / n_groups). w: mantissas of w_t, flattened
// [n_filt][filt_height][filt_width][n_chan / n_groups]. Folding: the n_filt / n_groups outputs of one
// group (their kh*kw*n_chan/n_groups products each) on ceil(products / reuse) multipliers, the groups
// of a pixel one after another.
template <class C>
void conv2d_grouped(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                    const typename C::w_raw_t w[C::n_filt * C::filt_height * C::filt_width * C::n_chan / C::n_groups],
                    const typename C::b_raw_t b[C::n_filt]) {
    QFX_PRAGMA(HLS INLINE off)
    static const unsigned M = fold_shape<C::n_filt / C::n_groups * C::filt_height * C::filt_width * C::n_chan /
                                         C::n_groups, reuse_of<C>::value>::mults;
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=w cyclic factor=M)  // multiplier m reads w[g*P + r*M + m]
    (void)M;
    conv2d_core<C, mac_multiply, typename C::w_raw_t, typename C::w_raw_t, C::n_groups>(in, out, w, w, b);
}

// DSP packing (qfx_dsp_pack.h): filters 2q and 2q+1 (of one group) share each window value's DSP multiply.
// w: mantissas of w_t in filter pairs per group, flattened [n_groups][ceil(F/2)][kh*kw*n_chan/n_groups][2],
// F = n_filt / n_groups (a zero filter completes an odd F). conv2d_packed: n_groups = 1 (no field needed).
// Folding: the packed products of one group, ceil(F/2)*kh*kw*n_chan/n_groups, on ceil(that / reuse) DSPs.
template <class C, class = void> struct groups_of { static const unsigned value = 1; };
template <class C> struct groups_of<C, typename void_if_valid<decltype(C::n_groups)>::type> {
    static const unsigned value = C::n_groups;
};
template <class C>
void conv2d_packed(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
                   const typename C::w_raw_t w[groups_of<C>::value * ((C::n_filt / groups_of<C>::value + 1) / 2) *
                                               C::filt_height * C::filt_width * C::n_chan / groups_of<C>::value * 2],
                   const typename C::b_raw_t b[C::n_filt]) {
    QFX_PRAGMA(HLS INLINE off)
    static const unsigned G = groups_of<C>::value;
    static const unsigned M2 = 2 * fold_shape<(C::n_filt / G + 1) / 2 * C::filt_height * C::filt_width * C::n_chan / G,
                                              reuse_of<C>::value>::mults;
    QFX_PRAGMA(HLS ARRAY_PARTITION variable=w cyclic factor=M2)  // packed multiplier m reads w[g*P + 2(r*M + m) + k]
    (void)M2;
    conv2d_core<C, mac_dsp_pack, typename C::w_raw_t, typename C::w_raw_t, G>(in, out, w, w, b);
}

}  // namespace qfx

#endif
