// qfx_softmax.h: softmax over one vector, exactly as docs/semantics.md states:
//   d_i = x_i - max x (mantissas, <= 0), e_i = E[d_i + span] (span = 2^W - 1, E the exp table the
//   compiler computed exactly: qfx_compile/fixed/tables.py), S = sum e_i (exact), and
//   y_i = cast(e_i / S, out_t): the exact quotient rounded once. The division is done on integers:
//   q = floor(e_i * 2^k / S), sticky = (remainder != 0), and the mantissa 2q + sticky at k + 1
//   fractional bits (k = div_shift >= F_out + 1) rounds under out_t's mode exactly like e_i / S.
#ifndef QFX_SOFTMAX_H
#define QFX_SOFTMAX_H

#include "qfx_types.h"
#include "qfx_table.h"

namespace qfx {

// C: in_t, exp_t, sum_t (holds the exact sum), out_t, exp_raw_t (plain integer type of the entries);
// n (vector length), entries (= 2^W of in_t), div_shift (k), num_bits (width of e * 2^k).
template <class C>
void softmax(hls::stream<typename C::in_t>& in, hls::stream<typename C::out_t>& out,
             const typename C::exp_raw_t exp_table[C::entries]) {
    QFX_PRAGMA(HLS INLINE off)
    typedef typename C::in_t in_t;
    static const int W = fixed_traits<in_t>::width;
    static const int EW = fixed_traits<typename C::exp_t>::width;
    static const int SW = fixed_traits<typename C::sum_t>::width;
    static const int K = C::div_shift;
    static_assert(C::entries == (1u << W), "the exp table has one entry per mantissa difference");
    static_assert(fixed_traits<typename C::exp_t>::frac_bits == fixed_traits<typename C::sum_t>::frac_bits,
                  "the sum is kept at the exp table's binary point");
    static_assert(C::num_bits == EW + K && C::num_bits <= 64, "e * 2^k must fit num_bits <= 64 bits");
    typedef ap_ufixed<K + 2, 1> quot_t;  // 2q + sticky at k + 1 fractional bits (q <= 2^k since e <= S)

    in_t buf[C::n];
    ap_uint<EW> e[C::n];
    in_t mx = zero<in_t>();  // set by the first read
QFX_LABEL(read)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const in_t x = in.read();
        buf[i] = x;
        if (i == 0 || x > mx) mx = x;
    }
    ap_uint<SW> s = 0;  // the exact sum of the exp mantissas
QFX_LABEL(exps)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        const ap_int<W + 1> d = ap_int<W + 1>(raw_of(mx)) - ap_int<W + 1>(raw_of(buf[i]));  // 0 .. 2^W - 1
        const ap_uint<W> idx = ap_uint<W>(C::entries - 1) - ap_uint<W>(d);
        const ap_uint<EW> v = exp_table[idx];
        e[i] = v;
        s += v;
    }
QFX_LABEL(divide)
    for (unsigned i = 0; i < C::n; i++) {
        QFX_PRAGMA(HLS PIPELINE II=1)
        ap_uint<C::num_bits> num = e[i];
        num <<= K;
        const ap_uint<C::num_bits> q = num / s;
        const ap_uint<C::num_bits> r = num - q * s;
        ap_uint<K + 2> m = q;
        m <<= 1;
        m[0] = (r != 0);
        out.write(convert<typename C::out_t>(from_raw<quot_t>(m)));  // the one cast
    }
}

}  // namespace qfx

#endif
