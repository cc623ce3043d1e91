// qfx_dsp_pack.h: two products sharing an operand in one DSP multiplier (Xilinx WP486).
//
// A DSP48E2 multiplies a 27-bit by an 18-bit signed operand (DSP48E1: 25 x 18); a pre-adder
// feeds the 27-bit port and an adder follows the product. Two products a*c and b*c that share c
// take one multiply:
//     p = (a * 2^S + b) * c + 2^(S-1) = a*c * 2^S + L,    L = b*c + 2^(S-1).
// If -2^(S-1) <= b*c < 2^(S-1), then 0 <= L < 2^S and, exactly,
//     a*c = floor(p / 2^S)             (p >> S: wiring)
//     b*c = (p mod 2^S) - 2^(S-1)      (p's low S bits with the top bit inverted, read as signed).
// The constant 2^(S-1) is WP486's sign correction moved before the split: instead of adding the
// low field's sign bit to the high field after the multiply, it is added with the product, which
// the DSP's post-adder can do (rounding constant / C port); then no carry chain is left in LUTs.
//
// Exact conditions, for every a, b of the weight type (W_w bits) and c of the input type (W_x bits)
// (dsp_pack_rule below; the compiler's estimate.dsp_pack_rule is the same rule):
//   (1) S = the fewest signed bits holding every b*c    (then -2^(S-1) <= b*c < 2^(S-1));
//   (2) every a * 2^S + b fits PORT signed bits         (the pre-adder's output, the 27-bit port);
//   (3) every c fits 18 signed bits                     (the B port).
// p then fits PORT + 18 signed bits (a PORT-bit times an 18-bit signed number, plus 2^(S-1) <
// 2^(PORT+16)), within the DSP's 48-bit P. Products are unpacked per multiply and summed as
// ordinary products; nothing is accumulated packed. E.g. 8-bit signed weights and 8-bit inputs
// (signed or unsigned): S = 16, a * 2^16 + b within 25 bits: legal on DSP48E2 and DSP48E1.
//
// Storage as in qfx_mac.h: ap_int under synthesis (and with -DQFX_CSIM_AP_MANTISSAS), int64_t in
// the fast C simulation (the same packed arithmetic: |p| < 2^44).
#ifndef QFX_DSP_PACK_H
#define QFX_DSP_PACK_H

#include <stdint.h>
#include "qfx_types.h"
#include "qfx_mac.h"

namespace qfx {

// Mantissa range of a W-bit integer (W <= 62).
constexpr long long raw_lo(int w, bool s) { return s ? -(1LL << (w - 1)) : 0; }
constexpr long long raw_hi(int w, bool s) { return s ? (1LL << (w - 1)) - 1 : (1LL << w) - 1; }
constexpr long long min2(long long a, long long b) { return a < b ? a : b; }
constexpr long long max2(long long a, long long b) { return a > b ? a : b; }
// The fewest signed bits holding every value of [lo, hi].
constexpr int signed_bits_for(long long lo, long long hi) {
    int s = 1;
    while (lo < -(1LL << (s - 1)) || hi > (1LL << (s - 1)) - 1) s++;
    return s;
}

// The packing rule for weights of WW bits (SW: signed) and inputs of WX bits (SX), port PORT.
template <int WW, bool SW, int WX, bool SX, int PORT = 27>
struct dsp_pack_rule {
    static const bool small = WW <= 27 && WX <= 18;  // wider operands never fit (and would overflow below)
    static const long long w_lo = small ? raw_lo(WW, SW) : 0, w_hi = small ? raw_hi(WW, SW) : 0;
    static const long long x_lo = small ? raw_lo(WX, SX) : 0, x_hi = small ? raw_hi(WX, SX) : 0;
    static const long long p_lo = min2(min2(w_lo * x_lo, w_lo * x_hi), min2(w_hi * x_lo, w_hi * x_hi));
    static const long long p_hi = max2(max2(w_lo * x_lo, w_lo * x_hi), max2(w_hi * x_lo, w_hi * x_hi));
    static const int shift = signed_bits_for(p_lo, p_hi);                       // (1)
    static const bool fits_port = small && shift + WW <= 62 && w_lo * (1LL << shift) + w_lo >= -(1LL << (PORT - 1)) &&
                                  w_hi * (1LL << shift) + w_hi <= (1LL << (PORT - 1)) - 1;  // (2)
    static const bool fits_b = x_lo >= -(1LL << 17) && x_hi <= (1LL << 17) - 1;  // (3)
    static const bool legal = small && fits_port && fits_b;
    static const int port = PORT;
};

// (a*c, b*c) from one packed product; R is a dsp_pack_rule. ac and bc receive the exact products.
template <class R>
struct dsp_pack_mul {
    static const int S = R::shift;
    static const int PW = R::port + 18;  // the product's width
    static_assert(R::legal, "DSP packing: the weight and input widths break the conditions of qfx_dsp_pack.h "
                            "(the compiler packs only legal layers)");

    // Synthesis (and the ap_int C simulation): one PORT x 18 multiply with its pre-adder and post-adder.
    template <class A, class C, class O>
    static void apply(const A& a, const A& b, const C& c, O& ac, O& bc, bool_tag<false>) {
        QFX_PRAGMA(HLS INLINE)
        typedef ap_int<R::port> pk_t;
        const pk_t pk = pk_t(pk_t(a) << S) + pk_t(b);                          // pre-adder: a * 2^S + b (fits, (2))
        const ap_int<18> cb = c;                                               // B port (fits, (3))
        const ap_int<PW> m = mul_bound<1>::mul(pk, cb);                        // the one DSP multiply
        const ap_int<PW> p = m + ap_int<PW>(ap_int<PW>(1) << (S - 1));         // + 2^(S-1): post-adder
        const ap_int<PW - S> hi = p >> S;                                      // a*c, exact
        ap_uint<S> low = p(S - 1, 0);
        low[S - 1] = !low[S - 1];                                              // L - 2^(S-1) as S-bit two's complement
        const ap_int<S> lo = low;                                              // b*c, exact
        ac = hi;
        bc = lo;
    }
    // Fast C simulation: the same packed arithmetic on int64_t (|p| < 2^44).
    template <class O>
    static void apply(int64_t a, int64_t b, int64_t c, O& ac, O& bc, bool_tag<true>) {
        const int64_t p = (a * (int64_t(1) << S) + b) * c + (int64_t(1) << (S - 1));
        ac = (O)(p >> S);  // floor (arithmetic shift)
        bc = (O)((p & ((int64_t(1) << S) - 1)) - (int64_t(1) << (S - 1)));
    }
};

// The port width of config C's DSP (optional field `dsp_port`, default 27: DSP48E2; 25: DSP48E1).
template <class C, class = void> struct dsp_port_of { static const int value = 27; };
template <class C>
struct dsp_port_of<C, typename void_if_valid<decltype(C::dsp_port)>::type> {
    static const int value = C::dsp_port;
    static_assert(C::dsp_port == 25 || C::dsp_port == 27, "config field `dsp_port` must be 25 or 27");
};

// Two output rows' sums (lane 0: row 2q, lane 1: row 2q+1), summed lane by lane.
template <class S>
struct lane_pair {
    S a, b;
    lane_pair() : a(0), b(0) {}
    lane_pair(int z) : a(z), b(z) {}
    lane_pair& operator+=(const lane_pair& o) {
        a += o.a;
        b += o.b;
        return *this;
    }
};
template <class S> inline S lane_of(const lane_pair<S>& s, unsigned k) { return k ? s.b : s.a; }

// MAC policy of fold_mac (qfx_mac.h) for packed pairs: term `idx` of the [pair][input] grid multiplies
// the input by the weights w[2*idx] (row 2q) and w[2*idx + 1] (row 2q+1), weights flattened
// [ceil(rows/2)][n_in][2]; one DSP multiply gives both products.
struct mac_dsp_pack {
    static const unsigned lanes = 2;
    template <class C> struct sum { typedef lane_pair<typename mac_types<C>::sum_m> type; };
    template <class C> struct rule {
        typedef fixed_traits<typename C::w_t> Wt;
        typedef fixed_traits<typename C::in_t> X;
        typedef dsp_pack_rule<Wt::width, Wt::is_signed, X::width, X::is_signed, dsp_port_of<C>::value> type;
    };
    template <class C, class WA, class WB>
    static lane_pair<typename mac_types<C>::sum_m> term(const typename mac_types<C>::x_m& xm, const WA w[],
                                                        const WB ws[], unsigned idx) {
        QFX_PRAGMA(HLS INLINE)
        (void)ws;
        typedef mac_types<C> T;
        const typename T::w_m a = T::weight(w[2 * idx]), b = T::weight(w[2 * idx + 1]);  // low W_w bits
        lane_pair<typename T::sum_m> r;
        dsp_pack_mul<typename rule<C>::type>::apply(a, b, xm, r.a, r.b, bool_tag<T::native>());
        return r;
    }
};

}  // namespace qfx

#endif
