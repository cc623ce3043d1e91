"""hls_lib kernels against an independent integer reference of docs/semantics.md.

Every kernel is instantiated in a small C++ driver (generated below), compiled
once with toolchain.compile_cpp (cached under build/hls_lib_tests by source
hash) and fed random raw mantissas (plus the extremes of each type) on stdin;
it prints raw results, compared by exact equality with numpy integer code
that follows the contract sentence by sentence (qfx.requantize_raw is the cast).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from qfx_compile.backend import toolchain
from qfx_compile.qfx import FixedType, requantize_raw

pytestmark = pytest.mark.xdist_group("hls_lib")

ROOT = Path(__file__).resolve().parents[1]
HLS_LIB = ROOT / "hls_lib"
BUILD = ROOT / "build" / "hls_lib_tests"
WARN = ["-Wall", "-Wextra", "-Werror"]

ROUNDINGS = ["AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV"]
OVERFLOWS = ["AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM"]


def T(text: str) -> FixedType:
    return FixedType.parse(text)


def cast(m, src_frac: int, t: FixedType) -> np.ndarray:
    return np.asarray(requantize_raw(np.asarray(m, dtype=np.int64), src_frac, t), dtype=np.int64)


def rand_raw(t: FixedType, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random mantissas of t, the first ones being its extremes and their neighbours."""
    edges = [t.raw_min, t.raw_max, 0, 1, t.raw_max - 1, t.raw_min + 1] + ([-1] if t.signed else [])
    v = rng.integers(t.raw_min, t.raw_max + 1, size=n, dtype=np.int64)
    k = min(n, len(edges))
    v[:k] = edges[:k]
    rng.shuffle(v)
    return v


def acc_type(lo: int, hi: int, frac: int) -> FixedType:
    return FixedType.for_raw_range(min(lo, 0), max(hi, 0), frac, signed=True)


def raw_ctype(t: FixedType) -> str:
    for bits in (8, 16, 32, 64):
        if t.width <= bits - (0 if t.signed else 1):
            return f"int{bits}_t"
    raise ValueError(t)


# ---------------------------------------------------------------- driver generation
@dataclasses.dataclass
class Case:
    """One kernel instantiation: config struct, arrays, input streams, output stream."""
    name: str
    config: str                       # body of `struct cfg { ... };`
    call: str                         # C++ statement using in0.., out, arrays by name
    arrays: list                      # [(name, ctype, np.ndarray)]
    inputs: list                      # [(cpp type, per-sample np.ndarray [samples, n])]
    out_type: str                     # cpp type of the output stream
    n_out: int                        # outputs per sample
    out_fields: str = "raw"           # "raw" or "axis"

    def cpp(self) -> str:
        lines = [f"namespace case_{self.name} {{", "struct cfg {", self.config, "};", "static int run() {"]
        for name, ctype, vals in self.arrays:
            lines.append(f"    static {ctype} {name}[{max(1, vals.size)}];")
            lines.append(f"    for (unsigned i = 0; i < {vals.size}u; i++) {name}[i] = ({ctype})next();")
        lines.append("    const long long samples = next();")
        lines.append("    for (long long s = 0; s < samples; s++) {")
        for k, (ctype, vals) in enumerate(self.inputs):
            lines.append(f"        hls::stream<{ctype} > in{k};")
            lines.append(f"        for (unsigned i = 0; i < {vals.shape[1]}u; i++) "
                         f"in{k}.write(qfx::from_raw<{ctype} >(next()));")
        lines.append(f"        hls::stream<{self.out_type} > out;")
        lines.append(f"        {self.call};")
        if self.out_fields == "raw":
            lines.append(f"        for (unsigned i = 0; i < {self.n_out}u; i++) "
                         f"std::printf(\"%lld \", (long long)qfx::raw_of(out.read()).to_int64());")
        else:
            lines.append(f"        for (unsigned i = 0; i < {self.n_out}u; i++) {{ {self.out_type} w = out.read(); "
                         "std::printf(\"%lld %lld %lld %lld \", (long long)w.data.to_int64(), "
                         "(long long)w.keep.to_int64(), (long long)w.strb.to_int64(), "
                         "(long long)w.last.to_int64()); }")
        checks = " || ".join([f"!in{k}.empty()" for k in range(len(self.inputs))] + ["!out.empty()"])
        lines.append(f"        if ({checks}) {{ std::printf(\"LEFTOVER\\n\"); return 1; }}")
        lines.append("        std::printf(\"\\n\");")
        lines.append("    }")
        lines.append("    return 0;")
        lines.append("}")
        lines.append("}  // namespace")
        return "\n".join(lines)

    def stdin(self) -> str:
        parts = [vals.ravel() for _, _, vals in self.arrays]
        samples = self.inputs[0][1].shape[0]
        parts.append(np.array([samples]))
        for s in range(samples):
            for _, vals in self.inputs:
                parts.append(vals[s])
        return " ".join(str(int(v)) for p in parts for v in p) + "\n"


def driver_source(cases: list[Case]) -> str:
    head = ["// generated by tests/test_hls_lib.py", "#include <cstdio>", "#include <cstring>",
            "#include <stdint.h>", '#include "qfx.h"',
            "static long long next() { long long v = 0; if (std::scanf(\"%lld\", &v) != 1) v = 0; return v; }"]
    body = [c.cpp() for c in cases]
    disp = ["int main(int argc, char** argv) {", "    if (argc < 2) return 2;"]
    for c in cases:
        disp.append(f"    if (!std::strcmp(argv[1], \"{c.name}\")) return case_{c.name}::run();")
    disp += ["    return 3;", "}"]
    return "\n".join(head + body + disp) + "\n"


def lib_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(HLS_LIB.glob("*.h")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def build(tag: str, cases: list[Case], flags: tuple = ()) -> Path:
    """Compile the driver for `cases` (cached by the hash of driver + headers + flags)."""
    src = driver_source(cases)
    key = hashlib.sha256((src + lib_hash() + " ".join(flags)).encode()).hexdigest()[:16]
    BUILD.mkdir(parents=True, exist_ok=True)
    exe = BUILD / f"{tag}-{key}"
    if exe.exists():
        return exe
    cpp = BUILD / f"{tag}-{key}.cpp"
    cpp.write_text(src)
    tmp = BUILD / f"{tag}-{key}.{os.getpid()}.tmp"
    t0 = time.time()
    ap = str(toolchain.find_ap_types())
    toolchain.compile_cpp([cpp], tmp, include_dirs=[HLS_LIB], opt="-O1", extra_flags=["-isystem", ap, "-Wall", "-Wextra", *flags])
    os.replace(tmp, exe)
    print(f"compiled {tag} in {time.time() - t0:.1f} s")
    return exe


def run_case(exe: Path, case: Case) -> np.ndarray:
    proc = subprocess.run([str(exe), case.name], input=case.stdin(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{case.name}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "WARNING" not in proc.stderr, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.strip().splitlines()]
    return np.array([[int(v) for v in r] for r in rows], dtype=np.int64)


def check(exe: Path, case: Case, expected: np.ndarray) -> None:
    got = run_case(exe, case)
    expected = np.asarray(expected, dtype=np.int64).reshape(got.shape[0], -1)
    assert got.shape == expected.shape, f"{case.name}: shape {got.shape} != {expected.shape}"
    bad = np.argwhere(got != expected)
    assert bad.size == 0, (f"{case.name}: {len(bad)} mismatches, first (sample, index, got, expected): " +
                           str([(int(s), int(i), int(got[s, i]), int(expected[s, i])) for s, i in bad[:8]]))


# ---------------------------------------------------------------- integer references
def pad_hwc(x: np.ndarray, pads) -> np.ndarray:
    top, bottom, left, right = pads
    return np.pad(x, ((top, bottom), (left, right), (0, 0)))


def ref_dense(x, w, b, tx, tw, tb, tacc, tout):
    """cast(sum_i x_i w_ji + b_j, out): exact sum in Python ints on the grid of the products and the bias."""
    f = tx.frac_bits + tw.frac_bits
    fa = max(f, tb.frac_bits)
    xo, wo, bo = (np.array(a.tolist(), dtype=object) for a in (x, w, b))
    acc = (xo @ wo.T) * (1 << (fa - f)) + bo * (1 << (fa - tb.frac_bits))
    return np.asarray(requantize_raw(acc, fa, tout), dtype=np.int64)


def ref_conv(x, w, b, tx, tw, tb, tout, stride, pads):
    """x [H, W, C], w [F, KH, KW, C]: cast(sum x_pad * w + b, out) per output pixel."""
    f = tx.frac_bits + tw.frac_bits
    fa = max(f, tb.frac_bits)  # an exact common grid of products and bias
    xp = pad_hwc(x, pads)
    nf, kh, kw, _ = w.shape
    oh = (xp.shape[0] - kh) // stride[0] + 1
    ow = (xp.shape[1] - kw) // stride[1] + 1
    out = np.zeros((oh, ow, nf), dtype=np.int64)
    for oy in range(oh):
        for ox in range(ow):
            win = xp[oy * stride[0]:oy * stride[0] + kh, ox * stride[1]:ox * stride[1] + kw, :]
            out[oy, ox] = (np.tensordot(w, win, axes=([1, 2, 3], [0, 1, 2])) << (fa - f)) + (b << (fa - tb.frac_bits))
    return cast(out, fa, tout)


def recip_raw(n: int, tr: FixedType) -> int:
    """Mantissa of r = cast(1/N, ap_ufixed<R, 1-p, AP_RND_CONV, AP_SAT>), exact rational rounding."""
    q = round(Fraction(1 << tr.frac_bits, n))  # Fraction.__round__: half to even
    return min(q, tr.raw_max)


def recip_type(n: int, bits: int) -> FixedType:
    p = n.bit_length() - 1
    return FixedType(bits, 1 - p, False, "AP_RND_CONV", "AP_SAT")


def windows(x, k, stride):
    h, w, _ = x.shape
    oh, ow = (h - k[0]) // stride[0] + 1, (w - k[1]) // stride[1] + 1
    for oy in range(oh):
        for ox in range(ow):
            yield x[oy * stride[0]:oy * stride[0] + k[0], ox * stride[1]:ox * stride[1] + k[1], :]


def ref_avg(s, n, tx, tr, tout):
    """cast(S * r, out), S the exact window sum (frac Fx), r the rounded reciprocal."""
    return cast(np.asarray(s, dtype=np.int64) * recip_raw(n, tr), tx.frac_bits + tr.frac_bits, tout)


def csd(m: int) -> list[tuple[int, int]]:
    """Canonical signed-digit terms (sign, shift) of an integer mantissa, by exponent.

    Computed with the closed form of the non-adjacent form (h = |m| >> 1, t = |m| + h,
    c = h ^ t: digit +1 where t & c, -1 where h & c), not with the digit loop of
    ``fixed.digits.digits_of`` that the compiler uses.
    """
    sign, a = (-1 if m < 0 else 1), abs(int(m))
    h = a >> 1
    t = a + h
    c = h ^ t
    terms = [(sign, e) for e in range(c.bit_length()) if (t & c) >> e & 1]
    terms += [(-sign, e) for e in range(c.bit_length()) if (h & c) >> e & 1]
    return sorted(terms, key=lambda se: se[1])


def khot_weights(tw: FixedType, shape, k: int, rng) -> np.ndarray:
    """Random mantissas of tw with at most k CSD digits, including the extremes when they qualify."""
    out = np.zeros(int(np.prod(shape)), dtype=np.int64)
    cands = [m for m in (tw.raw_min, tw.raw_max, -1, 1, 0) if len(csd(m)) <= k]
    for i in range(out.size):
        if i < len(cands):
            out[i] = cands[i]
            continue
        while True:
            m = int(rng.integers(tw.raw_min, tw.raw_max + 1))
            if len(csd(m)) <= k:
                out[i] = m
                break
    rng.shuffle(out)
    return out.reshape(shape)


def terms_arrays(w: np.ndarray, k: int):
    sign = np.zeros(w.shape + (k,), dtype=np.int64)
    shift = np.zeros(w.shape + (k,), dtype=np.int64)
    for idx in np.ndindex(w.shape):
        for j, (s, e) in enumerate(csd(int(w[idx]))):
            sign[idx + (j,)] = s
            shift[idx + (j,)] = e
    return sign, shift


# ---------------------------------------------------------------- case builders
def fold_fields(reuse=None, mul_impl=None) -> str:
    """The optional folding fields (absent = the kernel's defaults reuse 1, mul_impl 0)."""
    text = ""
    if reuse is not None:
        text += f"\nstatic const unsigned reuse = {reuse};"
    if mul_impl is not None:
        text += f"\nstatic const int mul_impl = {mul_impl};"
    return text


def dense_case(name, rng, n_in, n_out, tx, tw, tb, tout, samples=12, shiftadd_k=0, reuse=None, mul_impl=None,
               acc_frac=None, coarse=0):
    """``coarse=k``: every weight mantissa a multiple of 2**k, so acc_t may have down to F_x + F_w - k frac bits."""
    if shiftadd_k:
        w = khot_weights(tw, (n_out, n_in), shiftadd_k, rng)
    else:
        w = rand_raw(tw, n_out * n_in, rng).reshape(n_out, n_in)
    if coarse:
        w = np.clip((w >> coarse) << coarse, tw.raw_min, tw.raw_max)
    b = rand_raw(tb, n_out, rng)
    x = np.stack([rand_raw(tx, n_in, rng) for _ in range(samples)])
    f = tx.frac_bits + tw.frac_bits
    fa = f if acc_frac is None else acc_frac  # acc_t's frac: > f exercises the product -> acc grid shift
    assert f - coarse <= fa and tb.frac_bits <= fa
    wo, xmin, xmax = np.array(w.tolist(), dtype=object), tx.raw_min, tx.raw_max
    hi = (np.where(wo > 0, wo * xmax, wo * xmin).sum(1) * (1 << max(0, fa - f))) // (1 << max(0, f - fa))
    lo = (np.where(wo > 0, wo * xmin, wo * xmax).sum(1) * (1 << max(0, fa - f))) // (1 << max(0, f - fa))
    bb = b << (fa - tb.frac_bits)
    tacc = acc_type(int((lo + bb).min()), int((hi + bb).max()), fa)
    cfg = (f"typedef {tx.cpp()} in_t; typedef {tw.cpp()} w_t; typedef {tb.cpp()} b_t;\n"
           f"typedef {tacc.cpp()} acc_t; typedef {tout.cpp()} out_t;\n"
           f"typedef {raw_ctype(tw)} w_raw_t; typedef {raw_ctype(tb)} b_raw_t;\n"
           f"static const unsigned n_in = {n_in}, n_out = {n_out}, n_terms = {max(1, shiftadd_k)};" +
           fold_fields(reuse, mul_impl))
    expected = ref_dense(x, w, b, tx, tw, tb, tacc, tout)
    if shiftadd_k:
        sign, shift = terms_arrays(w, shiftadd_k)
        arrays = [("sg", "int8_t", sign), ("sh", "int8_t", shift), ("b", raw_ctype(tb), b)]
        call = "qfx::dense_shiftadd<cfg>(in0, out, sg, sh, b)"
    else:
        arrays = [("w", raw_ctype(tw), w), ("b", raw_ctype(tb), b)]
        call = "qfx::dense<cfg>(in0, out, w, b)"
    case = Case(name, cfg, call, arrays, [(tx.cpp(), x)], tout.cpp(), n_out)
    return case, expected


def conv_case(name, rng, hw, c, nf, k, stride, pads, tx, tw, tb, tout, samples=3, shiftadd_k=0, reuse=None,
              mul_impl=None, acc_frac=None):
    h, wd = hw
    if shiftadd_k:
        w = khot_weights(tw, (nf, k[0], k[1], c), shiftadd_k, rng)
    else:
        w = rand_raw(tw, nf * k[0] * k[1] * c, rng).reshape(nf, k[0], k[1], c)
    b = rand_raw(tb, nf, rng)
    x = np.stack([rand_raw(tx, h * wd * c, rng) for _ in range(samples)])
    f = tx.frac_bits + tw.frac_bits
    fa = f if acc_frac is None else acc_frac
    assert f <= fa and tb.frac_bits <= fa
    hi = (np.where(w > 0, w * tx.raw_max, w * tx.raw_min).reshape(nf, -1).sum(1) << (fa - f)) + (b << (fa - tb.frac_bits))
    lo = (np.where(w > 0, w * tx.raw_min, w * tx.raw_max).reshape(nf, -1).sum(1) << (fa - f)) + (b << (fa - tb.frac_bits))
    tacc = acc_type(int(lo.min()), int(hi.max()), fa)
    oh = (h + pads[0] + pads[1] - k[0]) // stride[0] + 1
    ow = (wd + pads[2] + pads[3] - k[1]) // stride[1] + 1
    cfg = (f"typedef {tx.cpp()} in_t; typedef {tw.cpp()} w_t; typedef {tb.cpp()} b_t;\n"
           f"typedef {tacc.cpp()} acc_t; typedef {tout.cpp()} out_t;\n"
           f"typedef {raw_ctype(tw)} w_raw_t; typedef {raw_ctype(tb)} b_raw_t;\n"
           f"static const unsigned in_height = {h}, in_width = {wd}, n_chan = {c}, n_filt = {nf};\n"
           f"static const unsigned filt_height = {k[0]}, filt_width = {k[1]};\n"
           f"static const unsigned stride_height = {stride[0]}, stride_width = {stride[1]};\n"
           f"static const unsigned pad_top = {pads[0]}, pad_bottom = {pads[1]}, pad_left = {pads[2]}, "
           f"pad_right = {pads[3]};\n"
           f"static const unsigned out_height = {oh}, out_width = {ow}, n_terms = {max(1, shiftadd_k)};" +
           fold_fields(reuse, mul_impl))
    expected = np.stack([ref_conv(xs.reshape(h, wd, c), w, b, tx, tw, tb, tout, stride, pads).ravel()
                         for xs in x])  # exact, so acc_t's frac does not matter
    if shiftadd_k:
        sign, shift = terms_arrays(w, shiftadd_k)
        arrays = [("sg", "int8_t", sign), ("sh", "int8_t", shift), ("b", raw_ctype(tb), b)]
        call = "qfx::conv2d_shiftadd<cfg>(in0, out, sg, sh, b)"
    else:
        arrays = [("w", raw_ctype(tw), w), ("b", raw_ctype(tb), b)]
        call = "qfx::conv2d<cfg>(in0, out, w, b)"
    return Case(name, cfg, call, arrays, [(tx.cpp(), x)], tout.cpp(), oh * ow * nf), expected


def pool_case(name, rng, kind, hw, c, k, stride, tx, tout=None, recip_bits=16, samples=4, mul_impl=None):
    h, wd = hw
    x = np.stack([rand_raw(tx, h * wd * c, rng) for _ in range(samples)])
    if kind == "global":
        k, stride = (h, wd), (1, 1)
    oh, ow = (h - k[0]) // stride[0] + 1, (wd - k[1]) // stride[1] + 1
    n = k[0] * k[1]
    tacc = tx.sum_of(n)
    tr = recip_type(n, recip_bits)
    sizes = f"static const unsigned in_height = {h}, in_width = {wd}, n_chan = {c};\n"
    if kind != "global":
        sizes += (f"static const unsigned pool_height = {k[0]}, pool_width = {k[1]};\n"
                  f"static const unsigned stride_height = {stride[0]}, stride_width = {stride[1]};\n"
                  f"static const unsigned out_height = {oh}, out_width = {ow};\n")
    exp = []
    for xs in x:
        wins = list(windows(xs.reshape(h, wd, c), k, stride))
        if kind == "max":
            exp.append(np.stack([wv.max(axis=(0, 1)) for wv in wins]).ravel())
        else:
            sums = np.stack([wv.sum(axis=(0, 1)) for wv in wins]).ravel()
            exp.append(ref_avg(sums, n, tx, tr, tout))
    if kind == "max":
        cfg = f"typedef {tx.cpp()} in_t; typedef {tx.cpp()} out_t;\n" + sizes
        call, out_t = "qfx::maxpool2d<cfg>(in0, out)", tx.cpp()
    else:
        cfg = (f"typedef {tx.cpp()} in_t; typedef {tacc.cpp()} acc_t; typedef {tr.cpp()} recip_t; "
               f"typedef {tout.cpp()} out_t;\n" + sizes + fold_fields(None, mul_impl)
               + f"\nstatic const unsigned long long recip_raw = {recip_raw(n, tr)}ULL;")
        fn = "avgpool2d" if kind == "avg" else "global_avgpool"
        call, out_t = f"qfx::{fn}<cfg>(in0, out)", tout.cpp()
    return Case(name, cfg, call, [], [(tx.cpp(), x)], out_t, oh * ow * c), np.stack(exp)


def elementwise_cases(rng):
    """cast (all 28 mode pairs, exhaustive inputs), relu, clip, add, batchnorm, shl, axis."""
    cases = []
    tin = T("ap_fixed<10,4>")
    xs = np.arange(tin.raw_min, tin.raw_max + 1, dtype=np.int64)[None, :]  # every value, all ties
    for i, q in enumerate(ROUNDINGS):
        for o in OVERFLOWS:
            signed = (i + len(o)) % 3 != 0
            tout = FixedType(6, 3, signed, q, o)
            cfg = f"typedef {tin.cpp()} in_t; typedef {tout.cpp()} out_t; static const unsigned n = {xs.size};"
            cases.append((Case(f"cast_{q}_{o}", cfg, "qfx::cast<cfg>(in0, out)", [], [(tin.cpp(), xs)],
                               tout.cpp(), xs.size), cast(xs, tin.frac_bits, tout)))
    # the whole input below the output's rounding bit (F_in - F_out >= W_in: the Xilinx headers abort on the
    # plain assignment; qfx::convert widens first), and an output range far below the input's LSB
    for k, (q, o) in enumerate(zip(ROUNDINGS, OVERFLOWS * 2)):
        for tag, tout in (("below", FixedType(4, 40 - k, k % 2 == 0, q, o)), ("above", FixedType(1, -60, True, q, o))):
            cfg = f"typedef {tin.cpp()} in_t; typedef {tout.cpp()} out_t; static const unsigned n = {xs.size};"
            cases.append((Case(f"cast_{tag}_{q}", cfg, "qfx::cast<cfg>(in0, out)", [], [(tin.cpp(), xs)],
                               tout.cpp(), xs.size), cast(xs, tin.frac_bits, tout)))
    # unsigned -> signed with a wider fraction (no rounding, overflow only)
    tu, ts = T("ap_ufixed<7,3>"), T("ap_fixed<6,2,AP_RND,AP_SAT>")
    xu = np.arange(0, 128, dtype=np.int64)[None, :]
    cases.append((Case("cast_u2s", f"typedef {tu.cpp()} in_t; typedef {ts.cpp()} out_t; static const unsigned n = 128;",
                       "qfx::cast<cfg>(in0, out)", [], [(tu.cpp(), xu)], ts.cpp(), 128), cast(xu, tu.frac_bits, ts)))
    # relu: exhaustive, signed and unsigned
    for name, t in (("relu_s", T("ap_fixed<7,3,AP_RND,AP_SAT>")), ("relu_u", T("ap_ufixed<5,1>"))):
        v = np.arange(t.raw_min, t.raw_max + 1, dtype=np.int64)[None, :]
        cfg = f"typedef {t.cpp()} in_t; typedef {t.cpp()} out_t; static const unsigned n = {v.size};"
        cases.append((Case(name, cfg, "qfx::relu<cfg>(in0, out)", [], [(t.cpp(), v)], t.cpp(), v.size),
                      np.maximum(v, 0)))
    # clip: ReLU6 and an asymmetric window with negative bound
    for name, t, lo, hi in (("clip_relu6", T("ap_fixed<8,4>"), 0, 6 * 16), ("clip_neg", T("ap_fixed<9,3,AP_TRN,AP_SAT>"), -96, 36)):
        v = np.arange(t.raw_min, t.raw_max + 1, dtype=np.int64)[None, :]
        cfg = (f"typedef {t.cpp()} in_t; typedef {t.cpp()} out_t; static const unsigned n = {v.size};\n"
               f"static const long long lo_raw = {lo}, hi_raw = {hi};")
        cases.append((Case(name, cfg, "qfx::clip<cfg>(in0, out)", [], [(t.cpp(), v)], t.cpp(), v.size),
                      np.clip(v, lo, hi)))
    # add: mixed signedness and binary points
    for name, ta, tb, tout in (("add_a", T("ap_fixed<8,3>"), T("ap_ufixed<6,5>"), T("ap_fixed<7,4,AP_RND_INF,AP_SAT_SYM>")),
                               ("add_b", T("ap_fixed<9,2>"), T("ap_fixed<5,5>"), T("ap_fixed<8,5,AP_RND_CONV,AP_WRAP>")),
                               # out_t's LSB above the whole sum (qfx::convert widens first)
                               ("add_far", T("ap_fixed<9,2>"), T("ap_fixed<5,5>"), T("ap_fixed<4,40,AP_RND_INF,AP_SAT>"))):
        n = 600
        a = rand_raw(ta, n, rng)[None, :]
        b = rand_raw(tb, n, rng)[None, :]
        f = max(ta.frac_bits, tb.frac_bits)
        s = (a << (f - ta.frac_bits)) + (b << (f - tb.frac_bits))
        cfg = (f"typedef {ta.cpp()} in_a_t; typedef {tb.cpp()} in_b_t; typedef {ta.add(tb).cpp()} acc_t; "
               f"typedef {tout.cpp()} out_t;\nstatic const unsigned n = {n};")
        cases.append((Case(name, cfg, "qfx::add<cfg>(in0, in1, out)", [], [(ta.cpp(), a), (tb.cpp(), b)],
                           tout.cpp(), n), cast(s, f, tout)))
    # batchnorm: feature map (HWC, channel innermost) and vector
    for name, npix, nch, tx, tsc, tsh, tout, impl in (
            ("bn_map", 7, 3, T("ap_fixed<8,4>"), T("ap_fixed<10,2>"), T("ap_fixed<12,5>"), T("ap_fixed<9,4,AP_RND_ZERO,AP_SAT>"), None),
            ("bn_vec", 1, 11, T("ap_ufixed<6,3>"), T("ap_fixed<7,-1>"), T("ap_fixed<6,1>"), T("ap_fixed<5,0,AP_RND_MIN_INF,AP_SAT_ZERO>"), 1),
            ("bn_lut", 4, 5, T("ap_fixed<7,2>"), T("ap_ufixed<6,1>"), T("ap_fixed<9,3>"), T("ap_fixed<8,3,AP_RND,AP_WRAP>"), 2),
            ("bn_far", 3, 2, T("ap_fixed<7,2>"), T("ap_fixed<6,1>"), T("ap_fixed<9,3>"), T("ap_fixed<3,50,AP_RND_ZERO,AP_WRAP>"), None)):
        sc, sh = rand_raw(tsc, nch, rng), rand_raw(tsh, nch, rng)
        x = np.stack([rand_raw(tx, npix * nch, rng) for _ in range(5)])
        f = tx.frac_bits + tsc.frac_bits
        assert tsh.frac_bits <= f
        y = (x.reshape(5, npix, nch) * sc + (sh << (f - tsh.frac_bits))).reshape(5, -1)
        cfg = (f"typedef {tx.cpp()} in_t; typedef {tsc.cpp()} scale_t; typedef {tsh.cpp()} shift_t; "
               f"typedef {tx.mul(tsc).add(tsh).cpp()} acc_t; typedef {tout.cpp()} out_t;\n typedef {raw_ctype(tsc)} scale_raw_t; typedef {raw_ctype(tsh)} shift_raw_t;\n"
               f"static const unsigned n_chan = {nch}, n_pixels = {npix};" + fold_fields(None, impl))
        cases.append((Case(name, cfg, "qfx::batchnorm<cfg>(in0, out, sc, sh)",
                           [("sc", raw_ctype(tsc), sc), ("sh", raw_ctype(tsh), sh)], [(tx.cpp(), x)],
                           tout.cpp(), npix * nch), cast(y, f, tout)))
    # shl<S>: generated straight-line shift-add, acc = b + shl<3>(x0) - shl<1>(x1) + shl<-2>(x2) - x3
    tx, tb, tout = T("ap_fixed<8,3>"), T("ap_fixed<10,6>"), T("ap_fixed<9,7,AP_RND_CONV,AP_SAT>")
    x = np.stack([rand_raw(tx, 4, rng) for _ in range(64)])
    bias = 301  # mantissa of b
    f = tx.frac_bits + 2
    acc = (bias << (f - tb.frac_bits)) + (x[:, 0] << (3 + 2)) - (x[:, 1] << (1 + 2)) + x[:, 2] - (x[:, 3] << 2)
    tacc = acc_type(-(1 << 16), 1 << 16, f)
    call = ("{ " + f"{tx.cpp()} x[4]; for (int i = 0; i < 4; i++) x[i] = in0.read(); "
            f"const {tb.cpp()} b = qfx::from_raw<{tb.cpp()} >({bias}); "
            f"const {tacc.cpp()} acc = b + qfx::shl<3>(x[0]) - qfx::shl<1>(x[1]) + qfx::shl<-2>(x[2]) - x[3]; "
            f"const {tout.cpp()} y = acc; out.write(y); " + "}")
    cases.append((Case("shl_expr", f"typedef {tx.cpp()} in_t;", call, [], [(tx.cpp(), x)], tout.cpp(), 1),
                  cast(acc, f, tout)[:, None]))
    # wide casts at the int64 limits of the native C simulation cast (qfx_types.h native_cast: exact where every
    # intermediate stays below 2**62, else the ap_fixed form): ties and both neighbours at the dropped bit, the
    # extremes, every rounding mode, the overflow modes in turn
    for k, (tin, fout, wout, signed) in enumerate((
            (T("ap_fixed<62,30>"), 31, 62, True),     # s = 1
            (T("ap_fixed<62,30>"), -8, 40, True),     # s = 40
            (T("ap_ufixed<61,30>"), -30, 20, False),  # s = 61 (unsigned: 62 signed bits)
            (T("ap_fixed<62,30>"), -30, 62, True),    # s = 62: the last native one
            (T("ap_fixed<62,30>"), -31, 8, True),     # s = 63: the ap_fixed form
            (T("ap_fixed<40,10>"), 40, 62, True),     # s = -10: shifted left
            (T("ap_fixed<64,20>"), 30, 63, False))):  # 64-bit source, 63-bit output: the ap_fixed form
        s = tin.frac_bits - fout
        v = rand_raw(tin, 300, rng)
        if s > 0:
            kk = rng.integers(tin.raw_min >> s, (tin.raw_max >> s) + 1, size=100, dtype=np.int64)
            ties = np.concatenate([(kk << s) + (1 << (s - 1)) + d for d in (-1, 0, 1)])
            v = np.concatenate([v, ties[(ties >= tin.raw_min) & (ties <= tin.raw_max)]])
        for i, q in enumerate(ROUNDINGS):
            tout = FixedType(wout, wout - fout, signed, q, OVERFLOWS[(i + k) % 4])
            cfg = f"typedef {tin.cpp()} in_t; typedef {tout.cpp()} out_t; static const unsigned n = {v.size};"
            cases.append((Case(f"cast_wide{k}_{q}", cfg, "qfx::cast<cfg>(in0, out)", [], [(tin.cpp(), v[None, :])],
                               tout.cpp(), v.size), cast(v[None, :], tin.frac_bits, tout)))
    # fanout2: out = copy A, then copy B (appended by the driver)
    for name, t, n in (("fanout_s", T("ap_fixed<9,4>"), 37), ("fanout_u", T("ap_ufixed<3,1>"), 1)):
        v = np.stack([rand_raw(t, n, rng) for _ in range(3)])
        call = (f"{{ hls::stream<{t.cpp()} > b; qfx::fanout2<{t.cpp()}, {n}>(in0, out, b); "
                f"for (unsigned i = 0; i < {n}u; i++) out.write(b.read()); }}")
        cases.append((Case(name, "", call, [], [(t.cpp(), v)], t.cpp(), 2 * n), np.concatenate([v, v], 1)))
    # axis: read raw mantissas from 16-bit words, write them back into 32-bit words
    for name, t in (("axis_s", T("ap_fixed<12,3>")), ("axis_u", T("ap_ufixed<10,10>"))):
        n = 9
        v = np.stack([rand_raw(t, n, rng) for _ in range(3)])
        words = v & 0xFFFF  # 16-bit words holding the mantissa bits (sign bits above are ignored)
        call = (f"{{ hls::stream<qfx::axis_word<16> > a; for (unsigned i = 0; i < {n}; i++) "
                "{ qfx::axis_word<16> w; w.data = in0.read().range(); w.keep = -1; w.strb = -1; "
                f"w.last = i == {n - 1}; a.write(w); }} hls::stream<{t.cpp()} > mid; "
                f"qfx::axis_read<{t.cpp()}, {n}, 16>(a, mid); qfx::axis_write<{t.cpp()}, {n}, 32>(mid, out); }}")
        exp = np.stack([np.stack([m & 0xFFFFFFFF, np.full(n, 15), np.full(n, 15), (np.arange(n) == n - 1)], 1).ravel()
                        for m in v])
        cases.append((Case(name, "", call, [], [("ap_fixed<16,16>", words)], "qfx::axis_word<32>", n, "axis"), exp))
    return cases


def layer_cases(rng):
    cases = []
    cases.append(dense_case("dense_a", rng, 7, 5, T("ap_fixed<8,3>"), T("ap_fixed<6,1>"), T("ap_fixed<9,3>"),
                            T("ap_fixed<8,4,AP_RND_CONV,AP_SAT>")))
    cases.append(dense_case("dense_b", rng, 13, 3, T("ap_ufixed<6,2>"), T("ap_fixed<4,4>"), T("ap_fixed<10,6>"),
                            T("ap_ufixed<7,5,AP_RND,AP_WRAP>")))
    cases.append(dense_case("dense_c", rng, 1, 1, T("ap_fixed<5,5>"), T("ap_ufixed<3,-1>"), T("ap_fixed<6,2>"),
                            T("ap_fixed<4,2,AP_RND_INF,AP_SAT_ZERO>"), samples=40))
    cases.append(dense_case("dense_sa", rng, 9, 4, T("ap_fixed<8,3>"), T("ap_fixed<7,1>"), T("ap_fixed<9,3>"),
                            T("ap_fixed<8,3,AP_RND_ZERO,AP_SAT_SYM>"), shiftadd_k=3))
    cases.append(dense_case("dense_sa_u", rng, 6, 3, T("ap_ufixed<6,2>"), T("ap_ufixed<6,0>"), T("ap_fixed<8,3>"),
                            T("ap_fixed<7,3,AP_RND_MIN_INF,AP_WRAP>"), shiftadd_k=2))
    # folding: reuse 1, divisors and non-divisors of P, reuse > P, both mul_impl values (same exact results)
    for reuse, impl in ((1, 0), (5, 1), (3, 2), (7, None), (35, 1), (50, 2)):  # P = 7 * 5 = 35
        cases.append(dense_case(f"dense_r{reuse}_m{impl}", rng, 7, 5, T("ap_fixed<8,3>"), T("ap_fixed<6,1>"),
                                T("ap_fixed<9,3>"), T("ap_fixed<8,4,AP_RND_CONV,AP_SAT>"), samples=6,
                                reuse=reuse, mul_impl=impl))
    for reuse, impl in ((3, 1), (8, 2), (16, 0), (5, None)):  # n_out 8, P = 48
        cases.append(dense_case(f"dense8_r{reuse}", rng, 6, 8, T("ap_fixed<7,2>"), T("ap_fixed<5,1>"),
                                T("ap_fixed<8,3>"), T("ap_fixed<7,3,AP_RND,AP_SAT>"), samples=6,
                                reuse=reuse, mul_impl=impl))
    # weights on a coarser grid than w_t (every mantissa even or a multiple of 8): acc_t has fewer fractional
    # bits than F_x + F_w; every loop shape of fold_mac (P = 24: M = 24, 6 = n_in, 3, 5)
    for reuse in (1, 4, 8, 5):
        cases.append(dense_case(f"dense_coarse_r{reuse}", rng, 6, 4, T("ap_fixed<8,3>"), T("ap_fixed<8,1>"),
                                T("ap_fixed<9,3>"), T("ap_fixed<10,4,AP_RND,AP_SAT>"), samples=6, reuse=reuse,
                                acc_frac=12 - 3 * (reuse % 2), coarse=3))
    cases.append(dense_case("dense_coarse_sa", rng, 9, 4, T("ap_fixed<8,3>"), T("ap_fixed<7,1>"), T("ap_fixed<6,3>"),
                            T("ap_fixed<8,3,AP_RND_ZERO,AP_SAT_SYM>"), shiftadd_k=2, coarse=1, acc_frac=10))
    # native-integer boundaries of the C simulation: sums of 63/64 bits (int64/uint64), 66 bits (ap_int)
    cases.append(dense_case("dense_wide63", rng, 5, 3, T("ap_fixed<30,10>"), T("ap_fixed<30,2>"),
                            T("ap_fixed<12,3>"), T("ap_fixed<20,12,AP_RND_CONV,AP_SAT>"), samples=8))
    cases.append(dense_case("dense_wide64u", rng, 3, 2, T("ap_ufixed<31,10>"), T("ap_ufixed<31,2>"),
                            T("ap_fixed<12,3>"), T("ap_fixed<40,30,AP_RND,AP_WRAP>"), samples=8))
    cases.append(dense_case("dense_wide_ap", rng, 7, 3, T("ap_fixed<33,10>"), T("ap_fixed<31,2>"),
                            T("ap_fixed<12,3>"), T("ap_fixed<20,12,AP_RND_INF,AP_SAT>"), samples=8, reuse=3))
    cases.append(dense_case("dense_sa_r5", rng, 9, 4, T("ap_fixed<8,3>"), T("ap_fixed<7,1>"), T("ap_fixed<9,3>"),
                            T("ap_fixed<8,3,AP_RND_ZERO,AP_SAT_SYM>"), shiftadd_k=3, reuse=5, mul_impl=1))
    cases.append(dense_case("dense_sa_r4", rng, 6, 3, T("ap_ufixed<6,2>"), T("ap_ufixed<6,0>"), T("ap_fixed<8,3>"),
                            T("ap_fixed<7,3,AP_RND_MIN_INF,AP_WRAP>"), shiftadd_k=2, reuse=4, mul_impl=2))
    for reuse, impl in ((1, 1), (4, 2), (7, 1), (12, 0), (200, 2)):  # P = 3 * 3 * 3 * 4 = 108
        cases.append(conv_case(f"conv_r{reuse}", rng, (5, 6), 3, 4, (3, 3), (1, 1), (1, 1, 1, 1),
                               T("ap_fixed<6,2>"), T("ap_fixed<5,1>"), T("ap_fixed<8,3>"),
                               T("ap_fixed<8,4,AP_RND_CONV,AP_SAT>"), samples=2, reuse=reuse, mul_impl=impl))
    cases.append(conv_case("conv_s2_r5", rng, (6, 5), 2, 3, (3, 3), (2, 2), (0, 2, 1, 0), T("ap_ufixed<5,2>"),
                           T("ap_fixed<4,0>"), T("ap_fixed<7,2>"), T("ap_fixed<6,2,AP_RND,AP_WRAP>"), reuse=5,
                           mul_impl=2))
    cases.append(conv_case("conv_sa_r4", rng, (5, 4), 3, 2, (3, 3), (2, 2), (1, 2, 2, 1), T("ap_fixed<6,2>"),
                           T("ap_fixed<6,1>"), T("ap_fixed<8,3>"), T("ap_fixed<8,4,AP_RND_INF,AP_SAT_SYM>"),
                           shiftadd_k=2, reuse=4, mul_impl=1))
    cases.append(conv_case("conv_sa_r7", rng, (4, 4), 2, 3, (2, 2), (1, 1), (0, 1, 1, 0), T("ap_fixed<7,3>"),
                           T("ap_fixed<5,1>"), T("ap_fixed<8,4>"), T("ap_fixed<8,4,AP_RND_CONV,AP_SAT>"),
                           shiftadd_k=2, reuse=7, mul_impl=2))
    # acc_t finer than the product grid (s = F_acc - Fx - Fw > 0), bias finer than the products
    cases.append(dense_case("dense_acc_s3", rng, 7, 5, T("ap_fixed<8,3>"), T("ap_fixed<6,1>"), T("ap_fixed<9,3>"),
                            T("ap_fixed<8,4,AP_RND_CONV,AP_SAT>"), samples=8, reuse=3, acc_frac=13))
    cases.append(dense_case("dense_bias_fine", rng, 5, 4, T("ap_fixed<6,3>"), T("ap_fixed<5,2>"), T("ap_fixed<12,2>"),
                            T("ap_fixed<9,3,AP_RND,AP_SAT>"), samples=8, reuse=6, acc_frac=10, mul_impl=2))
    cases.append(dense_case("dense_sa_acc_s2", rng, 6, 3, T("ap_ufixed<6,2>"), T("ap_ufixed<6,0>"), T("ap_fixed<8,3>"),
                            T("ap_fixed<7,3,AP_RND_MIN_INF,AP_WRAP>"), shiftadd_k=2, reuse=5, acc_frac=12))
    cases.append(conv_case("conv_acc_s4", rng, (4, 5), 3, 3, (3, 3), (1, 1), (1, 1, 1, 1), T("ap_fixed<6,2>"),
                           T("ap_fixed<5,1>"), T("ap_fixed<14,3>"), T("ap_fixed<8,4,AP_RND_CONV,AP_SAT>"), samples=2,
                           reuse=10, acc_frac=11))
    # conv: 3x3 pad 1 all sides; 3x3 stride 2 asymmetric pads; 1x1; 2x3 stride (2,1) with unused rows
    cases.append(conv_case("conv_3x3", rng, (5, 7), 3, 4, (3, 3), (1, 1), (1, 1, 1, 1), T("ap_fixed<6,2>"),
                           T("ap_fixed<5,1>"), T("ap_fixed<8,3>"), T("ap_fixed<8,4,AP_RND_CONV,AP_SAT>")))
    cases.append(conv_case("conv_s2", rng, (6, 5), 2, 3, (3, 3), (2, 2), (0, 2, 1, 0), T("ap_ufixed<5,2>"),
                           T("ap_fixed<4,0>"), T("ap_fixed<7,2>"), T("ap_fixed<6,2,AP_RND,AP_WRAP>")))
    cases.append(conv_case("conv_1x1", rng, (4, 3), 5, 2, (1, 1), (1, 1), (0, 0, 0, 0), T("ap_fixed<7,3>"),
                           T("ap_fixed<6,2>"), T("ap_fixed<6,3>"), T("ap_fixed<7,4,AP_TRN_ZERO,AP_SAT_ZERO>")))
    cases.append(conv_case("conv_2x3", rng, (7, 6), 2, 3, (2, 3), (2, 1), (1, 0, 2, 1), T("ap_fixed<6,3>"),
                           T("ap_fixed<4,1>"), T("ap_fixed<6,2>"), T("ap_ufixed<6,3,AP_RND_MIN_INF,AP_SAT>")))
    cases.append(conv_case("conv_sa", rng, (5, 4), 3, 2, (3, 3), (2, 2), (1, 2, 2, 1), T("ap_fixed<6,2>"),
                           T("ap_fixed<6,1>"), T("ap_fixed<8,3>"), T("ap_fixed<8,4,AP_RND_INF,AP_SAT_SYM>"),
                           shiftadd_k=2))
    # pooling
    cases.append(pool_case("max_2x2", rng, "max", (7, 5), 3, (2, 2), (2, 2), T("ap_fixed<6,2>")))
    cases.append(pool_case("max_3x2", rng, "max", (5, 6), 2, (3, 2), (1, 2), T("ap_ufixed<5,1>")))
    cases.append(pool_case("avg_3x3", rng, "avg", (7, 8), 2, (3, 3), (3, 3), T("ap_fixed<6,2>"),
                           T("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")))
    cases.append(pool_case("avg_2x2", rng, "avg", (6, 5), 3, (2, 2), (2, 2), T("ap_fixed<7,3>"),
                           T("ap_fixed<6,3,AP_RND,AP_SAT>"), recip_bits=8))
    cases.append(pool_case("avg_3x1", rng, "avg", (5, 4), 2, (3, 1), (1, 1), T("ap_ufixed<6,3>"),
                           T("ap_fixed<7,3,AP_RND_ZERO,AP_WRAP>"), recip_bits=5, mul_impl=1))
    cases.append(pool_case("avg_2x2_lut", rng, "avg", (4, 4), 2, (2, 2), (2, 2), T("ap_fixed<7,3>"),
                           T("ap_fixed<6,3,AP_RND,AP_SAT>"), recip_bits=8, mul_impl=2))
    cases.append(pool_case("gap_15", rng, "global", (5, 3), 4, None, None, T("ap_fixed<8,3>"),
                           T("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")))
    cases.append(pool_case("gap_49", rng, "global", (7, 7), 2, None, None, T("ap_fixed<6,2>"),
                           T("ap_fixed<7,2,AP_TRN,AP_SAT>"), recip_bits=12))
    cases.append(pool_case("gap_4", rng, "global", (2, 2), 3, None, None, T("ap_fixed<6,2>"),
                           T("ap_fixed<5,1,AP_RND_INF,AP_SAT_SYM>"), mul_impl=2))
    cases.append(pool_case("gap_9_dsp", rng, "global", (3, 3), 2, None, None, T("ap_fixed<6,2>"),
                           T("ap_fixed<6,1,AP_RND_CONV,AP_SAT>"), mul_impl=1))
    # out_t's LSB above every product (qfx::convert widens first): average and global average
    cases.append(pool_case("avg_far", rng, "avg", (4, 4), 2, (2, 2), (2, 2), T("ap_fixed<6,2>"),
                           T("ap_fixed<4,60,AP_RND_CONV,AP_SAT>")))
    cases.append(pool_case("gap_far", rng, "global", (3, 3), 2, None, None, T("ap_fixed<6,2>"),
                           T("ap_ufixed<2,45,AP_RND,AP_SAT_SYM>")))
    return cases


@pytest.fixture(scope="module")
def layers():
    cases = layer_cases(np.random.default_rng(5))
    return build("layers", [c for c, _ in cases]), cases


@pytest.fixture(scope="module")
def elementwise():
    cases = elementwise_cases(np.random.default_rng(7))
    return build("elementwise", [c for c, _ in cases]), cases


LAYER_NAMES = [c.name for c, _ in layer_cases(np.random.default_rng(5))]
ELEM_NAMES = [c.name for c, _ in elementwise_cases(np.random.default_rng(7))]


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layer_kernels(layers, name):
    exe, cases = layers
    case, expected = next((c, e) for c, e in cases if c.name == name)
    check(exe, case, expected)


@pytest.fixture(scope="module")
def ap_builds():
    """Every layer and element-wise case built on ap_fixed / ap_int only (-DQFX_CSIM_AP_MANTISSAS): what
    synthesis reads. The default builds run them on int64_t mantissas (qfx_mac.h, qfx_types.h native_cast);
    both must equal the oracle."""
    out = {}
    for tag, make, seed in (("layers_ap", layer_cases, 5), ("elementwise_ap", elementwise_cases, 7)):
        cases = make(np.random.default_rng(seed))
        exe = build(tag, [c for c, _ in cases], ("-DQFX_CSIM_AP_MANTISSAS",))
        out.update({c.name: (exe, c, e) for c, e in cases})
    return out


@pytest.mark.parametrize("name", LAYER_NAMES + ELEM_NAMES)
def test_kernels_ap_mantissas(ap_builds, name):
    exe, case, expected = ap_builds[name]
    check(exe, case, expected)


@pytest.mark.parametrize("name", ELEM_NAMES)
def test_elementwise_kernels(elementwise, name):
    exe, cases = elementwise
    case, expected = next((c, e) for c, e in cases if c.name == name)
    check(exe, case, expected)


def test_reference_helpers():
    """The test's own reference pieces: CSD decomposition and the rounded reciprocal."""
    for m in range(-300, 301):
        terms = csd(m)
        assert sum(s << e for s, e in terms) == m
        assert all(terms[i + 1][1] - terms[i][1] >= 2 for i in range(len(terms) - 1))  # non-adjacent
    assert recip_raw(1, recip_type(1, 16)) == 1 << 15  # 1.0 in ap_ufixed<16,1>
    assert recip_raw(3, recip_type(3, 16)) == 21845  # ap_ufixed<16,0>: 2^16/3 = 21845.33 -> 21845
    assert recip_raw(6, recip_type(6, 5)) == 11  # ap_ufixed<5,-1>: 2^6/6 = 10.67 -> 11


def test_syntax_all_kernels_warning_free():
    """qfx.h with every kernel instantiated: -fsyntax-only -Wall -Wextra -Werror (ap_types via -isystem)."""
    cases = [c for c, _ in layer_cases(np.random.default_rng(5))] + \
            [c for c, _ in elementwise_cases(np.random.default_rng(7))]
    src = driver_source(cases) + fold_shape_asserts()
    BUILD.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256((src + lib_hash()).encode()).hexdigest()[:16]
    stamp = BUILD / f"syntax-{key}.ok"
    if stamp.exists():
        return
    cpp = BUILD / f"syntax-{key}.cpp"
    cpp.write_text(src)
    cmd = [toolchain.find_cxx(), "-std=c++14", "-fsyntax-only", *WARN, "-pedantic", "-isystem",
           str(toolchain.find_ap_types()), "-I", str(HLS_LIB), str(cpp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr == "", proc.stderr[-4000:]
    stamp.write_text("ok\n")


def readme_fold(p: int, reuse: int) -> tuple[int, int]:
    """(multipliers, folds) by the README formula."""
    r = min(reuse, p)
    mults = -(-p // r)
    return mults, -(-p // mults)


def fold_shape_asserts() -> str:
    """static_asserts: qfx::fold_shape equals the README formula; configs without the fields get the defaults."""
    lines = ["// fold_shape against the README formula",
             "struct no_fields {};", "struct with_fields { static const unsigned reuse = 9; static const int mul_impl = 2; };",
             "static_assert(qfx::reuse_of<no_fields>::value == 1, \"default reuse\");",
             "static_assert(qfx::mul_impl_of<no_fields>::value == 0, \"default mul_impl\");",
             "static_assert(qfx::reuse_of<with_fields>::value == 9, \"reuse\");",
             "static_assert(qfx::mul_impl_of<with_fields>::value == 2, \"mul_impl\");"]
    for p in (1, 2, 7, 8, 35, 48, 108, 2304):
        for reuse in sorted({1, 2, 3, 5, 7, 8, 16, 64, p - 1, p, p + 1} - {0}):
            mults, folds = readme_fold(p, reuse)
            assert folds <= reuse and mults * folds >= p > mults * (folds - 1)
            lines.append(f"static_assert(qfx::fold_shape<{p}, {reuse}>::mults == {mults} && "
                         f"qfx::fold_shape<{p}, {reuse}>::folds == {folds}, \"fold {p} {reuse}\");")
    return "\n".join(lines) + "\n"


def test_bad_fold_fields_rejected():
    """reuse = 0 or mul_impl outside 0..2 stop the build with a message naming the field."""
    src = ('#include "qfx.h"\n'
           "struct r0 { static const unsigned reuse = 0; };\n"
           "struct m3 { static const int mul_impl = 3; };\n"
           "unsigned a = qfx::reuse_of<r0>::value;\n"
           "int b = qfx::mul_impl_of<m3>::value;\n")
    BUILD.mkdir(parents=True, exist_ok=True)
    cpp = BUILD / f"bad-fields-{os.getpid()}.cpp"
    cpp.write_text(src)
    try:
        proc = subprocess.run([toolchain.find_cxx(), "-std=c++14", "-fsyntax-only", "-isystem",
                               str(toolchain.find_ap_types()), "-I", str(HLS_LIB), str(cpp)],
                              capture_output=True, text=True, timeout=300)
    finally:
        cpp.unlink()
    assert proc.returncode != 0
    assert "config field `reuse` must be >= 1" in proc.stderr, proc.stderr[-2000:]
    assert "config field `mul_impl` must be 0 (auto), 1 (dsp) or 2 (fabric)" in proc.stderr, proc.stderr[-2000:]


def test_no_bare_labels_or_pragmas():
    """Labels and pragmas only through QFX_LABEL / QFX_PRAGMA (g++ -Wall: unused labels, unknown pragmas)."""
    import re
    for p in sorted(HLS_LIB.glob("*.h")):
        for n, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("//")[0]
            assert not re.match(r"^\s*[A-Za-z_]\w*\s*:(?!:)\s*$", code) or "default" in code or \
                re.match(r"^\s*(public|private|protected)\s*:", code), f"{p.name}:{n}: bare label: {line}"
            assert "#pragma HLS" not in code, f"{p.name}:{n}: raw HLS pragma: {line}"
