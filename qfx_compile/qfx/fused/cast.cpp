// The exact ap_fixed cast of a float tensor in one pass, and its training backward in one pass.
//
// Built by qfx_compile/qfx/fused/__init__.py with the system C++ compiler (plain C ABI, called with
// ctypes). The arithmetic is that of quantize.py's torch kernels (_cast_fused), element by element, in a
// compute type T: float for a float32 input with 0 <= F <= 100 and W <= 22 (as _cast_f32), else double.
//
//   y = clamp(x, lo_x, hi_x) * 2^F      exact: scaling up by a power of two (F >= 0) cannot underflow, and the
//                                       clamp bounds the magnitude; in double a float32 is scaled exactly for
//                                       any |F| <= 126;
//   SAT / SAT_SYM: the clamp bounds are the range (on the grid: clamp-then-round = round-then-clamp);
//   SAT_ZERO: clamp to +-2^(I+1) (out of range stays out of range), round, out of range -> 0;
//   WRAP: clamp to +-2^(I+M), M = 54 in double, 26 in float (every value that large has an ulp of at least
//         2^(I+2): a multiple of 2^I, it wraps to 0), then r = y - trunc(y / 2^W) * 2^W (exact, same sign
//         as y), q = round(r) in [-2^W, 2^W], q - 2^W * floor((q - raw_min) / 2^W) (exact: an integer
//         below 2^(W+1), W <= 50 in double, W <= 22 in float);
//   rounding: floor / trunc / nearbyint are exact; the AP_RND family compares y with h = f + 1/2, f = floor(y)
//         (exact while f + 1/2 is representable; a larger y is an integer, which never rounds up: "y != f");
//   result q * 2^-F, exact in the output type (a W-bit value, W <= 24 for float32 output), +0.0 for zero.
//
// Backward (float32, any mode): gx = g where lo <= x <= hi, else 0; the binary-point gradient sum over blocks
// of L = 16384 consecutive elements of the flattened tensor (the last one shorter): per block b,
// S_b = sum_i round(p_i * 2^-k_b), p_i = g_i * d_i rounded to float32, d_i = (q_i - x_i in float32) inside, q_i
// outside, p_i * 2^-k_b rounded to an integer (half to even; the integer of the exact product, taken in float where
// 2^-k_b is a normal float32: Grid), k_b chosen from the block's own
// max |g| and length so that every term is at most 2^(52-ceil(log2 L_b)) and every partial sum at most 2^52:
// S_b is exact in double whatever the order or the number of threads; the total is sum_b S_b * 2^k_b added in
// block order (quantize.block_grid, quantize.ib_grad computes the same in torch). Each block is read twice,
// the second time from cache: one pass over memory.
// A cast followed by ReLU (relu: q is then relu's output) masks g as ReLU's backward does before all of this.
// A residual addition's cast (qfx_add_cast) casts the float32 sum a + b without writing it; its backward
// (qfx_cast_backward with b) recomputes the sum, so neither pass keeps it in memory.
//
// BatchNorm training (qfx/nn/norm.py): the output cast with the per-channel affine map fused in
// (z = x * a_c + b_c rounded in float32, then the cast above; backward recomputes z) and, in the same backward
// pass, the affine map's da/db as exact blocked per-channel sums (qfx_bn_cast_backward); the input gradient
// dx = (x * B_c + C_c) + g * a_c in one pass (with the convolution cast's backward: qfx_bn_dx_cast_backward);
// the per-channel chain (statistics from the convolution cast's mantissa sums, qfx_cast_channel_sums; the scale
// and shift casts) in one call each way (qfx_bn_param_forward / _backward).
#include <cmath>
#include <cstdint>
#include <cfloat>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QFX_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define QFX_CLONES
#endif

namespace {

// ln 2 as a double (Python's math.log(2.0)): the binary-point gradients are ln2 times their sums (quantize._LN2).
constexpr double kLn2 = 0.6931471805599453;

enum Rounding { TRN = 0, TRN_ZERO = 1, RND = 2, RND_ZERO = 3, RND_MIN_INF = 4, RND_INF = 5, RND_CONV = 6 };
enum Overflow { SAT = 0, SAT_ZERO = 1, SAT_SYM = 2, WRAP = 3 };

template <typename T>
struct Params {
    T scale, inv, lo_x, hi_x, raw_min, raw_max, step, inv_step;
};

template <typename T>
struct Boxed {  // Params<T> with its compute type, for generic lambdas
    using value_type = T;
    Params<T> p;
};

template <typename T>
Params<T> make_params(int width, int is_signed, int frac, int overflow, double sat_lo) {
    Params<T> p;
    int ib = width - frac;
    double raw_min = is_signed ? -std::ldexp(1.0, width - 1) : 0.0;
    double raw_max = is_signed ? std::ldexp(1.0, width - 1) - 1.0 : std::ldexp(1.0, width) - 1.0;
    double hi = overflow == WRAP ? std::ldexp(1.0, ib + (sizeof(T) == 8 ? 54 : 26))
                                 : overflow == SAT_ZERO ? std::ldexp(1.0, ib + 1) : std::ldexp(raw_max, -frac);
    double lo = overflow == SAT ? std::ldexp(raw_min, -frac) : overflow == SAT_SYM ? std::ldexp(sat_lo, -frac) : -hi;
    p.scale = (T)std::ldexp(1.0, frac);
    p.inv = (T)std::ldexp(1.0, -frac);
    p.raw_min = (T)raw_min;
    p.raw_max = (T)raw_max;
    p.step = (T)std::ldexp(1.0, width);
    p.inv_step = (T)std::ldexp(1.0, -width);
    p.lo_x = (T)lo;
    p.hi_x = (T)hi;
    return p;
}

template <int R, typename T>
inline T round_to_int(T y) {
    if (R == TRN) return std::floor(y);
    if (R == TRN_ZERO) return std::trunc(y);
    if (R == RND_CONV) return std::nearbyint(y);
    T f = std::floor(y), h = f + (T)0.5;
    bool up;
    if (R == RND) up = y >= h;
    else if (R == RND_MIN_INF) up = y > h;
    else if (R == RND_ZERO) up = (y > h) | ((y == h) & (y < 0));
    else up = (y > h) | ((y == h) & (y > 0));
    return (up & (y != f)) ? f + (T)1 : f;
}

// The mantissa q (an integer value) of the cast of x, in the compute type T.
template <int R, int O, typename T>
inline T cast_raw(T x, const Params<T>& p) {
    T xc = x < p.lo_x ? p.lo_x : (x > p.hi_x ? p.hi_x : x);
    T y = xc * p.scale;
    if (O == WRAP) {
        y -= std::trunc(y * p.inv_step) * p.step;
        T q = round_to_int<R>(y);
        return q - p.step * std::floor((q - p.raw_min) * p.inv_step);
    }
    T q = round_to_int<R>(y);
    if (O == SAT_ZERO) return (q < p.raw_min) | (q > p.raw_max) ? (T)0 : q;
    return q;
}

// relu(v) as torch computes it: v < 0 -> +0, NaN stays NaN (v is never -0.0 here).
template <typename T>
inline T relu_of(T v) {
    return v < (T)0 ? (T)0 : v;
}

// Where a cast reads its input: a tensor (One), or the float32 sum of two (SumOf: a residual addition's a + b, as
// torch's add rounds it, computed again instead of kept in memory). at(i) is element i, from(i) the source at
// element i.
template <typename TI>
struct One {
    const TI* x;
    TI at(int64_t i) const { return x[i]; }
    One from(int64_t i) const { return {x + i}; }
};

struct SumOf {
    const float* a;
    const float* b;
    float at(int64_t i) const { return a[i] + b[i]; }
    SumOf from(int64_t i) const { return {a + i, b + i}; }
};

// The cast of n elements of the source x into out, with RELU torch.relu of it.
template <typename TO, typename T, int R, int O, bool RELU, typename X>
QFX_CLONES void cast_loop(X x, TO* out, int64_t n, Params<T> p, int threads) {
#pragma omp parallel for simd schedule(static) num_threads(threads) if (n >= 65536) firstprivate(x)
    for (int64_t i = 0; i < n; ++i) {
        TO v = (TO)(cast_raw<R, O, T>((T)x.at(i), p) * p.inv) + (TO)0;  // +0: no -0.0
        out[i] = RELU ? relu_of(v) : v;
    }
}

// The grid 2^-k of a block's terms in the exact sums: term(p) = round(p * 2^-k) of a float32 p, as a double. In
// float (Grid<true>) where 2^-k is 0 or a normal float32: the float product is exact unless its magnitude is below
// 2^-126, where it and the exact product both round to a zero of p's sign, so the integer is the double's (and NaN,
// inf alike); one float multiply and round instead of a conversion, a double multiply and a double round.
template <bool F32>
struct Grid {
    double s;
    double term(float p) const { return std::nearbyint((double)p * s); }
};

template <>
struct Grid<true> {
    float s;
    double term(float p) const { return (double)std::nearbyint(p * s); }
};

// Whether the scale 2^-k (or 0) takes Grid<true>.
inline bool float_grid(double s) {
    return s == 0.0 || (s >= 0x1p-126 && s <= 0x1p127);
}

// Calls f(grid) with the Grid for each scale: the float one where every scale allows it.
template <typename F>
auto with_grids(F&& f, double s0, double s1 = 0.0, double s2 = 0.0) {
    if (float_grid(s0) && float_grid(s1) && float_grid(s2))
        return f(Grid<true>{(float)s0}, Grid<true>{(float)s1}, Grid<true>{(float)s2});
    return f(Grid<false>{s0}, Grid<false>{s1}, Grid<false>{s2});
}

// One element of a float32 cast's backward: gx = g' where lo <= z <= hi, else 0, and its term of the exact sum S,
// round(float32(g' * d) * 2^-k), d = q - z inside, q outside (the file comment); z the cast's input, q its output.
struct CastGrad {
    float gx;
    double term;
};

template <typename G>
inline CastGrad cast_grad(float gi, float z, float q, float lo, float hi, G k) {
    bool inside = (z >= lo) & (z <= hi);
    float d = inside ? q - z : q;
    return {inside ? gi : 0.0f, k.term(gi * d)};
}

// One element's step of max |g'| (exact in float32) and of whether a g' is not finite.
inline void abs_max_step(float gi, float& m, int& nonfinite) {
    float a = std::fabs(gi);
    nonfinite |= !(a <= FLT_MAX);
    m = a > m ? a : m;
}

// BatchNorm's affine map of one element, z = x * a + b, the product and the sum each rounded in float32 (no
// contraction): the value torch's x * a + b gives.
inline float affine_of(float x, float a, float b) {
    float z = x * a;
    return z + b;
}

// BatchNorm's input gradient of one element, dx = (x * b + c) + g * a, each operation rounded in float32 in that
// order (no contraction).
inline float bn_dx_of(float g, float x, float a, float b, float c) {
    float t = x * b;
    t = t + c;
    float u = g * a;
    return t + u;
}

// One pass of a float32 cast's backward over m elements: gx = g' where lo <= x <= hi, else 0, with g' = g, or with
// RELU (the cast followed by ReLU, q its output) g' = 0 where q <= 0 (torch's threshold_backward). With IB it
// returns the part of the sum S of round(float32(g' * d) * 2^-k), d = q - x inside, q outside (the file comment).
template <bool RELU, bool IB, typename G, typename X>
QFX_CLONES double grad_pass(const float* g, X x, const float* q, float* gx, int64_t m, float lo, float hi, G kscale) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < m; ++i) {
        float gi = g[i];
        if (RELU) gi = q[i] <= 0.0f ? 0.0f : gi;
        CastGrad r = cast_grad(gi, x.at(i), q[i], lo, hi, kscale);
        gx[i] = r.gx;
        if (IB) acc += r.term;
    }
    return acc;
}

// max |g'| (float32, exact) over m elements, g' = g or with RELU 0 where q <= 0, and whether a g' is not finite,
// folded into m_io and bad_io.
template <bool RELU>
QFX_CLONES void abs_max_seg(const float* g, const float* q, int64_t n, float& m_io, int& bad_io) {
    float m = m_io;
    int nonfinite = 0;
#pragma omp simd reduction(max : m) reduction(| : nonfinite)
    for (int64_t i = 0; i < n; ++i) abs_max_step(RELU && q[i] <= 0.0f ? 0.0f : g[i], m, nonfinite);
    m_io = m;
    bad_io |= nonfinite;
}

QFX_CLONES void bn_dx_plane(const float* g, const float* x, float* dx, int64_t m, float a, float b, float c) {
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) dx[i] = bn_dx_of(g[i], x[i], a, b, c);
}

// BatchNorm's dx (bn_dx_plane's arithmetic) as the gradient of the cast x = cast(y) before it (the convolution's
// output cast): max |dx| and whether a dx is not finite (MAX), or gy = dx where lo <= y <= hi, else 0, and the
// plane's part of the exact sum of round(dx * d * kscale), d = x - y inside, x outside (the file comment).
template <bool MAX, typename G>
QFX_CLONES double bn_dx_cast_plane(const float* g, const float* x, const float* y, float* gy, int64_t m, float a,
                                   float b, float c, float lo, float hi, G kscale, float* mx, int* bad) {
    double acc = 0.0;
    float mm = 0.0f;
    int nonfinite = 0;
#pragma omp simd reduction(+ : acc) reduction(max : mm) reduction(| : nonfinite)
    for (int64_t i = 0; i < m; ++i) {
        float dx = bn_dx_of(g[i], x[i], a, b, c);
        if (MAX) {
            abs_max_step(dx, mm, nonfinite);
        } else {
            CastGrad r = cast_grad(dx, y[i], x[i], lo, hi, kscale);  // the cast x = cast(y): z = y, q = x
            gy[i] = r.gx;
            acc += r.term;
        }
    }
    if (MAX) {
        *mx = mm;
        *bad = nonfinite;
    }
    return acc;
}

// One (N, C) plane of BatchNorm's training output: q = cast(z), z = x * a + b rounded in float32 (no contraction).
template <typename T, int R, int O, bool RELU>
QFX_CLONES void affine_cast_plane(const float* x, float* q, int64_t m, float a, float b, Params<T> p) {
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) {
        float v = (float)(cast_raw<R, O, T>((T)affine_of(x[i], a, b), p) * p.inv) + 0.0f;  // +0: no -0.0
        q[i] = RELU ? relu_of(v) : v;
    }
}

// One (N, C) plane of qfx_cast_channel_sums: out = the cast of x (float32), s[0] = sum of its mantissas q,
// s[1] = sum of q * q (exact in double: see there).
template <typename T, int R, int O>
QFX_CLONES void cast_sums_plane(const float* x, float* out, int64_t m, Params<T> p, double* s) {
    double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < m; ++i) {
        T q = cast_raw<R, O, T>((T)x[i], p);
        out[i] = (float)(q * p.inv) + 0.0f;  // +0: no -0.0
        double qd = (double)q;
        s1 += qd;
        s2 += qd * qd;
    }
    s[0] = s1;
    s[1] = s2;
}

// k of a block of the exact blocked sums over n gradients whose largest magnitude is m > 0, int_bits the exponent
// bounding what multiplies them (the file comment; quantize.block_grid).
int sum_k(float m, int64_t n, int int_bits) {
    int eg, en = 0;
    std::frexp((double)m, &eg);  // m < 2^eg
    while ((int64_t(1) << en) < n) ++en;
    return en + eg + int_bits - 52;
}

// BatchNorm's output-cast backward over one plane segment (grad_pass with IB on z = affine_of(x, a, b)) with the
// segment's parts of the exact per-channel sums for da = sum gz * x and db = sum gz: round(float32(gz * x) * ka)
// and round(gz * kb) (qfx_bn_cast_backward).
struct BnSums {
    double ib, da, db;
};

template <bool RELU, typename G>
QFX_CLONES BnSums bn_grad_seg(const float* g, const float* x, const float* q, float* gz, int64_t m, float a, float b,
                              float lo, float hi, G kscale, G ka, G kb) {
    double acc = 0.0, sa = 0.0, sb = 0.0;
#pragma omp simd reduction(+ : acc, sa, sb)
    for (int64_t i = 0; i < m; ++i) {
        float gi = g[i];
        if (RELU) gi = q[i] <= 0.0f ? 0.0f : gi;
        CastGrad r = cast_grad(gi, affine_of(x[i], a, b), q[i], lo, hi, kscale);
        gz[i] = r.gx;
        acc += r.term;
        sa += ka.term(r.gx * x[i]);
        sb += kb.term(r.gx);
    }
    return {acc, sa, sb};
}

// max |g'| and max |x| over a segment (g' as in abs_max_seg), with whether one of each is not finite.
template <bool RELU>
QFX_CLONES void bn_max_seg(const float* g, const float* x, const float* q, int64_t n, float& mg_io, int& badg_io,
                           float& mx_io, int& badx_io) {
    float mg = mg_io, mx = mx_io;
    int badg = 0, badx = 0;
#pragma omp simd reduction(max : mg, mx) reduction(| : badg, badx)
    for (int64_t i = 0; i < n; ++i) {
        abs_max_step(RELU && q[i] <= 0.0f ? 0.0f : g[i], mg, badg);
        abs_max_step(x[i], mx, badx);
    }
    mg_io = mg;
    mx_io = mx;
    badg_io |= badg;
    badx_io |= badx;
}

// Elements per block of the binary-point gradient sum (quantize.IB_BLOCK).
constexpr int64_t kBlock = 16384;

// The status of the blocked sum from its blocks' statuses (2 if one is not finite, else 1 if every block's g' is
// 0, else 0) and, with status 0, the blocks' totals added in block order in *out.
int block_total(const std::vector<int>& st, const std::vector<double>& vals, double* out) {
    int status = 1;
    double t = 0.0;
    for (size_t blk = 0; blk < st.size(); ++blk) {
        if (st[blk] == 2) return 2;
        if (st[blk] == 0) status = 0;
        t += vals[blk];
    }
    *out = status == 0 ? t : 0.0;
    return status;
}

// The binary-point gradient ln2 * total rounded to float32 from a blocked sum's status and total (1: every g' is 0,
// the gradient 0; 2: a g' is not finite, NaN): quantize._ib_grad's value.
float ib_grad_of(int status, double total) {
    return status == 2 ? NAN : status == 1 ? 0.0f : (float)(total * kLn2);
}

// The blocked binary-point gradient sum (file comment) of a backward over total elements, (n, c) planes of hw
// elements (per-tensor: hw = total, c = 1). Per block of kBlock elements, split at plane boundaries into
// segments (i0, len, channel): with need_ib, seg_max(i0, len, ch, m, bad) folds max |g'| and non-finiteness
// into (m, bad), giving k_b; then seg_pass(i0, len, ch, kscale) writes the gradient and returns the segment's
// sum of rounded terms at kscale = 2^-k_b (0 without need_ib or where the block's g' are all 0). Returns the
// status (0; 1 every g' is 0; 2 a g' is not finite) and, with status 0, the total in *out.
template <typename MaxSeg, typename PassSeg>
int blocked_sum(int64_t total, int64_t hw, int64_t c, int int_bits, bool need_ib, int threads, double* out,
                MaxSeg&& seg_max, PassSeg&& seg_pass) {
    const int64_t nb = (total + kBlock - 1) / kBlock;
    std::vector<double> vals(need_ib ? nb : 0);
    std::vector<int> st(need_ib ? nb : 0);
#pragma omp parallel for schedule(static) num_threads(threads) if (total >= 65536)
    for (int64_t blk = 0; blk < nb; ++blk) {
        const int64_t b0 = blk * kBlock, b1 = total - b0 < kBlock ? total : b0 + kBlock;
        auto segments = [&](auto&& f) {
            for (int64_t i = b0; i < b1;) {
                const int64_t plane = i / hw, end = (plane + 1) * hw < b1 ? (plane + 1) * hw : b1;
                f(i, end - i, plane % c);
                i = end;
            }
        };
        double kscale = 0.0;
        int k = 0;
        if (need_ib) {
            float m = 0.0f;
            int bad = 0;
            segments([&](int64_t i, int64_t len, int64_t ch) { seg_max(i, len, ch, m, bad); });
            st[blk] = bad ? 2 : m == 0.0f ? 1 : 0;
            if (st[blk] == 0) {
                k = sum_k(m, b1 - b0, int_bits);
                kscale = std::ldexp(1.0, -k);
            }
        }
        double acc = 0.0;
        segments([&](int64_t i, int64_t len, int64_t ch) { acc += seg_pass(i, len, ch, kscale); });
        if (need_ib) vals[blk] = st[blk] == 0 ? std::ldexp(acc, k) : 0.0;
    }
    return need_ib ? block_total(st, vals, out) : 0;
}

// One channel of the per-channel fake quantization at scale s (qfx_pc_fq_forward): xc = clamp(x, lo, hi) with
// lo = (qmin - 1) s, hi = (qmax + 1) s, and its mantissa as torch's kernel computes it, (int64_t)nearbyint(xc / s),
// held in float: exact (|xc / s| <= qmax + 1 < 2^23), -0.0 made +0.0 as the integer has no sign of zero, and NaN
// (x86's conversion gives INT64_MIN) made qmin - 1, below the range. qmin, qmax: the mantissa bounds as floats
// (exact, W <= 22).
struct FqChannel {
    float s, inv, qmin, qmax, lo, hi;
    FqChannel(float s_, float qmin_, float qmax_)
        : s(s_), inv(1.0f / s_), qmin(qmin_), qmax(qmax_), lo((qmin_ - 1.0f) * s_), hi((qmax_ + 1.0f) * s_) {}
    float clamp(float x) const { return x < lo ? lo : (x > hi ? hi : x); }
    float mantissa(float xc) const {
        const float q = std::nearbyint(xc * inv) + 0.0f;
        return q == q ? q : qmin - 1.0f;
    }
};

// One element of qfx_pc_fq_backward (see there): dx and the per-element scale gradient ds of x, in float throughout
// (branch-free, so the loops vectorise).
inline void pc_fq_grad(float gi, float xi, const FqChannel& f, float& dx, float& ds) {
    const float small = f.qmin - 0.0f, big = f.qmax - 0.0f;
    const float xc = f.clamp(xi);
    const float q = f.mantissa(xc);
    const bool in_q = (q >= f.qmin) & (q <= f.qmax);
    const float dxc = gi * (in_q ? 1.0f : 0.0f);
    dx = (xi >= f.lo) & (xi <= f.hi) ? dxc : 0.0f;
    const float out = (q < f.qmin ? gi * small : gi * big) * 1.0f;
    const float xf = (q - 0.0f) * f.s;
    const float in = (xf - xc) * f.inv * gi * 1.0f;
    ds = in_q ? in : out;
}

// One channel's run of qfx_pc_fq_forward: y = min(max(q, qmin), qmax) * s, q the mantissa of clamp(x).
QFX_CLONES void pc_fq_plane(const float* x, float* y, int64_t m, FqChannel f) {
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) {
        float q = f.mantissa(f.clamp(x[i]));
        q = q < f.qmin ? f.qmin : (q > f.qmax ? f.qmax : q);
        y[i] = q * f.s;
    }
}

// One channel's run of qfx_pc_fq_backward (pc_fq_grad per element).
QFX_CLONES void pc_fq_grad_plane(const float* g, const float* x, float* dx, float* ds, int64_t m, FqChannel f) {
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) pc_fq_grad(g[i], x[i], f, dx[i], ds[i]);
}

#define QFX_CASE_O(R)                                                                                  \
    switch (overflow) {                                                                                \
        case SAT: f(std::integral_constant<int, R>{}, std::integral_constant<int, SAT>{}); return 0;           \
        case SAT_ZERO: f(std::integral_constant<int, R>{}, std::integral_constant<int, SAT_ZERO>{}); return 0; \
        case SAT_SYM: f(std::integral_constant<int, R>{}, std::integral_constant<int, SAT_SYM>{}); return 0;   \
        case WRAP: f(std::integral_constant<int, R>{}, std::integral_constant<int, WRAP>{}); return 0;         \
        default: return -1;                                                                            \
    }

// Calls f(R, O) with the modes as compile-time constants; -1 for an unknown mode.
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
// kind: 0 float32 -> float32, 1 float32 -> float64, 2 float64 -> float64; relu (kind 0 only): write relu(q), the
// cast followed by ReLU. Returns 0, or -1 for a bad mode.
int qfx_cast(const void* x, void* out, int64_t n, int kind, int rounding, int overflow, int width, int is_signed,
             int frac, double sat_lo, int relu, int threads) {
    auto run = [&](auto params) {
        using T = typename decltype(params)::value_type;
        return dispatch(rounding, overflow, [&](auto r, auto o) {
            constexpr int R = decltype(r)::value, O = decltype(o)::value;
            const One<float> xf{(const float*)x};
            if (kind == 0 && relu) cast_loop<float, T, R, O, true>(xf, (float*)out, n, params.p, threads);
            else if (kind == 0) cast_loop<float, T, R, O, false>(xf, (float*)out, n, params.p, threads);
            else if (kind == 1) cast_loop<double, T, R, O, false>(xf, (double*)out, n, params.p, threads);
            else cast_loop<double, T, R, O, false>(One<double>{(const double*)x}, (double*)out, n, params.p, threads);
        });
    };
    if (kind != 2 && 0 <= frac && frac <= 100 && width <= 22)  // float32 compute
        return run(Boxed<float>{make_params<float>(width, is_signed, frac, overflow, sat_lo)});
    return run(Boxed<double>{make_params<double>(width, is_signed, frac, overflow, sat_lo)});
}

// qfx_cast of float32 x (N, C, HW) to float32 out (kind 0) with, per channel, the sums of the cast's mantissas
// q and of q * q over all (n, hw): sums[ch] and sums[c + ch], exact in double (the caller keeps
// N * HW * 2^(2W - 2) <= 2^53; per-plane parts summed in plane order). The statistics of a BatchNorm fed by this
// cast (qfx/nn/norm.py). Returns 0, or -1 for a bad mode.
int qfx_cast_channel_sums(const float* x, float* out, int64_t n, int64_t c, int64_t hw, int rounding, int overflow,
                          int width, int is_signed, int frac, double sat_lo, int threads, double* sums) {
    std::vector<double> part(2 * n * c);
    auto run = [&](auto params) {
        using T = typename decltype(params)::value_type;
        return dispatch(rounding, overflow, [&](auto r, auto o) {
            constexpr int R = decltype(r)::value, O = decltype(o)::value;
#pragma omp parallel for schedule(static) num_threads(threads) if (n * c * hw >= 65536)
            for (int64_t pl = 0; pl < n * c; ++pl)
                cast_sums_plane<T, R, O>(x + pl * hw, out + pl * hw, hw, params.p, &part[2 * pl]);
        });
    };
    int rc = 0 <= frac && frac <= 100 && width <= 22
                 ? run(Boxed<float>{make_params<float>(width, is_signed, frac, overflow, sat_lo)})
                 : run(Boxed<double>{make_params<double>(width, is_signed, frac, overflow, sat_lo)});
    for (int64_t ch = 0; ch < c; ++ch) {
        double s1 = 0.0, s2 = 0.0;
        for (int64_t i = 0; i < n; ++i) {
            s1 += part[2 * (i * c + ch)];
            s2 += part[2 * (i * c + ch) + 1];
        }
        sums[ch] = s1;
        sums[c + ch] = s2;
    }
    return rc;
}

// The input gradient of a training BatchNorm (qfx/nn/norm.py) in one pass over (N, C, HW) float32 tensors:
// dx = (x * B_c + C_c) + g * a_c, each operation rounded in float32 in that order (no contraction).
void qfx_bn_dx(const float* g, const float* x, const float* a, const float* B, const float* C, float* dx, int64_t n,
               int64_t c, int64_t hw, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (n * c * hw >= 65536)
    for (int64_t p = 0; p < n * c; ++p) {
        int64_t ch = p % c;
        bn_dx_plane(g + p * hw, x + p * hw, dx + p * hw, hw, a[ch], B[ch], C[ch]);
    }
}

// qfx_bn_dx followed by the training backward of the cast x = cast(y) that feeds the BatchNorm (qfx_cast_backward
// on dx, x, y: the same values, without writing dx): gy, and with need_ib the binary-point gradient in *ib_grad
// (as there). One pass over g, x and y (each block read twice with need_ib, the second time from cache).
void qfx_bn_dx_cast_backward(const float* g, const float* x, const float* y, const float* a, const float* B,
                             const float* C, float* gy, int64_t n, int64_t c, int64_t hw, float lo, float hi,
                             int int_bits, int need_ib, int threads, float* ib_grad) {
    double total = 0.0;
    const int status = blocked_sum(
        n * c * hw, hw, c, int_bits, need_ib, threads, &total,
        [&](int64_t i, int64_t len, int64_t ch, float& m, int& bad) {
            float pm;
            int pb;
            bn_dx_cast_plane<true>(g + i, x + i, y + i, nullptr, len, a[ch], B[ch], C[ch], lo, hi, Grid<true>{0.0f},
                                   &pm, &pb);
            m = pm > m ? pm : m;
            bad |= pb;
        },
        [&](int64_t i, int64_t len, int64_t ch, double kscale) {
            return with_grids(
                [&](auto k, auto, auto) {
                    return bn_dx_cast_plane<false>(g + i, x + i, y + i, gy + i, len, a[ch], B[ch], C[ch], lo, hi, k,
                                                   nullptr, nullptr);
                },
                kscale);
        });
    if (need_ib) *ib_grad = ib_grad_of(status, total);
}

// BatchNorm's training output in one pass over (N, C, HW) float32 x: q = cast(x * a_c + b_c) (qfx_cast's
// arithmetic on the float32 z, float32 out; relu: relu(q)). Returns 0, or -1 for a bad mode.
int qfx_affine_cast(const float* x, const float* a, const float* b, float* q, int64_t n, int64_t c, int64_t hw,
                    int rounding, int overflow, int width, int is_signed, int frac, double sat_lo, int relu,
                    int threads) {
    auto run = [&](auto params) {
        using T = typename decltype(params)::value_type;
        return dispatch(rounding, overflow, [&](auto r, auto o) {
            constexpr int R = decltype(r)::value, O = decltype(o)::value;
            auto plane = relu ? affine_cast_plane<T, R, O, true> : affine_cast_plane<T, R, O, false>;
#pragma omp parallel for schedule(static) num_threads(threads) if (n * c * hw >= 65536)
            for (int64_t p = 0; p < n * c; ++p) plane(x + p * hw, q + p * hw, hw, a[p % c], b[p % c], params.p);
        });
    };
    if (0 <= frac && frac <= 100 && width <= 22)
        return run(Boxed<float>{make_params<float>(width, is_signed, frac, overflow, sat_lo)});
    return run(Boxed<double>{make_params<double>(width, is_signed, frac, overflow, sat_lo)});
}

// The training backward of a float32 per-tensor cast of n elements (see the file comment and grad_pass); relu: the
// cast was followed by ReLU (q its output). With need_ib the binary-point gradient, ln2 times the blocked sum's
// total (the file comment), in *ib_grad as float32: 0 when every g' is 0, NaN when a g' is not finite
// (ib_grad_of). With b (qfx_add_cast's backward) the cast's input is the float32 sum x + b, recomputed. One pass
// over memory (each block read twice with need_ib, the second time from cache).
void qfx_cast_backward(const float* g, const float* x, const float* q, float* gx, int64_t n, float lo, float hi,
                       int int_bits, int need_ib, int relu, int threads, float* ib_grad, const float* b) {
    double total = 0.0;
    auto run = [&](auto relu_c, auto ib_c, auto src) {
        constexpr bool RL = decltype(relu_c)::value, IB = decltype(ib_c)::value;
        return blocked_sum(
            n, n, 1, int_bits, IB, threads, &total,
            [&](int64_t i, int64_t len, int64_t, float& m, int& bad) { abs_max_seg<RL>(g + i, q + i, len, m, bad); },
            [&](int64_t i, int64_t len, int64_t, double kscale) {
                return with_grids(
                    [&](auto k, auto, auto) {
                        return grad_pass<RL, IB>(g + i, src.from(i), q + i, gx + i, len, lo, hi, k);
                    },
                    kscale);
            });
    };
    auto by_source = [&](auto relu_c, auto ib_c) {
        return b == nullptr ? run(relu_c, ib_c, One<float>{x}) : run(relu_c, ib_c, SumOf{x, b});
    };
    using T = std::true_type;
    using F = std::false_type;
    if (need_ib) {
        const int status = relu ? by_source(T{}, T{}) : by_source(F{}, T{});  // before reading total
        *ib_grad = ib_grad_of(status, total);
    } else {
        relu ? by_source(T{}, F{}) : by_source(F{}, F{});
    }
}

// The cast of a residual addition a + b (float32 tensors of n elements, the sum rounded in float32 as torch's
// add), with relu torch.relu of it, in one pass: qfx_cast of the sum without writing it. Float compute only
// (0 <= frac <= 100, width <= 22). Returns 0, or -1 for a bad mode or type.
int qfx_add_cast(const float* a, const float* b, float* out, int64_t n, int rounding, int overflow, int width,
                 int is_signed, int frac, double sat_lo, int relu, int threads) {
    if (!(0 <= frac && frac <= 100 && width <= 22)) return -1;
    const Params<float> p = make_params<float>(width, is_signed, frac, overflow, sat_lo);
    return dispatch(rounding, overflow, [&](auto r, auto o) {
        constexpr int R = decltype(r)::value, O = decltype(o)::value;
        if (relu) cast_loop<float, float, R, O, true>(SumOf{a, b}, out, n, p, threads);
        else cast_loop<float, float, R, O, false>(SumOf{a, b}, out, n, p, threads);
    });
}

// BatchNorm's output cast backward (qfx_cast_backward's on z = affine_of(x, a_c, b_c), tensors (n, c, hw): gz, and
// with need_ib the binary-point gradient in *ib_grad as there) together with its affine map's parameter
// gradients da_c = sum gz * x and
// db_c = sum gz over channel c, as exact blocked sums (quantize.bn_param_grads): per block of kBlock elements,
// with m = max |g'| and mx = max |x| over the block, the terms round(float32(gz * x) * 2^-ka) and
// round(gz * 2^-kb), ka = sum_k(m, L_b, e(mx)), kb = sum_k(m, L_b, 0) (each term at most 2^(52 - ceil(log2 L_b)):
// exact sums per block and channel), the grid 0 where the block's g' are all 0 or one is not finite (and for
// ka where an x is not finite); da_c and db_c add the blocks' sums * 2^k in block order in float64, then are
// rounded to float32.
void qfx_bn_cast_backward(const float* g, const float* x, const float* a, const float* b, const float* q, float* gz,
                          int64_t n, int64_t c, int64_t hw, float lo, float hi, int int_bits, int need_ib, int relu,
                          int threads, float* ib_grad, float* da, float* db) {
    const int64_t total = n * c * hw, nb = (total + kBlock - 1) / kBlock;
    std::vector<double> ibv(nb), sa(nb * c), sb(nb * c);
    std::vector<int> st(nb);
#pragma omp parallel for schedule(static) num_threads(threads) if (total >= 65536)
    for (int64_t blk = 0; blk < nb; ++blk) {
        const int64_t b0 = blk * kBlock, b1 = total - b0 < kBlock ? total : b0 + kBlock, len = b1 - b0;
        auto segments = [&](auto&& f) {
            for (int64_t i = b0; i < b1;) {
                const int64_t plane = i / hw, end = (plane + 1) * hw < b1 ? (plane + 1) * hw : b1;
                f(i, end - i, plane % c);
                i = end;
            }
        };
        float mg = 0.0f, mx = 0.0f;
        int badg = 0, badx = 0;
        segments([&](int64_t i, int64_t m, int64_t) {
            relu ? bn_max_seg<true>(g + i, x + i, q + i, m, mg, badg, mx, badx)
                 : bn_max_seg<false>(g + i, x + i, q + i, m, mg, badg, mx, badx);
        });
        st[blk] = badg ? 2 : mg == 0.0f ? 1 : 0;
        int k = 0, ka = 0, kb = 0;
        double ks = 0.0, kas = 0.0, kbs = 0.0;
        if (st[blk] == 0) {
            k = sum_k(mg, len, int_bits);
            kb = sum_k(mg, len, 0);
            ks = std::ldexp(1.0, -k);
            kbs = std::ldexp(1.0, -kb);
            if (!badx && mx > 0.0f) {
                int ex;
                std::frexp((double)mx, &ex);
                ka = sum_k(mg, len, ex);
                kas = std::ldexp(1.0, -ka);
            }
        }
        double* pa = &sa[blk * c];
        double* pb = &sb[blk * c];
        double acc = 0.0;
        segments([&](int64_t i, int64_t m, int64_t ch) {
            BnSums r = with_grids(
                [&](auto k, auto ka_, auto kb_) {
                    return relu ? bn_grad_seg<true>(g + i, x + i, q + i, gz + i, m, a[ch], b[ch], lo, hi, k, ka_, kb_)
                                : bn_grad_seg<false>(g + i, x + i, q + i, gz + i, m, a[ch], b[ch], lo, hi, k, ka_, kb_);
                },
                ks, kas, kbs);
            acc += r.ib;
            pa[ch] += r.da;
            pb[ch] += r.db;
        });
        ibv[blk] = st[blk] == 0 ? std::ldexp(acc, k) : 0.0;
        for (int64_t ch = 0; ch < c; ++ch) {
            pa[ch] = std::ldexp(pa[ch], ka);
            pb[ch] = std::ldexp(pb[ch], kb);
        }
    }
    for (int64_t ch = 0; ch < c; ++ch) {
        double ta = 0.0, tb = 0.0;
        for (int64_t blk = 0; blk < nb; ++blk) {
            ta += sa[blk * c + ch];
            tb += sb[blk * c + ch];
        }
        da[ch] = (float)ta;
        db[ch] = (float)tb;
    }
    if (need_ib) {
        double total = 0.0;
        const int status = block_total(st, ibv, &total);
        *ib_grad = ib_grad_of(status, total);
    }
}

// Per-channel fake quantization, the per-channel training cast of quantizer.py (AP_RND_CONV, AP_SAT or AP_SAT_SYM,
// W <= 22; torch's learnable fake-quant kernels with zero point 0 there, whose values and gradients these are,
// element by element). x: float32 (outer, c, inner), the channel axis in the middle; theta: the [c] integer-bit
// parameters. Per channel, in float32: I = theta + (floor(theta + 0.5) - theta) (the straight-through round's
// value), s = 2^(I - W) (scale_out), lo = (qmin - 1) s, hi = (qmax + 1) s; xc = clamp(x, lo, hi) (keeps the
// integer conversion in range; still outside, so nothing else changes).
// Forward: y = min(max(nearbyint(xc / s), qmin), qmax) * s (exact: s is a power of two).
void qfx_pc_fq_forward(const float* x, const float* theta, float* y, float* scale_out, int64_t outer, int64_t c,
                       int64_t inner, int width, int64_t qmin, int64_t qmax) {
    for (int64_t ch = 0; ch < c; ++ch) {
        float p = theta[ch];
        float ib = p + (std::floor(p + 0.5f) - p);
        scale_out[ch] = std::ldexp(1.0f, (int)ib - width);
    }
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t ch = 0; ch < c; ++ch)
            pc_fq_plane(x + (o * c + ch) * inner, y + (o * c + ch) * inner, inner,
                        FqChannel(scale_out[ch], (float)qmin, (float)qmax));
}

// Its backward, element by element as torch computes it (the fake-quant backward on xc, then the clamp's):
// dx = g * (qmin <= q <= qmax) where lo <= x <= hi (q = nearbyint(xc / s)), else +0; dscale (per element, summed
// per channel by the caller as torch does) = (q * s - xc) / s * g inside [qmin, qmax], else g * qmin or g * qmax.
void qfx_pc_fq_backward(const float* g, const float* x, const float* scale, float* dx, float* dscale, int64_t outer,
                        int64_t c, int64_t inner, int64_t qmin, int64_t qmax) {
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t ch = 0; ch < c; ++ch) {
            const int64_t base = (o * c + ch) * inner;
            pc_fq_grad_plane(g + base, x + base, dx + base, dscale + base, inner,
                             FqChannel(scale[ch], (float)qmin, (float)qmax));
        }
}

// BatchNorm's per-channel parameters in training (qfx/nn/norm.py _OneNode), float32 [c], every operation rounded
// in float32 as torch's: with sums (float64 [2c], the grid statistics' mantissa sums over n values per channel on
// the grid 2^-frac, n * S2 < 2^53 for every channel, else it returns -1 and writes nothing), mean = S1 / n * 2^-frac
// and var = (n S2 - S1^2) / n^2 * 2^-2frac in double, then float32; invstd = 1 / sqrt(var + eps); the running
// statistics r = r * (1 - momentum) + v * momentum with the unbiased variance ((n S2 - S1^2) / (n (n - 1))
// * 2^-2frac); without sums, mean and invstd are inputs. Then a0 = weight * invstd, b0 = bias - mean * a0 and their
// per-channel casts (qfx_pc_fq_forward: a with scale sa, b with scale sb). Returns 0.
int qfx_bn_param_forward(const double* sums, int64_t n, int frac, double momentum, double eps, float* running_mean,
                         float* running_var, float* mean, float* invstd, const float* weight, const float* bias,
                         const float* th_a, const float* th_b, int wa, int64_t qmin_a, int64_t qmax_a, int wb,
                         int64_t qmin_b, int64_t qmax_b, int64_t c, float* a0, float* b0, float* a, float* b,
                         float* sa, float* sb) {
    if (sums != nullptr) {
        if (n < 2) return -1;
        for (int64_t ch = 0; ch < c; ++ch)
            if (!(sums[c + ch] * (double)n < 9007199254740992.0)) return -1;
        const double f1 = std::ldexp(1.0, -frac), f2 = std::ldexp(1.0, -2 * frac);
        const float keep = (float)(1.0 - momentum), mom = (float)momentum;
        for (int64_t ch = 0; ch < c; ++ch) {
            const double s1 = sums[ch], s2 = sums[c + ch], num = s2 * (double)n - s1 * s1;
            mean[ch] = (float)((s1 / (double)n) * f1);
            const float var = (float)((num / (double)(n * n)) * f2);
            const float unbiased = (float)((num / (double)(n * (n - 1))) * f2);
            invstd[ch] = 1.0f / std::sqrt(var + (float)eps);
            float t = running_mean[ch] * keep;
            running_mean[ch] = t + mean[ch] * mom;
            t = running_var[ch] * keep;
            running_var[ch] = t + unbiased * mom;
        }
    }
    for (int64_t ch = 0; ch < c; ++ch) {
        a0[ch] = weight[ch] * invstd[ch];
        const float t = mean[ch] * a0[ch];
        b0[ch] = bias[ch] - t;
    }
    qfx_pc_fq_forward(a0, th_a, a, sa, 1, c, 1, wa, qmin_a, qmax_a);
    qfx_pc_fq_forward(b0, th_b, b, sb, 1, c, 1, wb, qmin_b, qmax_b);
    return 0;
}

// The backward of qfx_bn_param_forward's chain from da = dL/da and db = dL/db (float32 [c]), as torch computes it
// through the same operations: db0, the shift's dtheta_b, then da0, the scale's dtheta_a (qfx_pc_fq_backward; dtheta
// = (0 + ds) * s * ln2), g_mean = -db0 * a0, g_a0 = -db0 * mean + da0, dweight = g_a0 * invstd, dbias = db0; with
// need_x also the statistics' input-gradient coefficients B = g_var * (2 / n), C = g_mean / n - B * mean,
// g_var = g_invstd * invstd^3 * -0.5, g_invstd = g_a0 * weight (+0 on g_mean and g_invstd, as the composed path).
void qfx_bn_param_backward(const float* da, const float* db, const float* a0, const float* b0, const float* sa,
                           const float* sb, int64_t qmin_a, int64_t qmax_a, int64_t qmin_b, int64_t qmax_b,
                           const float* weight, const float* mean, const float* invstd, int64_t c, int64_t n,
                           int need_x, float* dweight, float* dbias, float* dth_a, float* dth_b, float* coef_b,
                           float* coef_c) {
    const float ln2 = (float)kLn2, two_n = (float)(2.0 / (double)n), nf = (float)n;
    for (int64_t ch = 0; ch < c; ++ch) {
        float db0, dsb, da0, dsa;
        pc_fq_grad(db[ch], b0[ch], FqChannel(sb[ch], (float)qmin_b, (float)qmax_b), db0, dsb);
        pc_fq_grad(da[ch], a0[ch], FqChannel(sa[ch], (float)qmin_a, (float)qmax_a), da0, dsa);
        dth_b[ch] = ((0.0f + dsb) * sb[ch]) * ln2;
        dth_a[ch] = ((0.0f + dsa) * sa[ch]) * ln2;
        const float neg = -db0;
        float g_mean = neg * a0[ch];
        const float t = neg * mean[ch];
        const float g_a0 = t + da0;
        dweight[ch] = g_a0 * invstd[ch];
        dbias[ch] = db0;
        if (need_x) {
            g_mean = g_mean + 0.0f;
            const float g_invstd = g_a0 * weight[ch] + 0.0f;
            const float i2 = invstd[ch] * invstd[ch], p3 = i2 * invstd[ch];
            const float g_var = (g_invstd * p3) * -0.5f;
            const float bb = g_var * two_n;
            const float u = g_mean / nf, v = bb * mean[ch];
            coef_b[ch] = bb;
            coef_c[ch] = u - v;
        }
    }
}

// Max pooling of an (N*C, H, W) float32 (in_f32) or float64 tensor into float64, every window clipped to the
// input (padding never wins), NaN propagating, ties keeping the first element in row-major window order: the
// values torch's max_pool2d gives.
void qfx_maxpool2d(const void* x, double* out, int in_f32, int64_t planes, int h, int w, int kh, int kw, int sh,
                   int sw, int ph, int pw, int oh, int ow, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (planes * oh * ow >= 65536)
    for (int64_t c = 0; c < planes; ++c) {
        const float* xf = (const float*)x + c * h * w;
        const double* xd = (const double*)x + c * h * w;
        double* o = out + c * oh * ow;
        for (int i = 0; i < oh; ++i) {
            int h0 = i * sh - ph, h1 = h0 + kh;
            h0 = h0 < 0 ? 0 : h0;
            h1 = h1 > h ? h : h1;
            for (int j = 0; j < ow; ++j) {
                int w0 = j * sw - pw, w1 = w0 + kw;
                w0 = w0 < 0 ? 0 : w0;
                w1 = w1 > w ? w : w1;
                double m = -INFINITY;
                for (int a = h0; a < h1; ++a)
                    for (int b = w0; b < w1; ++b) {
                        double v = in_f32 ? (double)xf[a * w + b] : xd[a * w + b];
                        if (v > m || std::isnan(v)) m = v;
                    }
                o[i * ow + j] = m;
            }
        }
    }
}

}  // extern "C"
