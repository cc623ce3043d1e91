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
from qfx_compile.fixed.digits import digits_of
from qfx_compile.fixed.types import FixedType as F

MANT = re.compile(r"^const ap_u?int<\d+> (\w+) = qfx::raw_of\(x\[(\d+)\]\);$")
DECL = re.compile(r"^const ap_(u?)int<(\d+)> (\w+) = (.*?);  // (ap_u?fixed)<(\d+), (-?\d+)>.*$")
OPERAND = re.compile(r"^\(?ap_u?int<(\d+)>\((\w+|b\[\d+\])\)(?: << (\d+)\))?$")
ASSIGN = re.compile(r"^y\[(\d+)\] = qfx::convert<C::out_t>\(qfx::from_raw<(.*)>\((\w+|b\[\d+\])\)\);  //.*$")


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
    assert len(parts) in (1, 3), expr   # one adder per line
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
            assert name not in env, f"{name} declared twice"
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
@pytest.mark.parametrize("max_depth", [None, 2])
def test_straight_line_is_exact_and_minimal(x_t, w_t, k, seed, max_depth):
    rng = np.random.default_rng(seed)
    n_out, n_in = 8, 9
    w = _random_khot(rng, n_out, n_in, k)
    w[0] = 0                      # bias alone
    w[1] = -np.abs(w[1]) - 1      # all negative
    w[2] = 0
    w[2, 4] = 3                   # two terms on one input
    w[5] = w[4]                   # equal rows: shared entirely
    w[6] = 2 * w[3]
    frac = np.array([w_t.frac_bits + (j % 3) - 1 for j in range(n_out)])  # per-channel binary points
    b_t = F(9, 4)
    b = rng.integers(b_t.raw_min, b_t.raw_max, size=n_out)
    b[1] = 0
    b[7] = 0
    terms = shiftadd.layer_terms(w, frac)
    for j in range(n_out):
        assert sum(Fraction(t.sign) * Fraction(2) ** t.exp for t in terms[j] for _ in [0]) == \
            sum(Fraction(int(w[j, i])) * Fraction(2) ** -int(frac[j]) for i in range(n_in))
    code = shiftadd.layer_code(terms, x_t, [int(v) for v in b], b_t, lambda i: f"m{i}", lambda i: f"x[{i}]",
                               max_depth=max_depth)
    assert code.terms == sum(len(digits_of(int(m), "csd")) for m in w.reshape(-1))
    assert code.graph.n_adders < code.tree_adders   # rows 4/5 (and 3/6) share their whole sums
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
    # one line per adder: the declarations are the graph's adders plus the bias/negation lines
    decl = [ln for ln in code.body if DECL.match(ln)]
    assert len(decl) == code.adders == len(code.declared)
    # minimality: each intermediate's interval bounds are reached, so no narrower type holds it
    for d in code.declared:
        for bound, pick in ((d.hi, 1), (d.lo, -1)):
            xm = [x_t.raw_max if pick * d.coef.get(i, 0) > 0 else x_t.raw_min for i in range(n_in)]
            _, env, types = run_lines(code.body, xm, braw, b_t)
            assert env[d.name] * 1 == bound
            assert types[d.name] == d.type
        smaller = d.type.width - 1
        if smaller >= 1:
            t2 = F(smaller, smaller - d.f, d.type.signed)
            assert not (t2.raw_min <= d.lo and d.hi <= t2.raw_max)
        if d.type.signed and d.lo >= 0:
            pytest.fail("a non-negative interval must get an unsigned type")


def test_balanced_tree_depth_and_adders():
    x_t = F(8, 3)
    terms = [[shiftadd.Term(i, 1, 0) for i in range(64)]]
    code = shiftadd.layer_code(terms, x_t, [0], F(8, 3), lambda i: f"m{i}", lambda i: f"x[{i}]")
    assert code.adders == 63 and code.depth == 6
    # a sum of 64 8-bit values needs 14 bits, and the root is typed exactly that
    assert code.widest == F(14, 9)
    assert max(d.type.width for d in code.declared) == 14 and min(d.type.width for d in code.declared) == 9


def test_names_say_what_they_sum():
    x_t = F(8, 8)
    w = np.array([[1, 4, 0], [1, 4, 1], [-1, 4, 0]])
    code = shiftadd.layer_code(shiftadd.layer_terms(w, np.zeros(3, int)), x_t, [0, 0, 0], F(8, 8),
                               lambda i: f"m{i}", lambda i: f"x[{i}]")
    text = "\n".join(code.body)
    assert "m0_p_m1x4 = ap_int<11>(m0) + (ap_int<11>(m1) << 2);  // ap_fixed<11, 11> = m0 + 4*m1" in text
    assert code.graph.n_adders == 3   # m0 + 4 m1 once, + m2, and 4 m1 - m0


def test_sign_shift_tables():
    raw = np.array([[3, 0], [-6, 1]])
    sign, shift, k = shiftadd.sign_shift_tables(raw)
    assert k == 2
    vals = [sum(int(s) << int(e) for s, e in zip(sign[i * k:(i + 1) * k], shift[i * k:(i + 1) * k]))
            for i in range(4)]
    assert vals == [3, 0, -6, 1]
    assert set(sign.tolist()) <= {-1, 0, 1} and shift.min() >= 0
