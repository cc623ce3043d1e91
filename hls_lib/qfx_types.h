// qfx_types.h: raw mantissa <-> ap_fixed helpers and the binary-point shift.
// A value of ap_[u]fixed<W, I> is mantissa * 2^-(W-I); these helpers move the
// mantissa in and out with .range() (bit copies, no rounding anywhere).
#ifndef QFX_TYPES_H
#define QFX_TYPES_H

#include <ap_fixed.h>
#include <ap_int.h>
#include <hls_stream.h>

// HLS pragmas and loop labels: active under Vitis HLS (a clang front end that
// defines __SYNTHESIS__), absent for g++ -- also when someone passes
// -D__SYNTHESIS__ to plain g++, which would warn about the unknown pragmas and
// the never-jumped-to labels under -Wall.
#if defined(__SYNTHESIS__) && !(defined(__GNUC__) && !defined(__clang__))
#define QFX_SYNTH_ACTIVE 1
#endif

// QFX_PRAGMA(HLS PIPELINE II=1) is exactly `#pragma HLS PIPELINE II=1`: the argument is
// stringified in this one macro, so no word of it is macro-expanded first (the AMD
// ap_common.h defines INLINE as `inline __attribute__((always_inline))` under
// __SYNTHESIS__, which a two-level stringify would paste into `HLS INLINE off`).
// Constants in pragmas are C++ constants (static const), resolved by Vitis HLS.
#ifdef QFX_SYNTH_ACTIVE
#define QFX_PRAGMA(x) _Pragma(#x)
#define QFX_LABEL(name) name:
#else
#define QFX_PRAGMA(x)
#define QFX_LABEL(name)  // loop labels name loops in HLS reports; g++ would warn "unused label"
#endif

namespace qfx {

// Width, integer bits and signedness of an ap_fixed / ap_ufixed type.
template <class T> struct fixed_traits;

template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct fixed_traits<ap_fixed<W, I, Q, O, N> > {
    static const int width = W;
    static const int int_bits = I;
    static const int frac_bits = W - I;
    static const bool is_signed = true;
    typedef ap_int<W> raw_t;  // the mantissa as an integer
    template <int S> struct shifted { typedef ap_fixed<W, I + S> type; };
};

template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct fixed_traits<ap_ufixed<W, I, Q, O, N> > {
    static const int width = W;
    static const int int_bits = I;
    static const int frac_bits = W - I;
    static const bool is_signed = false;
    typedef ap_uint<W> raw_t;
    template <int S> struct shifted { typedef ap_ufixed<W, I + S> type; };
};

// Set x to the value raw * 2^-F: the low W bits of raw become the mantissa.
template <class T, class R>
inline void set_raw(T& x, R raw) {
    ap_uint<fixed_traits<T>::width> bits = raw;  // two's complement low bits
    x.range(fixed_traits<T>::width - 1, 0) = bits;
}

template <class T, class R>
inline T from_raw(R raw) {
    T x;
    set_raw(x, raw);
    return x;
}

// Zero of an ap_[u]fixed type. Not `T x = 0`: an int assigned to a type whose LSB lies above its
// 32 bits trips the headers' "read bit beyond MSB" assertion in C simulation (ap_fixed<8, 70>).
template <class T>
inline T zero() {
    return from_raw<T>(0);
}

// The mantissa of x (ap_int<W> for signed types, ap_uint<W> for unsigned).
template <class T>
inline typename fixed_traits<T>::raw_t raw_of(const T& x) {
    typename fixed_traits<T>::raw_t r;
    r.range(fixed_traits<T>::width - 1, 0) = x.range(fixed_traits<T>::width - 1, 0);
    return r;
}

// x * 2^S, exact: the same mantissa read with the binary point moved by S
// (S may be negative). No hardware: the bits are only re-labelled.
template <int S, class T>
inline typename fixed_traits<T>::template shifted<S>::type shl(const T& x) {
    typename fixed_traits<T>::template shifted<S>::type y;
    y.range(fixed_traits<T>::width - 1, 0) = x.range(fixed_traits<T>::width - 1, 0);
    return y;
}

// ------------------------------------------------------------------ the one cast
// `OUT y = x;` for ap_[u]fixed x: OUT's rounding, then its overflow. Identical to the
// plain assignment, also where the Xilinx headers cannot do it: when x lies wholly below
// OUT's rounding bit (F_x - F_out >= W_x, e.g. ap_fixed<10,20> = ap_fixed<16,4>) their
// C simulation aborts ("Attempting to read bit beyond MSB"), so x is first widened
// (sign- or zero-extended, exact) to F_x - F_out + 2 bits. No extra hardware otherwise.
template <class T, int W> struct widened;
template <int W0, int I0, ap_q_mode Q, ap_o_mode O, int N, int W>
struct widened<ap_fixed<W0, I0, Q, O, N>, W> { typedef ap_fixed<W, I0 + W - W0> type; };
template <int W0, int I0, ap_q_mode Q, ap_o_mode O, int N, int W>
struct widened<ap_ufixed<W0, I0, Q, O, N>, W> { typedef ap_ufixed<W, I0 + W - W0> type; };

template <class OUT, class T>
inline OUT convert(const T& x) {
    QFX_PRAGMA(HLS INLINE)
    static const int drop = fixed_traits<T>::frac_bits - fixed_traits<OUT>::frac_bits;  // bits below OUT's LSB
    static const int w = fixed_traits<T>::width;
    typedef typename widened<T, (drop >= w ? drop + 2 : w)>::type wide_t;
    const wide_t xw = x;  // exact (same LSB, more integer bits)
    const OUT y = xw;     // OUT's rounding, then its overflow
    return y;
}

// ---------------------------------------------------------------- optional config fields
// Configs written before folding existed have no `reuse` / `mul_impl`: they
// default to reuse = 1 (fully parallel) and mul_impl = 0 (the tool decides).
template <class T> struct void_if_valid { typedef void type; };

template <class C, class = void> struct reuse_of { static const unsigned value = 1; };
template <class C>
struct reuse_of<C, typename void_if_valid<decltype(C::reuse)>::type> {
    static const unsigned value = C::reuse;
    static_assert(C::reuse >= 1, "config field `reuse` must be >= 1 (cycles per output vector / pixel)");
};

// 0 = let the tool decide, 1 = DSP, 2 = fabric (LUTs).
template <class C, class = void> struct mul_impl_of { static const int value = 0; };
template <class C>
struct mul_impl_of<C, typename void_if_valid<decltype(C::mul_impl)>::type> {
    static const int value = C::mul_impl;
    static_assert(C::mul_impl >= 0 && C::mul_impl <= 2, "config field `mul_impl` must be 0 (auto), 1 (dsp) or 2 (fabric)");
};

// a * b in its full-precision result type (exact), the multiplier bound by
// IMPL under HLS. One specialisation per IMPL because a pragma is text.
template <int IMPL> struct mul_bound;
template <> struct mul_bound<0> {
    template <class A, class B>
    static auto mul(const A& a, const B& b) -> decltype(a * b) {
        QFX_PRAGMA(HLS INLINE)
        const decltype(a * b) p = a * b;
        return p;
    }
};
template <> struct mul_bound<1> {
    template <class A, class B>
    static auto mul(const A& a, const B& b) -> decltype(a * b) {
        QFX_PRAGMA(HLS INLINE)
        const decltype(a * b) p = a * b;
        QFX_PRAGMA(HLS BIND_OP variable=p op=mul impl=dsp)
        return p;
    }
};
template <> struct mul_bound<2> {
    template <class A, class B>
    static auto mul(const A& a, const B& b) -> decltype(a * b) {
        QFX_PRAGMA(HLS INLINE)
        const decltype(a * b) p = a * b;
        QFX_PRAGMA(HLS BIND_OP variable=p op=mul impl=fabric)
        return p;
    }
};

// x * y with the multiplier implementation chosen by config C's mul_impl.
template <class C, class A, class B>
inline auto mul(const A& a, const B& b) -> decltype(a * b) {
    QFX_PRAGMA(HLS INLINE)
    return mul_bound<mul_impl_of<C>::value>::mul(a, b);
}

}  // namespace qfx

#endif
