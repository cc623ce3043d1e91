// qfx_types.h: raw mantissa <-> ap_fixed helpers and the binary-point shift.
// A value of ap_[u]fixed<W, I> is mantissa * 2^-(W-I); these helpers move the
// mantissa in and out with .range() (bit copies, no rounding anywhere).
#ifndef QFX_TYPES_H
#define QFX_TYPES_H

#include <ap_fixed.h>
#include <ap_int.h>
#include <hls_stream.h>
#include <stdint.h>

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

// Mantissas in C simulation: g++ without __SYNTHESIS__ runs the casts and the element-wise
// kernels on int64_t mantissas where that is exact (native_cast below; the MAC kernels likewise,
// qfx_mac.h); under synthesis, and with -DQFX_CSIM_AP_MANTISSAS (the reference build: the tests run
// both), the same source runs on ap_fixed / ap_int. Nothing else differs.
#if !defined(__SYNTHESIS__) && !defined(QFX_CSIM_AP_MANTISSAS)
#define QFX_NATIVE_MANTISSAS 1
#endif

namespace qfx {

// Width, integer bits, signedness and modes of an ap_fixed / ap_ufixed type.
template <class T> struct fixed_traits;

template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct fixed_traits<ap_fixed<W, I, Q, O, N> > {
    static const int width = W;
    static const int int_bits = I;
    static const int frac_bits = W - I;
    static const bool is_signed = true;
    static const ap_q_mode q_mode = Q;
    static const ap_o_mode o_mode = O;
    static const int sat_bits = N;
    typedef ap_int<W> raw_t;  // the mantissa as an integer
    template <int S> struct shifted { typedef ap_fixed<W, I + S> type; };
};

template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct fixed_traits<ap_ufixed<W, I, Q, O, N> > {
    static const int width = W;
    static const int int_bits = I;
    static const int frac_bits = W - I;
    static const bool is_signed = false;
    static const ap_q_mode q_mode = Q;
    static const ap_o_mode o_mode = O;
    static const int sat_bits = N;
    typedef ap_uint<W> raw_t;
    template <int S> struct shifted { typedef ap_ufixed<W, I + S> type; };
};

// Set x to the value raw * 2^-F: the low W bits of raw become the mantissa.
template <class T, class R>
inline void set_raw(T& x, R raw) {
    ap_uint<fixed_traits<T>::width> bits = raw;  // two's complement low bits
#ifdef QFX_NATIVE_MANTISSAS
    if (fixed_traits<T>::width <= 64) {
        x.setBits(bits.to_uint64());  // the same bit copy without a range reference
        return;
    }
#endif
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
#ifdef QFX_NATIVE_MANTISSAS
template <class T> inline int64_t mant64(const T& x);
#endif

template <class T>
inline typename fixed_traits<T>::raw_t raw_of(const T& x) {
#ifdef QFX_NATIVE_MANTISSAS
    if (fixed_traits<T>::width <= 63) return typename fixed_traits<T>::raw_t(mant64(x));
#endif
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

#ifdef QFX_NATIVE_MANTISSAS
// ------------------------------------------------------- the cast on int64_t mantissas (C simulation)
// The low W bits of u, sign- or zero-extended as T's mantissa (W <= 63).
template <class T>
inline int64_t extend64(uint64_t u) {
    static const int k = fixed_traits<T>::width < 64 ? 64 - fixed_traits<T>::width : 0;
    return fixed_traits<T>::is_signed ? (int64_t)(u << k) >> k : (int64_t)((u << k) >> k);
}

// The mantissa of x as int64_t (W <= 63): the headers' own bits (bits_to_uint64).
template <class T>
inline int64_t mant64(const T& x) {
    return extend64<T>((uint64_t)x.bits_to_uint64());
}

// The mantissa of from_raw<T>(raw) for an integer raw (its low W bits, as set_raw).
template <class T, class R>
inline int64_t raw_mant64(R raw) {
    return extend64<T>((uint64_t)(int64_t)raw);
}

// The value of T whose mantissa is the low W bits of m (W <= 64).
template <class T>
inline T of_mant64(int64_t m) {
    T x;
    x.setBits((ap_ulong)m);
    return x;
}

// `OUT y = v;` for v = m * 2^-FS with |m| < 2^(B-1), on int64_t; `ok` where that is exact
// (every intermediate below 2^62). Rounding: an added constant then an arithmetic shift by the
// s dropped bits (h = 2^(s-1)): TRN +0, RND +h, RND_MIN_INF +h-1, TRN_ZERO +(2h-1 if m<0),
// RND_ZERO +h-1+(m<0), RND_INF +h-(m<0), RND_CONV +h-1+(bit s of m); then OUT's overflow:
// WRAP keeps the low W bits, SAT / SAT_SYM clamp (SAT_SYM: -max for signed W > 1), SAT_ZERO gives 0.
template <class OUT, int FS, int B>
struct native_cast {
    typedef fixed_traits<OUT> O;
    static const int s = FS - O::frac_bits;
    static const int ls = s < 0 ? (s > -62 ? -s : 62) : 0, rs = s > 0 ? (s < 62 ? s : 62) : 0;  // (clamped: unused where !ok)
    static const int w = O::width < 62 ? O::width : 62;
    static const bool ok = B + ls <= 62 && s <= 62 && O::width <= 62 && O::sat_bits == 0 &&
                           O::o_mode != AP_WRAP_SM;
    static int64_t apply(int64_t m) {
        int64_t q = (int64_t)((uint64_t)m << ls);
        if (rs > 0) {
            const int64_t h = (int64_t)1 << (rs > 0 ? rs - 1 : 0);
            const int64_t neg = m < 0;
            int64_t c = 0;  // AP_TRN
            if (O::q_mode == AP_RND) c = h;
            else if (O::q_mode == AP_RND_MIN_INF) c = h - 1;
            else if (O::q_mode == AP_TRN_ZERO) c = neg ? 2 * h - 1 : 0;
            else if (O::q_mode == AP_RND_ZERO) c = h - 1 + neg;
            else if (O::q_mode == AP_RND_INF) c = h - neg;
            else if (O::q_mode == AP_RND_CONV) c = h - 1 + ((m >> rs) & 1);
            q = (m + c) >> rs;
        }
        static const int64_t hi = O::is_signed ? ((int64_t)1 << (w - 1)) - 1 : ((int64_t)1 << w) - 1;
        static const int64_t lo = O::is_signed ? -hi - 1 : 0;
        if (O::o_mode == AP_WRAP) {
            const uint64_t u = (uint64_t)q << (64 - w);
            return O::is_signed ? (int64_t)u >> (64 - w) : (int64_t)(u >> (64 - w));
        }
        if (O::o_mode == AP_SAT_ZERO) return (q < lo || q > hi) ? 0 : q;
        const int64_t low = (O::o_mode == AP_SAT_SYM && O::is_signed && w > 1) ? -hi : lo;
        return q < low ? low : (q > hi ? hi : q);
    }
    static OUT to(int64_t m) { return of_mant64<OUT>(apply(m)); }
};

// Bits of a T mantissa as a signed int64_t (one more for an unsigned type).
template <class T> struct signed_width {
    static const int value = fixed_traits<T>::width + (fixed_traits<T>::is_signed ? 0 : 1);
};
#endif

template <class OUT, class T>
inline OUT convert(const T& x) {
    QFX_PRAGMA(HLS INLINE)
#ifdef QFX_NATIVE_MANTISSAS
    typedef native_cast<OUT, fixed_traits<T>::frac_bits, signed_width<T>::value> N;
    if (N::ok && fixed_traits<T>::width <= 63) return N::to(mant64(x));  // the same cast on int64_t
#endif
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
