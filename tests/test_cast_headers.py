"""Differential test: ``qfx.quantize`` / ``qfx.requantize_raw`` against the real ap_fixed headers.

One generated C++ program (split into a few translation units compiled in
parallel, cached under ``build/``) instantiates a few hundred ``ap_[u]fixed``
types covering every rounding mode x overflow mode x signedness, widths 1..53
(1..64 for integer targets) and integer bits from -4 to W+4. The program reads
binary records on stdin (inputs as raw IEEE bit patterns or as 128-bit two's
complement mantissas, never decimal text) and writes the raw mantissa of every
assignment as a 64-bit word. Python compares those words with our casts by exact
integer equality.
"""
from __future__ import annotations

import math
import random
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from qfx_compile.backend import toolchain
from qfx_compile.qfx.quantize import quantize, requantize_raw, to_raw
from qfx_compile.fixed.types import OVERFLOW_MODES, ROUNDING_MODES, FixedType

pytestmark = pytest.mark.xdist_group("cast_headers")

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "cast_headers"
N_UNITS = 3

KIND_DOUBLE, KIND_FLOAT, KIND_RAW = 0, 1, 2


# ------------------------------------------------------------------ the types
def _float_types() -> list[FixedType]:
    """3 types per (rounding, overflow, signed): tiny, <= 24 bits, wide (up to 53)."""
    rng = random.Random(20240611)
    out = []
    combos = [(q, o, s) for q in ROUNDING_MODES for o in OVERFLOW_MODES for s in (True, False)]
    for k, (q, o, s) in enumerate(combos):
        widths = [1 + k % 5, rng.randint(6, 24), rng.randint(25, 53) if k % 3 else 53]
        for j, w in enumerate(widths):
            special = [-4, w + 4, 0, w, 1, -1][(k + j) % 6]
            i = special if (k + j) % 2 == 0 else rng.randint(-4, w + 4)
            out.append(FixedType(w, i, s, q, o))
    return out


def _raw_pairs() -> list[tuple[FixedType, FixedType]]:
    """(source, target) pairs: sources up to 128 bits, targets up to 64 bits."""
    rng = random.Random(777)
    out = []
    combos = [(q, o, s) for q in ROUNDING_MODES for o in OVERFLOW_MODES for s in (True, False)]
    for k, (q, o, s) in enumerate(combos):
        for j in range(2):
            w = [rng.randint(1, 20), rng.choice([rng.randint(21, 64), 64, 63, 62])][(k + j) % 2]
            i = rng.randint(-4, w + 4)
            t = FixedType(w, i, s, q, o)
            w2 = [rng.randint(1, 64), rng.randint(2, 64), rng.randint(65, 128)][(k + j) % 3]
            shift = rng.choice([rng.randint(-8, 0), rng.randint(1, 12), rng.randint(1, w2 + 6), w2, w2 + 1])
            # The headers abort (assertion "Attempting to read bit beyond MSB" in
            # ap_private::get_bit) when the whole source lies below the target's rounding
            # bit, F2 - F > W2, for every rounding mode but AP_TRN: not testable here.
            shift = min(shift, w2)
            f2 = t.frac_bits + shift
            out.append((FixedType(w2, w2 - f2, rng.random() < 0.6), t))
    return out


FLOAT_TYPES = _float_types()
RAW_PAIRS = _raw_pairs()


# ------------------------------------------------------------------ C++ side
_PRELUDE = r"""
#include <ap_fixed.h>
#include <cstdint>
#include <cstring>

template <int W> inline uint64_t bits_of(const ap_int<W>& r) { return (uint64_t)r.to_int64(); }
template <int W> inline uint64_t bits_of(const ap_uint<W>& r) { return r.to_uint64(); }

template <class T, class R> void from_double(const unsigned char* in, uint64_t* out, int n) {
  for (int i = 0; i < n; ++i) {
    double d; std::memcpy(&d, in + 8 * i, 8);
    T v = d; R r; r.V = v.V; out[i] = bits_of(r);
  }
}
template <class T, class R> void from_float(const unsigned char* in, uint64_t* out, int n) {
  for (int i = 0; i < n; ++i) {
    float f; std::memcpy(&f, in + 4 * i, 4);
    T v = f; R r; r.V = v.V; out[i] = bits_of(r);
  }
}
// Source mantissa: 128-bit two's complement (low word, high word), truncated to the source width.
template <class S, class SR, class T, class R> void from_raw(const unsigned char* in, uint64_t* out, int n) {
  for (int i = 0; i < n; ++i) {
    uint64_t lo, hi; std::memcpy(&lo, in + 16 * i, 8); std::memcpy(&hi, in + 16 * i + 8, 8);
    ap_uint<128> big; big.range(63, 0) = lo; big.range(127, 64) = hi;
    SR sr = big; S s; s.V = sr.V;
    T v = s; R r; r.V = v.V; out[i] = bits_of(r);
  }
}
"""

_MAIN = r"""
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
%(decls)s
int main() {
  std::vector<unsigned char> data;
  unsigned char chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof chunk, stdin)) > 0) data.insert(data.end(), chunk, chunk + got);
  size_t pos = 0;
  std::vector<uint64_t> out;
  while (pos + 12 <= data.size()) {
    int32_t head[3]; std::memcpy(head, &data[pos], 12); pos += 12;
    int kind = head[0], id = head[1], n = head[2];
    size_t item = kind == 0 ? 8 : kind == 1 ? 4 : 16;
    out.assign(n, 0);
    int done = 0;
%(calls)s
    if (!done) { std::fprintf(stderr, "unknown record kind %%d id %%d\n", kind, id); return 2; }
    std::fwrite(out.data(), 8, n, stdout);
    pos += item * n;
  }
  return 0;
}
"""


def _spell(t: FixedType) -> tuple[str, str]:
    raw = f"ap_int<{t.width}>" if t.signed else f"ap_uint<{t.width}>"
    return t.cpp(), raw


def _sources() -> dict[str, str]:
    jobs = [(KIND_DOUBLE, i, t) for i, t in enumerate(FLOAT_TYPES)]
    jobs += [(KIND_FLOAT, i, t) for i, t in enumerate(FLOAT_TYPES) if t.width <= 24]
    jobs += [(KIND_RAW, i, p) for i, p in enumerate(RAW_PAIRS)]
    units: list[list[str]] = [[] for _ in range(N_UNITS)]
    for k, (kind, i, what) in enumerate(jobs):
        if kind == KIND_RAW:
            s, t = what
            (sc, sr), (tc, tr) = _spell(s), _spell(t)
            call = f"from_raw<{sc}, {sr}, {tc}, {tr} >(in, out, n)"
        else:
            tc, tr = _spell(what)
            call = f"{'from_double' if kind == KIND_DOUBLE else 'from_float'}<{tc}, {tr} >(in, out, n)"
        units[k % N_UNITS].append(f"  if (kind == {kind} && id == {i}) {{ {call}; return 1; }}")
    files = {}
    for u, body in enumerate(units):
        files[f"unit{u}.cpp"] = (_PRELUDE + f"int dispatch{u}(int kind, int id, const unsigned char* in, "
                                 f"uint64_t* out, int n) {{\n" + "\n".join(body) + "\n  return 0;\n}\n")
    decls = "\n".join(f"int dispatch{u}(int, int, const unsigned char*, uint64_t*, int);" for u in range(N_UNITS))
    calls = "\n".join(f"    if (!done) done = dispatch{u}(kind, id, &data[pos], out.data(), n);"
                      for u in range(N_UNITS))
    files["main.cpp"] = _MAIN % {"decls": decls, "calls": calls}
    return files


@pytest.fixture(scope="module")
def headers_binary() -> Path:
    try:
        toolchain.find_cxx()
        toolchain.find_ap_types()
    except toolchain.ToolchainError as e:
        pytest.skip(str(e))
    return toolchain.compile_cached(_sources(), BUILD, "cast_headers", opt="-O0", jobs=N_UNITS)


def _run(binary: Path, records: list[tuple[int, int, bytes, int]]) -> list[np.ndarray]:
    """records: (kind, id, payload, n) -> one uint64 array per record."""
    blob = b"".join(struct.pack("<iii", k, i, n) + payload for k, i, payload, n in records)
    proc = subprocess.run([str(binary)], input=blob, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    words = np.frombuffer(proc.stdout, dtype="<u8")
    assert words.size == sum(r[3] for r in records), "the C++ program returned a short answer"
    out, pos = [], 0
    for r in records:
        out.append(words[pos:pos + r[3]])
        pos += r[3]
    return out


def _as_ints(words: np.ndarray, t: FixedType) -> list[int]:
    """The C++ words as Python ints: sign-extended for signed targets, plain for unsigned."""
    if t.signed:
        return [int(v) for v in words.view(np.int64)]
    return [int(v) for v in words]


# ------------------------------------------------------------------ test values
def _exact_floats(cands, dtype=float) -> list[float]:
    """Keep the exact rational candidates that the float format holds exactly."""
    out = []
    for c in cands:
        try:
            f = float(c)
        except OverflowError:
            continue
        if math.isfinite(f) and Fraction(f) == c:
            if dtype is np.float32 and float(np.float32(f)) != f:
                continue
            out.append(f)
    return out


def _double_values(t: FixedType, rng: random.Random) -> list[float]:
    F, I = t.frac_bits, t.int_bits
    lo, hi = t.raw_min, t.raw_max
    fine = Fraction(2) ** -(F + 3)  # a grid 8x finer than the LSB: every tie occurs
    cands: list[Fraction] = []
    centres = [0, lo, hi, lo - 1, hi + 1, lo - (1 << t.width), hi + (1 << t.width)]
    centres += [rng.randint(lo, hi) for _ in range(4)]
    centres += [rng.randint(hi, hi + (4 << t.width)), rng.randint(lo - (4 << t.width), lo)]
    for c in centres:
        cands += [(8 * c + j) * fine for j in range(-12, 13)]
    half = Fraction(2) ** -(F + 1)
    for r in (lo, hi, 0, 1, -1, lo + 1, hi - 1, 2 * lo, 2 * hi, -hi):
        v = r * 2 * half
        cands += [v, v + half, v - half, v + 2 * half, v - 2 * half]
    for k in range(-2, 12):  # far out of range and powers of two around the range
        p = Fraction(2) ** (I + k)
        cands += [p, -p, p + half, -p - half, p - half, -p + half, 3 * p, -3 * p]
    out = _exact_floats(cands)
    out += [0.0, -0.0, 5e-324, -5e-324, 2.0 ** -1022, -(2.0 ** -1022), 2.0 ** -1060, -(2.0 ** -1030),
            1e300, -1e300, 1.7976931348623157e308, -1.7976931348623157e308, 2.0 ** 1023, -(2.0 ** 1023),
            2.0 ** -(F + 1), -(2.0 ** -(F + 1)), 2.0 ** -(F + 2), -(2.0 ** -(F + 2))]
    for v in list(out[:60]):  # neighbours of ties and boundaries
        out += [math.nextafter(v, math.inf), math.nextafter(v, -math.inf)]
    scale = 2.0 ** I
    for _ in range(60):  # random doubles, mostly around the range
        out.append(rng.uniform(-2.5, 2.5) * scale)
    for _ in range(40):  # random bit patterns with exponents near the type's
        e = rng.randint(-F - 8, I + 8)
        out.append(math.ldexp(rng.getrandbits(53) | (1 << 52), e - 53) * rng.choice((1, -1)))
    for _ in range(20):  # random float32 values
        out.append(float(np.float32(rng.uniform(-2, 2) * scale)))
    return out


def _float32_values(t: FixedType, doubles: list[float], rng: random.Random) -> np.ndarray:
    keep = [v for v in doubles if math.isfinite(v) and abs(v) < 3e38]
    keep = [v for v in keep if float(np.float32(v)) == v]
    bits = np.array([rng.getrandbits(32) for _ in range(200)], dtype=np.uint32)
    rand = bits.view(np.float32)
    rand = rand[np.isfinite(rand)]
    # random float32 near the type's range
    e = np.array([rng.randint(-t.frac_bits - 6, t.int_bits + 6) for _ in range(100)])
    m = np.array([rng.getrandbits(24) | (1 << 23) for _ in range(100)], dtype=np.float64)
    near = (m * np.exp2(e - 24.0) * np.array([rng.choice((1, -1)) for _ in range(100)])).astype(np.float32)
    return np.concatenate([np.array(keep, dtype=np.float32), rand, near, np.array([0.0, -0.0], np.float32)])


def _raw_values(s: FixedType, t: FixedType, rng: random.Random) -> list[int]:
    lo, hi = s.raw_min, s.raw_max
    shift = s.frac_bits - t.frac_bits
    vals = {lo, hi, 0, 1, -1, lo + 1, hi - 1}
    if shift > 0:  # every tie and its neighbours around several target steps
        step = 1 << shift
        for c in [0, 1, -1, 2, -2, 3, t.raw_max, t.raw_min, t.raw_max + 1, t.raw_min - 1,
                  rng.randint(t.raw_min, t.raw_max), rng.randint(-(1 << 70), 1 << 70)]:
            base = c * step
            for d in (0, step // 2, -(step // 2), 1, -1):
                vals.update((base + d, base + d + 1, base + d - 1))
    else:
        for c in (t.raw_max, t.raw_min, t.raw_max + 1, t.raw_min - 1):
            vals.update((c >> -shift, (c >> -shift) + 1, (c >> -shift) - 1))
    vals.update(rng.randint(lo, hi) for _ in range(150))
    vals.update(rng.randint(max(lo, -(1 << 20)), min(hi, 1 << 20)) for _ in range(40))
    return sorted(v for v in vals if lo <= v <= hi)


# ------------------------------------------------------------------ the test
def _report(kind, t, xs, ours, theirs):
    bad = [(x, a, b) for x, a, b in zip(xs, ours, theirs) if a != b]
    if bad:
        lines = [f"  input {x!r}: qfx {a}, ap_fixed {b}" for x, a, b in bad[:8]]
        return [f"{kind} {t.cpp()}: {len(bad)} of {len(ours)} differ\n" + "\n".join(lines)]
    return []


def test_casts_equal_ap_fixed_headers(headers_binary):
    rng = random.Random(99)
    records, plan = [], []
    for i, t in enumerate(FLOAT_TYPES):
        xs = _double_values(t, rng)
        records.append((KIND_DOUBLE, i, struct.pack(f"<{len(xs)}d", *xs), len(xs)))
        plan.append(("double", t, xs, None))
        if t.width <= 24:
            x32 = _float32_values(t, xs, rng)
            records.append((KIND_FLOAT, i, x32.astype("<f4").tobytes(), len(x32)))
            plan.append(("float", t, x32, None))
    for i, (s, t) in enumerate(RAW_PAIRS):
        ms = _raw_values(s, t, rng)
        mask = (1 << 128) - 1
        payload = b"".join(struct.pack("<QQ", (m & mask) & ((1 << 64) - 1), (m & mask) >> 64) for m in ms)
        records.append((KIND_RAW, i, payload, len(ms)))
        plan.append(("raw", t, ms, s))
    answers = _run(headers_binary, records)

    failures, compared = [], 0
    for (kind, t, xs, s), words in zip(plan, answers):
        theirs = _as_ints(words, t)
        if kind == "double":
            ours = to_raw(quantize(torch.tensor(xs, dtype=torch.float64), t), t).tolist()
            failures += _report("float64", t, xs, ours, theirs)
            compared += len(ours)
        elif kind == "float":
            x = torch.from_numpy(np.ascontiguousarray(xs))
            ours = to_raw(quantize(x, t), t).tolist()
            failures += _report("float32", t, xs.tolist(), ours, theirs)
            compared += len(ours)
        else:
            obj = np.empty(len(xs), dtype=object)
            obj[:] = xs
            ours = [int(v) for v in requantize_raw(obj, s.frac_bits, t)]
            failures += _report(f"raw(object) from {s.cpp()} to", t, xs, ours, theirs)
            compared += len(ours)
            if all(-(1 << 63) <= v < (1 << 63) for v in xs):
                ours64 = [int(v) for v in requantize_raw(np.array(xs, dtype=np.int64), s.frac_bits, t)]
                failures += _report(f"raw(int64) from {s.cpp()} to", t, xs, ours64, theirs)
                compared += len(ours64)
    assert not failures, f"{len(failures)} type(s) differ from ap_fixed:\n" + "\n".join(failures[:20])
    assert compared >= 100_000, compared
    print(f"\n{compared} casts compared with ap_fixed, 0 mismatches")


def test_program_detects_a_wrong_cast(headers_binary):
    """The comparison can fail: a deliberately wrong rounding mode is caught."""
    t = next(t for t in FLOAT_TYPES if t.rounding == "AP_RND" and t.width >= 8 and t.overflow == "AP_SAT")
    i = FLOAT_TYPES.index(t)
    xs = [(k + 0.5) * t.lsb for k in range(-20, 20)]
    (words,) = _run(headers_binary, [(KIND_DOUBLE, i, struct.pack(f"<{len(xs)}d", *xs), len(xs))])
    wrong = to_raw(quantize(torch.tensor(xs, dtype=torch.float64), t.replace(rounding="AP_RND_CONV")), t).tolist()
    right = to_raw(quantize(torch.tensor(xs, dtype=torch.float64), t), t).tolist()
    assert right == _as_ints(words, t)
    assert wrong != _as_ints(words, t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    rng = random.Random(5)
    for t in FLOAT_TYPES[::3]:
        xs = _double_values(t, rng)
        x = torch.tensor(xs, dtype=torch.float64)
        assert torch.equal(quantize(x.cuda(), t).cpu(), quantize(x, t)), t
        if t.width <= 24:
            x32 = torch.from_numpy(_float32_values(t, xs, rng))
            assert torch.equal(quantize(x32.cuda(), t).cpu(), quantize(x32, t)), t
        ib = torch.tensor([t.int_bits - 1, t.int_bits, t.int_bits + 2])
        x2 = x[: (len(xs) // 3) * 3].reshape(-1, 3)
        assert torch.equal(quantize(x2.cuda(), t, int_bits=ib.cuda()).cpu(), quantize(x2, t, int_bits=ib)), t
