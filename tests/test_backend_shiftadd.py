"""backend.shiftadd: the straight-line code is exact, and every intermediate has the smallest exact type.

The generated lines are evaluated here by a small independent interpreter (exact rationals):
every declared value must be representable in its declared ap_fixed type (on its grid, in
its range) for every input, the result must equal b + sum w*x, and each type must be the
smallest one: the bounds of its interval are reached by some input.
"""
import re
from fractions import Fraction

import numpy as np
import pytest

from qfx_compile.backend import shiftadd
from qfx_compile.qfx.khot import digits_of
from qfx_compile.fixed.types import FixedType as F

MANT = re.compile(r"^const ap_u?int<\d+> (\w+) = qfx::raw_of\(x\[(\d+)\]\);$")
DECL = re.compile(r"^const ap_(u?)int<(\d+)> (\w+) = (.*);  // (ap_u?fixed)<(\d+), (-?\d+)>$")
OPERAND = re.compile(r"^\(?ap_u?int<(\d+)>\((\w+|b\[\d+\])\)(?: << (\d+)\))?$")
ASSIGN = re.compile(r"^y\[(\d+)\] = qfx::from_raw<(.*)>\((\w+|b\[\d+\])\);  //.*$")


def _operand(text, env, braw):
    m = OPERAND.match(text.strip())
    assert m, text
    name, shift = m.group(2), int(m.group(3) or 0)
    v = braw[int(name[2:-1])] if name.startswith("b[") else env[name]
    return v << shift


def _eval_expr(expr, env, braw):
    """Exact integer value of a generated right-hand side (no wrap-around)."""
    expr = expr.strip()
    if expr.startswith("-"):
        return -_operand(expr[1:], env, braw)
    parts = re.split(r" ([+-]) ", expr)
    v = _operand(parts[0], env, braw)
    for op, rhs in zip(parts[1::2], parts[2::2]):
        v = v + _operand(rhs, env, braw) if op == "+" else v - _operand(rhs, env, braw)
    return v


def run_lines(lines, xm, braw, b_t):
    """Executes the body on input mantissas ``xm``; returns (outputs as exact values, mantissas, types).

    The C++ computes modulo 2^W; that equals the exact integer arithmetic done here exactly
    when every declared result fits its W bits, which is asserted for every line."""
    env, types, y = {}, {}, {}
    for line in lines:
        if line.startswith("//"):
            continue
        m = MANT.match(line)
        if m:
            env[m.group(1)] = xm[int(m.group(2))]
            continue
        m = DECL.match(line)
        if m:
            uns, w, name, expr, base, w2, i = m.groups()
            t = F(int(w2), int(i), base == "ap_fixed")
            assert int(w) == t.width and (uns == "u") == (not t.signed), line
            v = _eval_expr(expr, env, braw)
            assert t.raw_min <= v <= t.raw_max, (line, v, t)  # exact: no wrap-around happened
            env[name], types[name] = v, t
            continue
        m = ASSIGN.match(line)
        assert m, line
        j, tname, src = int(m.group(1)), m.group(2).strip(), m.group(3)
        if src.startswith("b["):
            y[j] = Fraction(braw[int(src[2:-1])]) * Fraction(2) ** -b_t.frac_bits
        else:
            t = F.parse(tname)
            y[j] = Fraction(env[src]) * Fraction(2) ** -t.frac_bits
    return y, env, types


def _random_khot(rng, n_out, n_in, k):
    w = np.zeros((n_out, n_in), dtype=np.int64)
    for j in range(n_out):
        for i in range(n_in):
            for _ in range(rng.integers(0, k + 1)):
                w[j, i] += int(rng.choice([-1, 1])) << int(rng.integers(0, 7))
    return w


CASES = [(F(8, 3), F(8, 2), 3, 0), (F(6, 2, False), F(6, 1), 2, 1), (F(4, 4), F(10, 3), 1, 2),
         (F(12, 1), F(7, 7), 3, 3)]


@pytest.mark.parametrize("x_t,w_t,k,seed", CASES)
def test_straight_line_is_exact_and_minimal(x_t, w_t, k, seed):
    rng = np.random.default_rng(seed)
    n_out, n_in = 6, 9
    w = _random_khot(rng, n_out, n_in, k)
    w[0] = 0                      # bias alone
    w[1] = -np.abs(w[1]) - 1      # all negative
    w[2] = 0
    w[2, 4] = 3                   # two terms on one input
    frac = np.array([w_t.frac_bits + (j % 3) - 1 for j in range(n_out)])  # per-channel binary points
    b_t = F(9, 4)
    b = rng.integers(b_t.raw_min, b_t.raw_max, size=n_out)
    b[1] = 0
    terms = shiftadd.layer_terms(w, frac)
    for j in range(n_out):
        assert sum(s * 2 ** e for _, s, e in [(t.index, t.sign, t.exp) for t in terms[j]]) == \
            sum(Fraction(int(w[j, i])) * Fraction(2) ** -int(frac[j]) for i in range(n_in))
    code = shiftadd.layer_code(terms, x_t, [int(v) for v in b], b_t, lambda i: f"m{i}", lambda i: f"x[{i}]")
    assert code.terms == sum(len(digits_of(int(m), "csd")) for m in w.reshape(-1))
    braw = [int(v) for v in b]
    bias = [Fraction(v) * Fraction(2) ** -b_t.frac_bits for v in braw]
    sx = Fraction(2) ** -x_t.frac_bits
    want = lambda xm: [bias[j] + sum(Fraction(int(w[j, i])) * Fraction(2) ** -int(frac[j]) * xm[i] * sx  # noqa
                                     for i in range(n_in)) for j in range(n_out)]
    xs = [[int(v) for v in rng.integers(x_t.raw_min, x_t.raw_max + 1, size=n_in)] for _ in range(30)]
    xs += [[x_t.raw_min] * n_in, [x_t.raw_max] * n_in]
    for xm in xs:
        y, _, _ = run_lines(code.body, xm, braw, b_t)
        assert [y[j] for j in range(n_out)] == want(xm)
    # minimality: each intermediate's interval bounds are reached, so no narrower type holds it
    per_channel = [shiftadd.channel_code(terms[j], x_t, lambda i: f"m{i}", int(b[j]), b_t, f"a{j}", f"y[{j}]",
                                         f"qfx::from_raw<C::b_t>(b[{j}])") for j in range(n_out)]
    head = [ln for ln in code.body if ln.startswith("const") and "raw_of" in ln]
    n_checked = 0
    for ch in per_channel:
        for d in ch.declared:
            for bound, pick in ((d.hi, 1), (d.lo, -1)):
                xm = [x_t.raw_max if pick * d.coef.get(i, 0) > 0 else x_t.raw_min for i in range(n_in)]
                _, env, types = run_lines(head + ch.lines, xm, braw, b_t)
                assert env[d.name] == bound
                assert types[d.name] == d.type
            smaller = d.type.width - 1
            if smaller >= 1:
                t2 = F(smaller, smaller - d.f, d.type.signed)
                assert not (t2.raw_min <= d.lo and d.hi <= t2.raw_max)
                if d.type.signed and d.lo >= 0:
                    pytest.fail("a non-negative interval must get an unsigned type")
            n_checked += 1
    assert n_checked == code.adders
    assert per_channel[0].adders == 0 and per_channel[0].acc is None


def test_balanced_tree_depth_and_adders():
    x_t = F(8, 3)
    terms = [shiftadd.Term(i, 1, 0) for i in range(64)]
    ch = shiftadd.channel_code(terms, x_t, lambda i: f"m{i}", 0, F(8, 3), "a", "y[0]", "b0")
    assert ch.adders == 63 and ch.depth == 6
    # a sum of 64 8-bit values needs 14 bits, and the root is typed exactly that
    assert ch.acc == F(14, 9)
    assert max(d.type.width for d in ch.declared) == 14 and min(d.type.width for d in ch.declared) == 9


def test_sign_shift_tables():
    raw = np.array([[3, 0], [-6, 1]])
    sign, shift, k = shiftadd.sign_shift_tables(raw)
    assert k == 2
    vals = [sum(int(s) << int(e) for s, e in zip(sign[i * k:(i + 1) * k], shift[i * k:(i + 1) * k]))
            for i in range(4)]
    assert vals == [3, 0, -6, 1]
    assert set(sign.tolist()) <= {-1, 0, 1} and shift.min() >= 0
