"""Activation tables: the exact cast of a real function at every code of a fixed-point type (torch-free).

A table layer (sigmoid, tanh, hardsigmoid, hardswish, leaky_relu) computes
``y = T[m - raw_min]`` for an input mantissa ``m`` of type ``in_t``, where
``T[j] = cast(f(x_j), out_t)``, ``x_j = (raw_min + j) * 2**-F_in`` and ``cast`` is
the one ap_fixed assignment rule (``out_t``'s rounding, then its overflow) applied
to the EXACT real value ``f(x_j)`` -- never to a float approximation of it.

How an entry is computed, and why it is exact:

* every ap_fixed rounding mode depends only on ``floor(v * 2**(F+1))`` (which holds
  the integer part and the "half" bit) and on whether ``v * 2**(F+1)`` is an
  integer (the sticky bit). :func:`cast_fraction` turns those two facts into a
  mantissa ``2*floor(v*2**(F+1)) + sticky`` at ``F + 2`` fractional bits, which
  ``requantize_raw`` (the integer cast that tests/test_cast_headers.py holds equal
  to the Xilinx headers) rounds exactly as it would round ``v``;
* rational functions (hardsigmoid, hardswish, leaky_relu) are evaluated with
  ``fractions.Fraction``: exact, ties included;
* ``exp``, sigmoid and tanh at a nonzero rational are irrational (Lindemann), so the
  sticky bit is 1 and no tie can occur; at 0 they are 1, 1/2, 0 exactly. Away from 0,
  ``decimal``'s ``exp`` (correctly rounded, ROUND_HALF_EVEN, per the Python documentation)
  at ``P`` digits is within a relative ``10**(1-P)`` of the true value; the function is
  monotone in ``exp``, and every further operation is rounded outward (decimal contexts
  rounding toward -inf for the lower bound, +inf for the upper), so this gives an interval
  ``[lo, hi]`` holding the true value. When ``floor(lo * 2**(F+1)) == ceil(hi * 2**(F+1)) - 1``
  the floor is proven (the value times ``2**(F+1)`` is irrational, so it is strictly inside);
  otherwise the precision doubles from 30 digits (Ziv's strategy) until it is.

Softmax (:func:`softmax_raw`): ``d_i = m_i - max_j m_j`` (integers, <= 0),
``e_i = E[d_i + span]`` with ``E[k] = cast(exp((k - span) * 2**-F_in), exp_t)`` and
``span = raw_max - raw_min``, ``S = sum_i e_i`` exact, and ``y_i = cast(e_i / S, out_t)``:
the exact quotient, rounded once (:func:`div_cast`).
"""
from __future__ import annotations

import functools
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction

import numpy as np

from .cast import requantize_raw
from .types import FixedType

#: the functions a table layer can hold
TABLE_FUNCTIONS = ("sigmoid", "tanh", "hardsigmoid", "hardswish", "leaky_relu", "hard_sigmoid")
#: widest input type a table (2**W entries) is built for
MAX_TABLE_BITS = 16
#: the decimal precisions tried, in digits (Ziv's strategy); more than enough for any 64-bit output
_PRECISIONS = (30, 60, 120, 240, 480, 960)


def check_table_input(t: FixedType, what: str = "table input") -> None:
    if not isinstance(t, FixedType):
        raise ValueError(f"{what}: a FixedType is needed, got {t!r}")
    if t.width > MAX_TABLE_BITS:
        raise ValueError(f"{what} {t} has {t.width} bits: a table has 2**W entries and is built for W <= "
                         f"{MAX_TABLE_BITS}; quantize the input to fewer bits first")


# ------------------------------------------------------------------ the cast of an exact real value
def cast_sticky(floor_half: int, sticky: bool, frac_bits: int, t: FixedType) -> int:
    """``cast(v, t)`` from ``floor_half = floor(v * 2**(frac_bits+1))`` and ``sticky`` (``v * 2**(frac_bits+1)``
    not an integer), for any ``frac_bits >= t.frac_bits``."""
    m = 2 * int(floor_half) + (1 if sticky else 0)
    return int(requantize_raw(np.array([m], dtype=object), frac_bits + 2, t)[0])


def cast_fraction(v: Fraction, t: FixedType) -> int:
    """The mantissa of ``cast(v, t)`` for an exact rational ``v``."""
    v = Fraction(v)
    s = v * Fraction(2) ** (t.frac_bits + 1)
    fl = s.numerator // s.denominator
    return cast_sticky(fl, fl * s.denominator != s.numerator, t.frac_bits, t)


_EXP_RANGE = 10 ** 8  # decimal exponent range: exp of any supported input is a normal decimal


@functools.lru_cache(maxsize=None)
def _contexts(prec: int) -> tuple[Context, Context, Context]:
    """(nearest at ``prec`` digits, toward -inf and toward +inf with 10 guard digits)."""
    mk = lambda p, r: Context(prec=p, rounding=r, Emax=_EXP_RANGE, Emin=-_EXP_RANGE)  # noqa: E731
    return mk(prec, ROUND_HALF_EVEN), mk(prec + 10, ROUND_FLOOR), mk(prec + 10, ROUND_CEILING)


@functools.lru_cache(maxsize=None)
def _rel_factors(prec: int) -> tuple[Decimal, Decimal]:
    """``1 - 10**(1-prec)`` and ``1 + 10**(1-prec)`` (exact decimals)."""
    k = prec - 1  # (string construction is exact; arithmetic in the default context would round)
    return Decimal("0." + "9" * k), Decimal("1." + "0" * (k - 1) + "1")


@functools.lru_cache(maxsize=None)
def _pow2_decimal(s: int) -> Decimal:
    return _exact_decimal(Fraction(2) ** s)


def _exact_decimal(x: Fraction) -> Decimal:
    """A dyadic rational ``n / 2**k`` as a Decimal, exactly (``n * 5**k`` times ``10**-k``; string parsing
    never rounds)."""
    k = x.denominator.bit_length() - 1
    if x.denominator != 1 << k:
        raise ValueError(f"{x} is not a dyadic rational")
    return Decimal(f"{x.numerator * 5 ** k}E-{k}")


def _floor_bounds(fn: str, x: Fraction, s: int, prec: int) -> tuple[int, int]:
    """Bounds on ``floor(fn(x) * 2**s)`` from rational bounds ``lo <= fn(x) <= hi``: ``floor(lo * 2**s)`` and
    ``ceil(hi * 2**s) - 1`` (``fn(x) * 2**s`` is irrational for ``x != 0``, so it differs from the rational
    ``hi * 2**s``: a bound that lands on an integer, as ``1`` for ``sigmoid`` of a large ``x``, still decides).

    ``e`` = decimal's correctly rounded ``exp`` at ``prec`` digits lies within a relative ``10**(1-prec)``
    (twice half an ulp) of the true value; every later operation is rounded toward the side that keeps
    the bound (``dn`` toward -inf for lower bounds, ``up`` toward +inf for upper bounds).
    """
    near, dn, up = _contexts(prec)
    arg = x if fn == "exp" else (-x if fn == "sigmoid" else 2 * x)
    e = near.exp(_exact_decimal(arg))
    one_minus, one_plus = _rel_factors(prec)
    e_lo = dn.multiply(e, one_minus)
    e_hi = up.multiply(e, one_plus)
    if fn == "exp":
        lo, hi = e_lo, e_hi
    elif fn == "sigmoid":  # 1 / (1 + exp(-x)), decreasing in exp(-x)
        lo = dn.divide(Decimal(1), up.add(Decimal(1), e_hi))
        hi = up.divide(Decimal(1), dn.add(Decimal(1), e_lo))
    else:  # tanh = 1 - 2 / (exp(2x) + 1), increasing in exp(2x)
        lo = dn.subtract(Decimal(1), up.divide(Decimal(2), dn.add(e_lo, Decimal(1))))
        hi = up.subtract(Decimal(1), dn.divide(Decimal(2), up.add(e_hi, Decimal(1))))
    p2 = _pow2_decimal(s)
    a, b = dn.multiply(lo, p2), up.multiply(hi, p2)
    return int(a.to_integral_value(rounding=ROUND_FLOOR)), int(b.to_integral_value(rounding=ROUND_CEILING)) - 1


def transcendental_floor(fn: str, x: Fraction, frac_bits: int) -> tuple[int, bool]:
    """``(floor(fn(x) * 2**(F+1)), sticky)`` for ``fn`` in exp/sigmoid/tanh at a dyadic ``x`` (module doc)."""
    if x == 0:
        v = {"exp": Fraction(1), "sigmoid": Fraction(1, 2), "tanh": Fraction(0)}[fn] * Fraction(2) ** (frac_bits + 1)
        fl = v.numerator // v.denominator
        return fl, fl * v.denominator != v.numerator
    for prec in _PRECISIONS:
        fa, fb = _floor_bounds(fn, x, frac_bits + 1, prec)
        if fa == fb:
            return fa, True  # irrational: never on the grid, sticky
    raise ValueError(f"cannot decide the rounding of {fn}({x}) at {frac_bits} fractional bits with "
                     f"{_PRECISIONS[-1]} digits")


def cast_transcendental(fn: str, x: Fraction, t: FixedType) -> int:
    """``cast(fn(x), t)`` for ``fn`` in exp/sigmoid/tanh at a dyadic ``x``, exactly (see module doc)."""
    fl, sticky = transcendental_floor(fn, Fraction(x), t.frac_bits)
    return cast_sticky(fl, sticky, t.frac_bits, t)


def _cast_all(pairs, t: FixedType) -> tuple[int, ...]:
    """One vectorized cast of ``(floor_half, sticky)`` pairs at ``t.frac_bits + 1`` bits (see cast_sticky)."""
    m = [2 * fh + (1 if st else 0) for fh, st in pairs]
    big = any(abs(v) >= 1 << 62 for v in m)
    arr = np.array(m, dtype=object if big else np.int64)
    return tuple(int(v) for v in np.asarray(requantize_raw(arr, t.frac_bits + 2, t)).tolist())


def _fraction_floor(v: Fraction, frac_bits: int) -> tuple[int, bool]:
    s = v * Fraction(2) ** (frac_bits + 1)
    fl = s.numerator // s.denominator
    return fl, fl * s.denominator != s.numerator


def rational_value(fn: str, x: Fraction, slope=None) -> Fraction:
    """The exact value of a rational table function (PyTorch's definitions; ``hard_sigmoid`` is ONNX's
    ``HardSigmoid``: ``clamp(alpha * x + beta, 0, 1)`` with ``slope = (alpha, beta)``, exact values)."""
    if fn == "hard_sigmoid":
        alpha, beta = slope
        return min(max(alpha * x + beta, Fraction(0)), Fraction(1))
    if fn == "hardsigmoid":  # relu6(x + 3) / 6
        return min(max(x + 3, Fraction(0)), Fraction(6)) / 6
    if fn == "hardswish":  # x * relu6(x + 3) / 6
        return x * min(max(x + 3, Fraction(0)), Fraction(6)) / 6
    if fn == "leaky_relu":
        if slope is None:
            raise ValueError("leaky_relu needs its slope")
        return x if x >= 0 else x * slope
    raise ValueError(f"{fn!r} is not a rational table function")


# ------------------------------------------------------------------ tables
def _code_values(t: FixedType):
    step = Fraction(2) ** -t.frac_bits
    return [m * step for m in range(t.raw_min, t.raw_max + 1)]


@functools.lru_cache(maxsize=64)
def _table(fn: str, in_t: FixedType, out_t: FixedType, slope: Fraction | None) -> tuple[int, ...]:
    xs = _code_values(in_t)
    f = out_t.frac_bits
    if fn in ("sigmoid", "tanh"):
        return _cast_all([transcendental_floor(fn, x, f) for x in xs], out_t)
    return _cast_all([_fraction_floor(rational_value(fn, x, slope), f) for x in xs], out_t)


def table_raw(fn: str, in_t: FixedType, out_t: FixedType, slope=None) -> np.ndarray:
    """``T[j] = cast(fn(x_j), out_t)`` for ``j = 0 .. 2**W_in - 1`` (``x_j`` the code ``raw_min + j``), int64.

    ``slope`` (leaky_relu only) is the exact slope value (a Fraction or a float, taken exactly); for
    ``hard_sigmoid`` it is the pair ``(alpha, beta)``.
    """
    if fn not in TABLE_FUNCTIONS:
        raise ValueError(f"unknown table function {fn!r}; known: {', '.join(TABLE_FUNCTIONS)}")
    check_table_input(in_t)
    if out_t.width > 62:
        raise ValueError(f"table output type {out_t} is wider than 62 bits")
    if fn == "hard_sigmoid":
        s = tuple(Fraction(v) for v in slope)
    else:
        s = None if slope is None else Fraction(slope)
    if (fn in ("leaky_relu", "hard_sigmoid")) != (s is not None):
        raise ValueError("slope is given for leaky_relu (and (alpha, beta) for hard_sigmoid), and only for them")
    return np.array(_table(fn, in_t, out_t, s), dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _exp_table(in_t: FixedType, exp_t: FixedType) -> tuple[int, ...]:
    span = in_t.raw_max - in_t.raw_min
    step = Fraction(2) ** -in_t.frac_bits
    return _cast_all([transcendental_floor("exp", (k - span) * step, exp_t.frac_bits) for k in range(span + 1)],
                     exp_t)


def exp_table_raw(in_t: FixedType, exp_t: FixedType) -> np.ndarray:
    """Softmax's ``E[k] = cast(exp((k - span) * 2**-F_in), exp_t)``, ``k = 0 .. span`` (``span = raw_max - raw_min``)."""
    check_table_input(in_t, "softmax input")
    check_exp_type(exp_t)
    e = np.array(_exp_table(in_t, exp_t), dtype=np.int64)
    if e[-1] <= 0:
        raise ValueError(f"softmax exp type {exp_t} turns exp(0) = 1 into {e[-1]}: the sum could be 0")
    return e


def check_exp_type(exp_t: FixedType) -> None:
    if not isinstance(exp_t, FixedType) or exp_t.signed or exp_t.width > 32:
        raise ValueError(f"softmax exp type must be an unsigned ap_ufixed of at most 32 bits, got {exp_t}")


def div_shift(out_t: FixedType) -> int:
    """``k`` of :func:`div_cast`: the quotient is taken to ``k = max(F_out + 1, 0)`` fractional bits."""
    return max(out_t.frac_bits + 1, 0)


def div_cast(e, s, out_t: FixedType) -> np.ndarray:
    """``cast(e / s, out_t)`` for non-negative integers ``e`` and positive ``s`` (arrays), exactly.

    ``q = floor(e * 2**k / s)``, sticky ``= (e * 2**k mod s != 0)``, then the mantissa ``2q + sticky``
    at ``k + 1`` fractional bits is cast (it rounds like ``e / s``; see the module doc).
    """
    k = div_shift(out_t)
    e = np.asarray(e, dtype=object)
    s = np.asarray(s, dtype=object)
    num = e * (1 << k)
    q = num // s
    sticky = (num - q * s) != 0
    m = 2 * q + sticky.astype(np.int64).astype(object)
    return requantize_raw(m, k + 1, out_t)


def softmax_raw(m, in_t: FixedType, exp_t: FixedType, out_t: FixedType) -> np.ndarray:
    """The integer softmax over the last axis of input mantissas ``m`` (see module doc)."""
    m = np.asarray(m, dtype=np.int64)
    e_tab = exp_table_raw(in_t, exp_t)
    span = in_t.raw_max - in_t.raw_min
    d = m - m.max(axis=-1, keepdims=True)
    e = e_tab[d + span]
    s = e.astype(object).sum(axis=-1, keepdims=True)
    y = div_cast(e, np.broadcast_to(s, e.shape), out_t)
    return np.asarray(y).astype(np.int64)
