"""K-hot digit sets on integers (torch-free): digit counts, decompositions, tables and the nearest projection.

A mantissa ``m`` is K-hot when ``digits="binary"``: ``|m|`` has at most K ones
(sign separate); ``digits="csd"``: ``m`` is a sum of at most K terms ``+-2**e``
(the canonical signed-digit form has the fewest). The projection maps a real
to the nearest K-hot mantissa exactly (ties to the smaller magnitude; beyond
the range it saturates).

``digits="sp2"`` (Mix and Match, arXiv 2012.04240, sums of two powers of two):
the restricted same-sign 2-hot code of :func:`sp2_table`. For a ``W``-bit type
the code has ``m = W`` bits, ``m1 = ceil((m-1)/2)``, ``m2 = m-1-m1``; the
levels are ``+-(q1 + q2) * 2**(E+1)`` in mantissa units, ``q1`` in
``{0, 2^-1, ..., 2^-(2^m1-1)}``, ``q2`` in ``{0, 2^-1, ..., 2^-(2^m2-1)}``,
with ``E`` the top bit of the type's positive range (``W-2`` signed, ``W-1``
unsigned) so the type's binary point is the per-layer power-of-two scale;
levels below the LSB or beyond the range (``2**(E+1)`` itself) are not on the
grid and are left out. K=2 is the full code, K=1 keeps ``q2 = 0``. Every SP2
mantissa is binary 2-hot with both ones of the same sign, so the shift-add
backend handles it as any K-hot weight (two shifts, one add). The training library (``qfx.khot``), the frontend's
checks and the backend's shift-add code all use these functions.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

from .types import FixedType, raw_range

DIGIT_FLAVOURS = ("binary", "csd", "sp2")
#: K of the SP2 code: 1 (q2 = 0) or 2 (the full sum of two powers of two).
SP2_MAX_K = 2

#: Tables are enumerated from the whole grid up to this width, combinatorially above it.
_ENUM_WIDTH = 16


def check_khot(k, digits: str, width: int, what: str = "K-hot") -> None:
    """Validate ``k`` (int or list of ints) and ``digits`` for a ``width``-bit type; ValueError if bad."""
    if digits not in DIGIT_FLAVOURS:
        raise ValueError(f"{what}: digits must be one of {DIGIT_FLAVOURS}, got {digits!r}")
    ks = list(k) if isinstance(k, (list, tuple)) else [k]
    for kk in ks:
        if isinstance(kk, bool) or not isinstance(kk, (int, np.integer)):
            raise ValueError(f"{what}: K must be an int, got {kk!r}")
        if kk < 1:
            raise ValueError(f"{what}: K must be at least 1, got {kk}")
        if kk > width:
            raise ValueError(f"{what}: K={kk} is larger than the weight width W={width}")
        if digits == "sp2" and kk > SP2_MAX_K:
            raise ValueError(f"{what}: digits='sp2' is a sum of at most two powers of two: K must be 1 or 2, "
                             f"got {kk}")


# ------------------------------------------------------------ digit counts
def popcount(m: np.ndarray) -> np.ndarray:
    """Number of ones in ``|m|`` (int64 array)."""
    a = np.abs(np.asarray(m, dtype=np.int64))
    c = np.zeros(a.shape, np.int64)
    while a.any():
        c += a & 1
        a = a >> 1
    return c


def csd_weight(m: np.ndarray) -> np.ndarray:
    """Nonzero digits of the CSD (non-adjacent) form of ``m``: the fewest terms ``+-2**e`` summing to m."""
    a = np.abs(np.asarray(m, dtype=np.int64))
    h = a >> 1
    return popcount(h ^ (a + h))  # NAF: positive digits (a+h) & c, negative h & c, c = h ^ (a+h)


def sp2_split(width: int) -> tuple[int, int]:
    """(m1, m2) of the ``width``-bit SP2 code: ``m1 + m2 + 1 = width``, ``m1 >= m2`` (4 bits: (2, 1))."""
    m1 = int(width) // 2  # ceil((width - 1) / 2)
    return m1, max(0, int(width) - 1 - m1)


def sp2_exponents(width: int, signed: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Mantissa exponents of the q1 and q2 terms of the ``width``-bit SP2 code on the type's grid."""
    m1, m2 = sp2_split(width)
    top = width - 2 if signed else width - 1
    n1 = min((1 << m1) - 1, top + 1) if top >= 0 else 0
    n2 = min((1 << m2) - 1, top + 1) if top >= 0 else 0
    return tuple(top - i for i in range(n1)), tuple(top - j for j in range(n2))


@functools.lru_cache(maxsize=256)
def _sp2(width: int, signed: bool, k: int) -> np.ndarray:
    lo, hi = raw_range(width, signed)
    e1, e2 = sp2_exponents(width, signed)
    q1 = [0] + [1 << e for e in e1]
    q2 = [0] + ([1 << e for e in e2] if k >= 2 else [])
    found = set()
    for a in q1:
        for b in q2:
            v = a + b
            if v <= hi and (not signed or -v >= lo):
                found.add(v)
                if signed:
                    found.add(-v)
    vals = np.array(sorted(found), dtype=np.int64)
    vals.setflags(write=False)
    return vals


def sp2_table(width: int, signed: bool, k: int = 2) -> np.ndarray:
    """Sorted int64 mantissas of the ``width``-bit SP2 code (K=2: q1 + q2; K=1: q1 only); contains 0."""
    return _sp2(int(width), bool(signed), int(k))


def digit_count(m, digits: str, width: int | None = None, signed: bool = True) -> np.ndarray:
    """Nonzero digits of each mantissa in the given flavour.

    ``sp2``: with ``width`` (and ``signed``) of the type, 0/1/2 for a mantissa of the
    K=1/K=2 SP2 code and ``width + 1`` for one outside the code (so ``<= K`` is
    exact membership); without ``width``, the same-sign digit count (popcount),
    a necessary condition only.
    """
    if digits == "binary":
        return popcount(m)
    if digits == "csd":
        return csd_weight(m)
    if digits == "sp2":
        c = popcount(m)
        if width is None:
            return c
        a = np.asarray(m, dtype=np.int64)
        ok = np.isin(a, sp2_table(width, signed, 1))
        ok2 = np.isin(a, sp2_table(width, signed, 2))
        return np.where(ok, np.minimum(c, 1), np.where(ok2, 2, int(width) + 1)).astype(np.int64)
    raise ValueError(f"digits must be one of {DIGIT_FLAVOURS}, got {digits!r}")


def digits_of(m: int, digits: str) -> list[tuple[int, int]]:
    """Decompose an integer mantissa into terms ``(sign, e)`` with ``m == sum(sign * 2**e)``.

    ``binary``: the ones of ``|m|``, all with the sign of ``m``. ``csd``: the
    canonical signed-digit form (minimal number of terms, no two adjacent).
    Terms are ordered by increasing exponent.
    """
    m = int(m)
    if digits in ("binary", "sp2"):  # an SP2 mantissa is q1 + q2: its ones, same sign
        s = -1 if m < 0 else 1
        a = abs(m)
        return [(s, e) for e in range(a.bit_length()) if (a >> e) & 1]
    if digits == "csd":
        out = []
        e = 0
        while m != 0:
            if m & 1:
                d = 2 - (m & 3)  # +1 when m = 1 mod 4, -1 when m = 3 mod 4
                out.append((d, e))
                m -= d
            m >>= 1
            e += 1
        return out
    raise ValueError(f"digits must be one of {DIGIT_FLAVOURS}, got {digits!r}")


# ------------------------------------------------------------------ tables
@functools.lru_cache(maxsize=256)
def _table(width: int, signed: bool, k: int, digits: str) -> np.ndarray:
    if digits == "sp2":
        return _sp2(width, signed, k)
    lo, hi = raw_range(width, signed)
    if width <= _ENUM_WIDTH:
        grid = np.arange(lo, hi + 1, dtype=np.int64)
        vals = grid[digit_count(grid, digits) <= k]
    else:
        top = width + 1  # exponents 0..width cover every CSD digit of |m| <= 2**width
        found = {0}
        signs = (1,) if digits == "binary" else (1, -1)
        for j in range(1, k + 1):
            for es in itertools.combinations(range(top), j):
                for ss in itertools.product(signs, repeat=j):
                    v = sum(s << e for s, e in zip(ss, es))
                    for sv in ((v, -v) if digits == "binary" else (v,)):
                        if lo <= sv <= hi:
                            found.add(sv)
        vals = np.array(sorted(found), dtype=np.int64)
    vals.setflags(write=False)
    return vals


def khot_table(t: FixedType, k: int, digits: str) -> np.ndarray:
    """Sorted int64 array of every K-hot mantissa in ``t``'s range (always contains 0)."""
    check_khot(k, digits, t.width)
    return _table(t.width, bool(t.signed), int(k), digits)


def khot_values(t: FixedType, k: int, digits: str) -> np.ndarray:
    """The K-hot values of ``t`` as float64 (exact for widths up to 53)."""
    return khot_table(t, k, digits).astype(np.float64) * 2.0 ** -t.frac_bits


def project_raw(y, table: np.ndarray) -> np.ndarray:
    """Nearest table entry to each real ``y`` (a scaled value ``x * 2**F``); ties to the smaller magnitude.

    Exact for float64 ``y`` and tables below 2**52: the comparison ``2y`` vs
    ``lo + hi`` involves no rounding.
    """
    y = np.asarray(y, dtype=np.float64)
    tab = np.asarray(table)
    n = len(tab)
    if n == 1:
        return np.full(y.shape, tab[0], dtype=np.int64)
    idx = np.clip(np.searchsorted(tab, y), 1, n - 1)
    lo, hi = tab[idx - 1], tab[idx]
    two_y = 2.0 * y
    mid = (lo + hi).astype(np.float64)
    tie_hi = np.abs(hi) < np.abs(lo)
    take_hi = (two_y > mid) | ((two_y == mid) & tie_hi)
    return np.where(take_hi, hi, lo)


def is_khot(m, k: int, digits: str, width: int | None = None, signed: bool = True) -> np.ndarray:
    """Elementwise: does mantissa ``m`` have at most ``k`` nonzero digits (``sp2``: exact with ``width``)."""
    return digit_count(m, digits, width, signed) <= k
