"""K-hot weights: mantissas with at most K nonzero digits, and the exact nearest projection.

A mantissa ``m`` of a :class:`FixedType` (value ``m * 2**-F``) is K-hot when

* ``digits="binary"``: ``|m|`` has at most K ones (the sign is separate), so
  ``w * x`` is a sum of at most K shifted copies of ``x``, negated if ``m < 0``;
* ``digits="csd"``: ``m`` is a sum of at most K terms ``+-2**e``; the fewest
  such terms is the weight of the canonical signed-digit (CSD / NAF) form.

SP2 (Mix and Match, arXiv 2012.04240: sums of two powers of two) is ``K=2,
digits="csd"``; power-of-two weights are ``K=1``.

The projection maps a real ``x`` to the nearest K-hot value of the grid, exactly
(ties go to the smaller magnitude; beyond the range it saturates to the nearest
end). It uses a sorted table of every K-hot mantissa and a binary search, so it
is the true nearest value, not a greedy digit-by-digit approximation.

The core (tables, digit counts, :func:`digits_of`, :func:`project_raw`) is
numpy / Python int and torch-free: the compiler's IR imports it to decompose
weights into shift-add terms. :func:`khot_quantize` is a thin torch wrapper
with a straight-through gradient (1 inside the type's range, 0 outside).
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

from .types import FixedType, raw_range

DIGIT_FLAVOURS = ("binary", "csd")

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


def digit_count(m, digits: str) -> np.ndarray:
    """Nonzero digits of each mantissa in the given flavour."""
    if digits == "binary":
        return popcount(m)
    if digits == "csd":
        return csd_weight(m)
    raise ValueError(f"digits must be one of {DIGIT_FLAVOURS}, got {digits!r}")


def digits_of(m: int, digits: str) -> list[tuple[int, int]]:
    """Decompose an integer mantissa into terms ``(sign, e)`` with ``m == sum(sign * 2**e)``.

    ``binary``: the ones of ``|m|``, all with the sign of ``m``. ``csd``: the
    canonical signed-digit form (minimal number of terms, no two adjacent).
    Terms are ordered by increasing exponent.
    """
    m = int(m)
    if digits == "binary":
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


def is_khot(m, k: int, digits: str) -> np.ndarray:
    """Elementwise: does mantissa ``m`` have at most ``k`` nonzero digits."""
    return digit_count(m, digits) <= k


# ----------------------------------------------------------- torch wrapper
def _torch_table(t: FixedType, k: int, digits: str, dtype, device):
    import torch
    key = (t.width, bool(t.signed), int(k), digits, dtype, str(device))
    tab = _TORCH_TABLES.get(key)
    if tab is None:
        tab = torch.as_tensor(khot_table(t, k, digits).astype(np.float64), dtype=dtype, device=device)
        _TORCH_TABLES[key] = tab
    return tab


_TORCH_TABLES: dict = {}


def project_scaled(y, t: FixedType, k: int, digits: str):
    """Torch twin of :func:`project_raw`: ``y`` (float tensor, already ``x * 2**F``) -> nearest K-hot mantissa.

    Exact in float32 for widths up to 23 and in float64 up to 52.
    """
    import torch
    tab = _torch_table(t, k, digits, y.dtype, y.device)
    n = tab.numel()
    idx = torch.searchsorted(tab, y.contiguous()).clamp_(1, n - 1)
    lo, hi = tab[idx - 1], tab[idx]
    two_y = 2.0 * y
    mid = lo + hi
    take_hi = (two_y > mid) | ((two_y == mid) & (hi.abs() < lo.abs()))
    return torch.where(take_hi, hi, lo)


def khot_quantize(x, t: FixedType, k, digits: str, *, int_bits=None, axis: int = 0):
    """Project a torch tensor onto the K-hot values of ``t`` (per-channel ``int_bits``/``k`` along ``axis``).

    Returns values on the grid in ``x``'s dtype. Gradient: straight-through,
    1 where ``t.min <= x <= t.max`` (per channel), else 0.
    """
    import torch
    check_khot(k, digits, t.width)
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"khot_quantize works on float32 or float64 tensors, got {x.dtype}")
    if t.width > (23 if x.dtype == torch.float32 else 52):
        raise ValueError(f"{t} is too wide for an exact K-hot projection in {x.dtype}")
    shape = [1] * x.dim()
    if int_bits is None:
        frac = torch.tensor(float(t.frac_bits), dtype=x.dtype, device=x.device)
    else:
        ib = torch.as_tensor(int_bits, device=x.device).to(x.dtype)
        shape[axis] = -1
        frac = (t.width - ib).reshape(shape)
    return _ste().apply(x, frac, t, k, digits, axis)


def _khot_forward(x, frac, t: FixedType, k, digits: str, axis: int):
    """Projection in x's dtype; ``frac`` broadcasts to x; ``k`` an int or one K per channel along axis."""
    import torch
    y = x * torch.exp2(frac)
    if isinstance(k, (list, tuple)):
        if len(k) != x.shape[axis]:
            raise ValueError(f"one K per channel expected: {x.shape[axis]} along axis {axis}, got {len(k)}")
        kk = torch.as_tensor(list(k), device=x.device)
        shape = [1] * x.dim()
        shape[axis] = -1
        kk = kk.reshape(shape)
        q = torch.zeros_like(y)
        for kv in sorted(set(int(v) for v in k)):
            q = torch.where(kk == kv, project_scaled(y, t, kv, digits), q)
    else:
        q = project_scaled(y, t, int(k), digits)
    return q * torch.exp2(-frac)


@functools.lru_cache(maxsize=None)
def _ste():
    """The straight-through autograd Function, built on first use so that importing this module needs no torch."""
    import torch

    class KHotSTE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, frac, t, k, digits, axis):
            inv = torch.exp2(-frac)
            ctx.save_for_backward((x >= t.raw_min * inv) & (x <= t.raw_max * inv))
            return _khot_forward(x, frac, t, k, digits, axis)

        @staticmethod
        def backward(ctx, grad):
            (inside,) = ctx.saved_tensors
            return grad * inside.to(grad.dtype), None, None, None, None, None

    return KHotSTE
