"""FixedType: spelling, ranges, result-type rules (checked against the C++ headers), bad input."""
from __future__ import annotations

import itertools
import random
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from qfx_compile.backend import toolchain
from qfx_compile.qfx.quantize import from_raw, max_exact_width, quantize, requantize_raw, to_raw
from qfx_compile.fixed.types import OVERFLOW_MODES, ROUNDING_MODES, FixedType, common_type

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ spelling
@pytest.mark.parametrize("q", ROUNDING_MODES)
@pytest.mark.parametrize("o", OVERFLOW_MODES)
@pytest.mark.parametrize("signed", [True, False])
def test_str_parse_round_trip(q, o, signed):
    for w, i in [(1, -4), (8, 3), (17, 25), (53, 0), (200, 100)]:
        t = FixedType(w, i, signed, q, o)
        assert FixedType.parse(str(t)) == t
        assert FixedType.parse(t.cpp()) == t
        assert t.cpp() == f"{'ap_fixed' if signed else 'ap_ufixed'}<{w}, {i}, {q}, {o}>"


def test_parse_defaults_and_spaces():
    assert FixedType.parse("ap_fixed<8,3>") == FixedType(8, 3, True, "AP_TRN", "AP_WRAP")
    assert FixedType.parse("  ap_ufixed < 8 , -2 , AP_RND >  ") == FixedType(8, -2, False, "AP_RND", "AP_WRAP")
    assert FixedType.parse("ap_fixed<16,6,AP_RND_CONV,AP_SAT,0>") == FixedType(16, 6, True, "AP_RND_CONV", "AP_SAT")
    assert str(FixedType(8, 3)) == "ap_fixed<8, 3>"
    assert str(FixedType(8, 3, overflow="AP_SAT")) == "ap_fixed<8, 3, AP_TRN, AP_SAT>"
    assert str(FixedType(8, 3, False, "AP_RND")) == "ap_ufixed<8, 3, AP_RND>"


@pytest.mark.parametrize("text, words", [
    ("ap_fixed<8,3,AP_FOO>", "unknown rounding mode 'AP_FOO'"),
    ("ap_fixed<8,3,AP_TRN,AP_BAR>", "unknown overflow mode 'AP_BAR'"),
    ("ap_fixed<8,3,AP_SAT>", "unknown rounding mode 'AP_SAT'"),
    ("ap_fixed<8,3,AP_TRN,AP_WRAP_SM>", "AP_WRAP_SM is not supported"),
    ("ap_fixed<0,3>", "width must be in 1..1024"),
    ("ap_fixed<-2,3>", "width must be in 1..1024"),
    ("ap_fixed<8>", "malformed"),
    ("ap_fixed<8,3", "malformed"),
    ("ap_int<8>", "malformed"),
    ("ap_fixed<8.5,3>", "malformed"),
    ("fixed<8,3>", "malformed"),
    ("ap_fixed<8,3,AP_TRN,AP_SAT,2>", "saturation bits N=2"),
])
def test_parse_errors(text, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(".", r"\.")):
        FixedType.parse(text)


def test_constructor_errors():
    with pytest.raises(ValueError, match="width must be in"):
        FixedType(0, 0)
    with pytest.raises(ValueError, match="width must be an int"):
        FixedType(8.0, 3)
    with pytest.raises(ValueError, match="int_bits must be an int"):
        FixedType(8, "3")
    with pytest.raises(ValueError, match="signed must be a bool"):
        FixedType(8, 3, "no")
    with pytest.raises(ValueError, match="unknown rounding"):
        FixedType(8, 3, True, "ROUND")
    with pytest.raises(ValueError, match="AP_WRAP_SM is not supported"):
        FixedType(8, 3, True, "AP_TRN", "AP_WRAP_SM")
    with pytest.raises(ValueError, match="malformed|expected a C\\+\\+ type string"):
        FixedType.parse(8)
    assert FixedType(np.int64(8), np.int32(3), np.bool_(False)) == FixedType(8, 3, False)


# ------------------------------------------------------------------ ranges
def test_ranges():
    for w, i, s in itertools.product([1, 2, 5, 8, 24, 53], [-4, 0, 1, 3, 60], [True, False]):
        t = FixedType(w, i, s)
        assert t.frac_bits == w - i
        assert t.raw_min == (-(2 ** (w - 1)) if s else 0)
        assert t.raw_max == (2 ** (w - 1) - 1 if s else 2 ** w - 1)
        assert Fraction(t.lsb) == Fraction(1, 2 ** (w - i)) if w - i >= 0 else Fraction(2 ** (i - w))
        assert Fraction(t.min) == t.exact_min() == t.raw_min * Fraction(2) ** (i - w)
        assert Fraction(t.max) == t.exact_max() == t.raw_max * Fraction(2) ** (i - w)
    assert FixedType(1, -1, False).max == 0.25  # reference: ap_ufixed<1,-1> holds 0 or 0.25
    assert FixedType(4, 4).max == 7 and FixedType(4, 4).min == -8


# ------------------------------------------------------------------ result types vs C++
def _pairs():
    rng = random.Random(3)
    out = [((5, 2, True), (75, 62, True)), ((8, 3, False), (8, 3, True)), ((8, 3, True), (8, 3, False)),
           ((1, 1, False), (1, 1, True)), ((4, -2, False), (6, 9, False)), ((12, 14, True), (3, -5, False))]
    for _ in range(24):
        a = rng.randint(1, 40)
        b = rng.randint(1, 40)
        out.append(((a, rng.randint(-4, a + 4), rng.random() < 0.5), (b, rng.randint(-4, b + 4), rng.random() < 0.5)))
    return out


@pytest.fixture(scope="module")
def cpp_result_types():
    try:
        toolchain.find_cxx()
        toolchain.find_ap_types()
    except toolchain.ToolchainError as e:
        pytest.skip(str(e))
    pairs = _pairs()
    lines = ["#include <ap_fixed.h>", "#include <cstdio>",
             "template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>",
             "void show(const ap_fixed_base<W, I, S, Q, O, N>&) { std::printf(\"%d %d %d\\n\", W, I, (int)S); }",
             "int main() {"]
    for k, (a, b) in enumerate(pairs):
        ta, tb = FixedType(*a), FixedType(*b)
        lines.append(f"  {{ {ta.cpp()} a = 0; {tb.cpp()} b = 0; show(a + b); show(a * b); }}")
    lines.append("  return 0;\n}\n")
    binary = toolchain.compile_cached({"rtypes.cpp": "\n".join(lines)}, ROOT / "build" / "types", "rtypes")
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.split("\n")
    rows = [tuple(int(v) for v in line.split()) for line in out if line.strip()]
    return pairs, rows


def test_add_mul_types_match_cpp(cpp_result_types):
    pairs, rows = cpp_result_types
    assert len(rows) == 2 * len(pairs)
    for k, (a, b) in enumerate(pairs):
        ta, tb = FixedType(*a), FixedType(*b)
        s, p = ta.add(tb), ta.mul(tb)
        assert (s.width, s.int_bits, int(s.signed)) == rows[2 * k], (ta, tb, "+")
        assert (p.width, p.int_bits, int(p.signed)) == rows[2 * k + 1], (ta, tb, "*")


def test_add_mul_hold_every_result_exactly():
    rng = random.Random(4)
    for a, b in _pairs()[:12]:
        ta, tb = FixedType(*a), FixedType(*b)
        for _ in range(200):
            ma, mb = rng.randint(ta.raw_min, ta.raw_max), rng.randint(tb.raw_min, tb.raw_max)
            va, vb = ta.value_of_raw(ma), tb.value_of_raw(mb)
            for rt, v in ((ta.add(tb), va + vb), (ta.mul(tb), va * vb)):
                m = v * Fraction(2) ** rt.frac_bits
                assert m.denominator == 1 and rt.raw_min <= m <= rt.raw_max


# ------------------------------------------------------------------ for_raw_range
def test_for_raw_range_minimal():
    rng = random.Random(5)
    cases = [(0, 0), (-1, 0), (0, 1), (-1, -1), (-128, 127), (-129, 127), (-128, 128), (0, 255), (0, 256)]
    cases += [tuple(sorted((rng.randint(-(1 << 70), 1 << 70), rng.randint(-(1 << 70), 1 << 70)))) for _ in range(200)]
    cases += [tuple(sorted((rng.randint(-300, 300), rng.randint(-300, 300)))) for _ in range(200)]
    for lo, hi in cases:
        for f in (0, 5, -3):
            t = FixedType.for_raw_range(lo, hi, f)
            assert t.frac_bits == f and t.signed == (lo < 0)
            assert t.raw_min <= lo and hi <= t.raw_max
            if t.width > 1:  # one bit less does not hold the range
                smaller = FixedType(t.width - 1, t.int_bits - 1, t.signed)
                assert not (smaller.raw_min <= lo and hi <= smaller.raw_max), (lo, hi)
    t = FixedType.for_raw_range(0, 5, 0, signed=True)
    assert t.signed and t.width == 4
    with pytest.raises(ValueError, match="empty range"):
        FixedType.for_raw_range(3, 2, 0)
    with pytest.raises(ValueError, match="cannot hold negative"):
        FixedType.for_raw_range(-3, 2, 0, signed=False)


def test_sum_of_and_common_type():
    t = FixedType(8, 3)
    s = t.sum_of(100)
    assert s.raw_min <= t.raw_min * 100 and t.raw_max * 100 <= s.raw_max and s.frac_bits == t.frac_bits
    with pytest.raises(ValueError, match="n >= 1"):
        t.sum_of(0)
    types = [FixedType(8, 3), FixedType(6, 6, False), FixedType(4, -2)]
    c = common_type(types)
    for u in types:
        for m in (u.raw_min, u.raw_max):
            v = u.value_of_raw(m) * Fraction(2) ** c.frac_bits
            assert v.denominator == 1 and c.raw_min <= v <= c.raw_max
    with pytest.raises(ValueError, match="at least one type"):
        common_type([])


# ------------------------------------------------------------------ casts that cannot be exact
def test_cast_rejects_inexact_dtypes():
    with pytest.raises(ValueError, match="25-bit type cannot be computed exactly in float32.*float64"):
        quantize(torch.zeros(3), FixedType(25, 3))
    with pytest.raises(ValueError, match="54-bit type cannot be computed exactly in float64.*requantize_raw"):
        quantize(torch.zeros(3, dtype=torch.float64), FixedType(54, 3))
    with pytest.raises(ValueError, match="float32 or float64 tensors, got torch.float16"):
        quantize(torch.zeros(3, dtype=torch.float16), FixedType(8, 3))
    with pytest.raises(ValueError, match="float32 or float64 tensors, got torch.int64"):
        quantize(torch.zeros(3, dtype=torch.int64), FixedType(8, 3))
    with pytest.raises(ValueError, match="expects a torch.Tensor"):
        quantize(np.zeros(3), FixedType(8, 3))
    with pytest.raises(ValueError, match="expects a FixedType"):
        quantize(torch.zeros(3), "ap_fixed<8,3>")
    with pytest.raises(ValueError, match="exponent range of float32"):
        quantize(torch.zeros(3), FixedType(8, -200))
    with pytest.raises(ValueError, match="one entry per channel"):
        quantize(torch.zeros(2, 3), FixedType(8, 3), int_bits=[1, 2])
    with pytest.raises(ValueError, match="integer mantissas"):
        requantize_raw(np.zeros(3), 0, FixedType(8, 3))
    with pytest.raises(ValueError, match="not on the grid"):
        to_raw(torch.tensor([0.3]), FixedType(8, 3))
    with pytest.raises(ValueError, match="outside the range"):
        to_raw(torch.tensor([100.0]), FixedType(8, 3))
    with pytest.raises(ValueError, match="outside the range"):
        from_raw(torch.tensor([128]), FixedType(8, 3))
    with pytest.raises(ValueError, match="does not fit"):
        from_raw(torch.tensor([1]), FixedType(30, 3), dtype=torch.float32)
    assert max_exact_width(torch.float32) == 24 and max_exact_width(torch.float64) == 53


def test_requantize_raw_wide_int64_inputs():
    """int64 extremes and uint64 values above 2**63 are handled exactly (no silent int64 overflow)."""
    t = FixedType(70, 70, True, "AP_TRN", "AP_SAT")
    m = np.array([-(1 << 63), (1 << 63) - 1, 0], dtype=np.int64)
    got = requantize_raw(m, 0, t)
    assert [int(v) for v in got] == [-(1 << 63), (1 << 63) - 1, 0]
    t = FixedType(8, 8, True, "AP_TRN", "AP_SAT")
    assert requantize_raw(np.array([-(1 << 63)], np.int64), 1, t).tolist() == [-128]
    # shift left by one: -2**64 saturates (an int64 shift would wrap to 0)
    t = FixedType(66, 66, True, "AP_TRN", "AP_SAT")
    assert [int(v) for v in requantize_raw(np.array([-(1 << 63)], np.int64), -1, t)] == [-(1 << 64)]
    t = FixedType(8, 8, True, "AP_TRN", "AP_SAT")
    assert requantize_raw(np.array([-(1 << 63)], np.int64), -1, t).tolist() == [-128]
    u = np.array([(1 << 64) - 1], dtype=np.uint64)
    assert requantize_raw(u, 0, FixedType(64, 64, False, "AP_TRN", "AP_WRAP")).tolist() == [(1 << 64) - 1]
