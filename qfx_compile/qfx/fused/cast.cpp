// The exact ap_fixed cast of a float tensor in one pass, and its training backward in one pass.
//
// Built by qfx_compile/qfx/fused/__init__.py with the system C++ compiler (plain C ABI, called with
// ctypes). The arithmetic is that of quantize.py's torch kernels, element by element, in double:
//
//   y = clamp(x, lo_x, hi_x) * 2^F      exact: a power-of-two scaling of a float32 (any |F| <= 126) or of a
//                                       float64 scaled up (F >= 0) whose magnitude the clamp bounds;
//   SAT / SAT_SYM: the clamp bounds are the range (on the grid: clamp-then-round = round-then-clamp);
//   SAT_ZERO: clamp to +-2^(I+1) (out of range stays out of range), round, out of range -> 0;
//   WRAP: clamp to +-2^(I+54) (every float that large is a multiple of 2^I and wraps to 0), then
//         r = y - trunc(y / 2^W) * 2^W (exact, same sign as y), q = round(r) in [-2^W, 2^W],
//         q - 2^W * floor((q - raw_min) / 2^W) (exact for W <= 50);
//   rounding: floor / trunc / nearbyint are exact; the AP_RND family compares y with f + 1/2 (exact for
//         |f| < 2^52; larger y are integers, which never round up: "y != f");
//   result q * 2^-F, exact in the output type (a W-bit value, W <= 24 for float32 output).
//
// Backward (float32): gx = g where lo_in <= x <= hi_in, else 0; the binary-point gradient sum
// S = sum_i round(g_i * d_i * 2^-k), d_i = (q_i - x_i in float32) inside, q_i outside, each product exact in
// double and rounded to an integer (half to even), k chosen so that |S| and every partial sum stay below
// 2^52: the sum is exact in double whatever the order or the number of threads (see quantize.ib_grad_scale).
#include <cmath>
#include <cstdint>
#include <cfloat>
#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QFX_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QFX_CLONES
#endif

namespace {

enum Rounding { TRN = 0, TRN_ZERO = 1, RND = 2, RND_ZERO = 3, RND_MIN_INF = 4, RND_INF = 5, RND_CONV = 6 };
enum Overflow { SAT = 0, SAT_ZERO = 1, SAT_SYM = 2, WRAP = 3 };

struct Params {
    double scale, inv, lo_x, hi_x, raw_min, raw_max, step, inv_step;
};

Params make_params(int width, int is_signed, int frac, int overflow, double sat_lo) {
    Params p;
    int ib = width - frac;
    p.scale = std::ldexp(1.0, frac);
    p.inv = std::ldexp(1.0, -frac);
    p.raw_min = is_signed ? -std::ldexp(1.0, width - 1) : 0.0;
    p.raw_max = is_signed ? std::ldexp(1.0, width - 1) - 1.0 : std::ldexp(1.0, width) - 1.0;
    p.step = std::ldexp(1.0, width);
    p.inv_step = std::ldexp(1.0, -width);
    if (overflow == WRAP) {
        p.hi_x = std::ldexp(1.0, ib + 54);
        p.lo_x = -p.hi_x;
    } else if (overflow == SAT_ZERO) {
        p.hi_x = std::ldexp(1.0, ib + 1);
        p.lo_x = -p.hi_x;
    } else {
        p.lo_x = (overflow == SAT_SYM ? sat_lo : p.raw_min) * p.inv;
        p.hi_x = p.raw_max * p.inv;
    }
    return p;
}

template <int R>
inline double round_to_int(double y) {
    if (R == TRN) return std::floor(y);
    if (R == TRN_ZERO) return std::trunc(y);
    if (R == RND_CONV) return std::nearbyint(y);
    double f = std::floor(y), h = f + 0.5;
    bool up;
    if (R == RND) up = y >= h;
    else if (R == RND_MIN_INF) up = y > h;
    else if (R == RND_ZERO) up = (y > h) | ((y == h) & (y < 0));
    else up = (y > h) | ((y == h) & (y > 0));
    return (up & (y != f)) ? f + 1.0 : f;
}

// The mantissa q (an integer-valued double) of the cast of x.
template <int R, int O>
inline double cast_raw(double x, const Params& p) {
    double xc = x < p.lo_x ? p.lo_x : (x > p.hi_x ? p.hi_x : x);
    double y = xc * p.scale;
    if (O == WRAP) {
        y -= std::trunc(y * p.inv_step) * p.step;
        double q = round_to_int<R>(y);
        return q - p.step * std::floor((q - p.raw_min) * p.inv_step);
    }
    double q = round_to_int<R>(y);
    if (O == SAT_ZERO) return (q < p.raw_min) | (q > p.raw_max) ? 0.0 : q;
    return q;
}

template <typename TI, typename TO, int R, int O>
QFX_CLONES void cast_loop(const TI* x, TO* out, int64_t n, Params p, int threads) {
#pragma omp parallel for simd schedule(static) num_threads(threads) if (n >= 65536)
    for (int64_t i = 0; i < n; ++i) out[i] = (TO)(cast_raw<R, O>((double)x[i], p) * p.inv) + (TO)0;  // +0: no -0.0
}

template <int R, int O>
QFX_CLONES double backward_loop(const float* g, const float* x, float* gx, int64_t n, Params p, float lo_in,
                                float hi_in, double kscale, int need_ib, int threads) {
    double acc = 0.0;
    if (!need_ib) {
#pragma omp parallel for simd schedule(static) num_threads(threads) if (n >= 65536)
        for (int64_t i = 0; i < n; ++i) gx[i] = (x[i] >= lo_in) & (x[i] <= hi_in) ? g[i] : 0.0f;
        return 0.0;
    }
#pragma omp parallel for simd schedule(static) num_threads(threads) if (n >= 65536) reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) {
        float xi = x[i], gi = g[i];
        bool inside = (xi >= lo_in) & (xi <= hi_in);
        gx[i] = inside ? gi : 0.0f;
        float q = (float)(cast_raw<R, O>((double)xi, p) * p.inv);
        float d = inside ? q - xi : q;
        acc += std::nearbyint((double)gi * (double)d * kscale);
    }
    return acc;
}

// max |g| (float32, exact) and whether any g is not finite.
QFX_CLONES float abs_max(const float* g, int64_t n, int* bad, int threads) {
    float m = 0.0f;
    int nonfinite = 0;
#pragma omp parallel for simd schedule(static) num_threads(threads) if (n >= 65536) reduction(max : m) reduction(| : nonfinite)
    for (int64_t i = 0; i < n; ++i) {
        float a = std::fabs(g[i]);
        nonfinite |= !(a <= FLT_MAX);
        m = a > m ? a : m;
    }
    *bad = nonfinite;
    return m;
}

#define QFX_CASE_O(R)                                                        \
    switch (overflow) {                                                      \
        case SAT: f(std::integral_constant<int, R>{}, std::integral_constant<int, SAT>{}); return 0;            \
        case SAT_ZERO: f(std::integral_constant<int, R>{}, std::integral_constant<int, SAT_ZERO>{}); return 0;  \
        case SAT_SYM: f(std::integral_constant<int, R>{}, std::integral_constant<int, SAT_SYM>{}); return 0;    \
        case WRAP: f(std::integral_constant<int, R>{}, std::integral_constant<int, WRAP>{}); return 0;          \
        default: return -1;                                                  \
    }

template <typename F>
int dispatch(int rounding, int overflow, F&& f) {
    switch (rounding) {
        case TRN: QFX_CASE_O(TRN)
        case TRN_ZERO: QFX_CASE_O(TRN_ZERO)
        case RND: QFX_CASE_O(RND)
        case RND_ZERO: QFX_CASE_O(RND_ZERO)
        case RND_MIN_INF: QFX_CASE_O(RND_MIN_INF)
        case RND_INF: QFX_CASE_O(RND_INF)
        case RND_CONV: QFX_CASE_O(RND_CONV)
        default: return -1;
    }
}
}  // namespace

extern "C" {

// sat_lo: the lowest AP_SAT_SYM mantissa (types.sat_sym_raw_min).
// kind: 0 float32 -> float32, 1 float32 -> float64, 2 float64 -> float64. Returns 0, or -1 for a bad mode.
int qfx_cast(const void* x, void* out, int64_t n, int kind, int rounding, int overflow, int width, int is_signed,
             int frac, double sat_lo, int threads) {
    Params p = make_params(width, is_signed, frac, overflow, sat_lo);
    return dispatch(rounding, overflow, [&](auto r, auto o) {
        constexpr int R = decltype(r)::value, O = decltype(o)::value;
        if (kind == 0) cast_loop<float, float, R, O>((const float*)x, (float*)out, n, p, threads);
        else if (kind == 1) cast_loop<float, double, R, O>((const float*)x, (double*)out, n, p, threads);
        else cast_loop<double, double, R, O>((const double*)x, (double*)out, n, p, threads);
    });
}

// The training backward of a float32 cast (see the file comment): gx[i] = g[i] inside, else 0.
// With need_ib: *status = 0 and the exact integer sum S returned, *k_out = k (the gradient sum is S * 2^k);
// *status = 1 when every g is 0 (S = 0), 2 when a g is not finite. Returns 0, or -1 for a bad mode.
int qfx_cast_backward(const float* g, const float* x, float* gx, int64_t n, int rounding, int overflow, int width,
                      int is_signed, int frac, double sat_lo, float lo_in, float hi_in, int need_ib, int threads,
                      double* sum_out, int* k_out, int* status) {
    Params p = make_params(width, is_signed, frac, overflow, sat_lo);
    double kscale = 0.0;
    *status = 0;
    *sum_out = 0.0;
    if (need_ib) {
        int bad = 0;
        float m = abs_max(g, n, &bad, threads);
        if (bad || m == 0.0f) {
            *status = bad ? 2 : 1;
            need_ib = 0;
        } else {
            int eg, en = 0;
            std::frexp((double)m, &eg);  // m < 2^eg
            while ((int64_t(1) << en) < n) ++en;
            int k = en + eg + (width - frac) - 52;
            *k_out = k;
            kscale = std::ldexp(1.0, -k);
        }
    }
    return dispatch(rounding, overflow, [&](auto r, auto o) {
        constexpr int R = decltype(r)::value, O = decltype(o)::value;
        *sum_out = backward_loop<R, O>(g, x, gx, n, p, lo_in, hi_in, kscale, need_ib, threads);
    });
}

}  // extern "C"
