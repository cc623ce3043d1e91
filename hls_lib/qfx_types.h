// qfx_types.h: raw mantissa <-> ap_fixed helpers and the binary-point shift.
// A value of ap_[u]fixed<W, I> is mantissa * 2^-(W-I); these helpers move the
// mantissa in and out with .range() (bit copies, no rounding anywhere).
#ifndef QFX_TYPES_H
#define QFX_TYPES_H

#include <ap_fixed.h>
#include <ap_int.h>
#include <hls_stream.h>

// HLS pragmas: active under Vitis HLS, absent for g++ (no unknown-pragma warnings).
#ifdef __SYNTHESIS__
#define QFX_PRAGMA_STR(x) _Pragma(#x)
#define QFX_HLS(x) QFX_PRAGMA_STR(HLS x)
#define QFX_LABEL(name) name:
#else
#define QFX_HLS(x)
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

}  // namespace qfx

#endif
