"""Exact intervals of sums over the actual constants: the accumulator type rules the ops declare.

``linear_acc`` (``sum x*w + b``, per output channel), ``batchnorm_acc`` (``x*a_c + b_c``),
``add_acc`` (``a + b``) and ``sum_acc`` (a sum of ``n`` values) give the smallest type in
which no partial sum, in any order, can overflow, at the fewest fractional bits that hold
every term exactly.
"""
from __future__ import annotations

import numpy as np

from ...fixed.types import FixedType
from ..graph import Const
from .base import as_wide, const_common


def _trailing_zeros(raw) -> int | None:
    """Common trailing zero bits of the nonzero mantissas (None when all are zero)."""
    tz = None
    for v in np.asarray(as_wide(raw)).ravel():
        v = int(v)
        if v:
            z = (v & -v).bit_length() - 1
            tz = z if tz is None else min(tz, z)
    return tz


def _bias_terms(b: Const | None, n: int):
    if b is None:
        return [0] * n, 0, None
    raw, f = const_common(b)
    return [int(v) for v in as_wide(raw).ravel()], f, _trailing_zeros(raw)


def _finish(lo: int, hi: int, g: int, f_needed: int) -> FixedType:
    f = min(f_needed, g)
    d = 1 << (g - f)
    assert lo % d == 0 and hi % d == 0, "interval ends must be exact at the reduced binary point"
    return FixedType.for_raw_range(lo // d, hi // d, f)


def linear_acc(weight: Const, bias: Const | None, tx: FixedType) -> FixedType:
    """Accumulator type of ``sum x*w + b`` (weights (O, ...), per output channel intervals)."""
    w, fw = const_common(weight)
    w = as_wide(np.asarray(w).reshape(w.shape[0], -1))
    pos = np.where(w > 0, w, 0).sum(axis=1)
    neg = np.where(w < 0, w, 0).sum(axis=1)
    b, fb, tzb = _bias_terms(bias, w.shape[0])
    fa = tx.frac_bits + fw
    g = max(fa, fb)
    lo = hi = None
    for j in range(w.shape[0]):
        p, q = int(pos[j]), int(neg[j])
        h = (p * tx.raw_max + q * tx.raw_min) << (g - fa)
        lw = (p * tx.raw_min + q * tx.raw_max) << (g - fa)
        bj = b[j] << (g - fb)
        h, lw = h + bj, lw + bj
        lo = lw if lo is None else min(lo, lw)
        hi = h if hi is None else max(hi, h)
    tzw = _trailing_zeros(w)
    needed = [fa - tzw] if tzw is not None else []
    if tzb is not None:
        needed.append(fb - tzb)
    t = _finish(lo, hi, g, max(needed) if needed else min(tx.frac_bits, g))
    if tzw is None and t.frac_bits - fa >= t.width:
        # all weights zero: the products add nothing, but the kernels still align the product grid
        # (frac fa) to the accumulator's: keep at least one bit of it (hls_lib/qfx_mac.h)
        w = t.frac_bits - fa + 1
        t = FixedType(w, w - t.frac_bits, t.signed)
    return t


def batchnorm_acc(scale: Const, shift: Const, tx: FixedType) -> FixedType:
    a, fa = const_common(scale)
    b, fb = const_common(shift)
    f1 = tx.frac_bits + fa
    g = max(f1, fb)
    lo = hi = None
    for ac, bc in zip(as_wide(a).ravel(), as_wide(b).ravel()):
        ends = [int(ac) * tx.raw_min << (g - f1), int(ac) * tx.raw_max << (g - f1)]
        bs = int(bc) << (g - fb)
        lo = min(ends) + bs if lo is None else min(lo, min(ends) + bs)
        hi = max(ends) + bs if hi is None else max(hi, max(ends) + bs)
    tza, tzb = _trailing_zeros(a), _trailing_zeros(b)
    needed = ([f1 - tza] if tza is not None else []) + ([fb - tzb] if tzb is not None else [])
    return _finish(lo, hi, g, max(needed) if needed else min(tx.frac_bits, g))


def add_acc(ta: FixedType, tb: FixedType) -> FixedType:
    g = max(ta.frac_bits, tb.frac_bits)
    sa, sb = g - ta.frac_bits, g - tb.frac_bits
    return FixedType.for_raw_range((ta.raw_min << sa) + (tb.raw_min << sb), (ta.raw_max << sa) + (tb.raw_max << sb), g)


def sum_acc(tx: FixedType, n: int) -> FixedType:
    return FixedType.for_raw_range(tx.raw_min * n, tx.raw_max * n, tx.frac_bits)
