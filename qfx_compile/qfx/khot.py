"""K-hot weights: mantissas with at most K nonzero digits, and the exact nearest projection.

A mantissa ``m`` of a :class:`FixedType` (value ``m * 2**-F``) is K-hot when

* ``digits="binary"``: ``|m|`` has at most K ones (the sign is separate), so
  ``w * x`` is a sum of at most K shifted copies of ``x``, negated if ``m < 0``;
* ``digits="csd"``: ``m`` is a sum of at most K terms ``+-2**e``; the fewest
  such terms is the weight of the canonical signed-digit (CSD / NAF) form.

* ``digits="sp2"`` (Mix and Match, arXiv 2012.04240: sums of two powers of
  two): the restricted same-sign 2-hot code of ``fixed.digits.sp2_table``
  (levels ``+-(q1 + q2)`` with ``m1, m2`` from the width), K = 1 or 2.

Power-of-two weights are ``K=1``.

Mixed rows (Mix and Match): a per-row K list may hold 0, a plain fixed-point row
(its values the type's own cast, DSP multiplies) beside K-hot rows (shift-add in
LUTs); :func:`row_error_gap` and :func:`choose_lut_rows` pick which rows are K-hot.

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

import numpy as np

from ..fixed.digits import (  # noqa: F401  (the integer core, re-exported)
    DIGIT_FLAVOURS, check_khot, popcount, csd_weight, digit_count, digits_of, khot_table, khot_values,
    project_raw, is_khot)
from ..fixed.types import FixedType


def check_row_k(k, digits: str, width: int, what: str = "K-hot") -> None:
    """:func:`check_khot`, except that a per-row list may hold 0 (a plain fixed-point row)."""
    if isinstance(k, (list, tuple)):
        k = [v for v in k if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v != 0]
    check_khot(k, digits, width, what)


def has_khot_rows(k) -> bool:
    """Whether a quantizer's ``k_hot`` (None, an int or a per-row list) makes any row K-hot."""
    return k is not None and (any(int(v) for v in k) if isinstance(k, (list, tuple)) else True)


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

    A channel whose K is 0 takes ``t``'s plain cast (its rounding and overflow, :func:`qfx.quantize`).

    Returns values on the grid in ``x``'s dtype. Gradient: straight-through,
    1 where ``t.min <= x <= t.max`` (per channel), else 0.
    """
    import torch
    check_row_k(k, digits, t.width)
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
            q = torch.where(kk == kv, project_scaled(y, t, kv, digits) if kv else _plain_scaled(y, t), q)
    else:
        q = project_scaled(y, t, int(k), digits)
    return q * torch.exp2(-frac)


def _plain_scaled(y, t: FixedType):
    """``t``'s own cast of the scaled ``y = x * 2**F``, as a mantissa: the value of ``qfx.quantize(x, t)`` times
    ``2**F`` (the same rounding of the same real, the same overflow of the same integer)."""
    from .quantize import quantize
    return quantize(y, t.replace(int_bits=t.width))


def row_error_gap(w, t: FixedType, k: int, digits: str, int_bits) -> np.ndarray:
    """Per row (axis 0) of weights ``w``: squared error of the K-hot projection minus that of the plain cast.

    ``sum_j (w_j - khot(w_j))**2 - sum_j (w_j - cast(w_j))**2`` in value units, float64 (``t``: the
    base type, ``int_bits``: one per row): what a row loses by going to LUTs (0 for a row already K-hot).
    """
    import torch
    x = torch.as_tensor(w).detach().to(torch.float64).cpu()
    rows = x.shape[0]
    ib = torch.as_tensor(int_bits).reshape(-1).to(torch.int64)
    qk = khot_quantize(x, t, [int(k)] * rows, digits, int_bits=ib, axis=0)
    qf = khot_quantize(x, t, [0] * rows, digits, int_bits=ib, axis=0)
    gap = ((x - qk) ** 2 - (x - qf) ** 2).reshape(rows, -1).sum(1)
    return gap.numpy()


def choose_lut_rows(gap: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` rows with the smallest :func:`row_error_gap` (ties: the lower row index), as a bool mask.

    For a given number of K-hot rows this minimizes the layer's total squared quantization error:
    the rows that fit the K-hot levels best go to LUTs.
    """
    gap = np.asarray(gap, dtype=np.float64)
    if not 0 <= n <= len(gap):
        raise ValueError(f"{n} K-hot rows asked of a layer with {len(gap)} rows")
    mask = np.zeros(len(gap), dtype=bool)
    mask[np.argsort(gap, kind="stable")[:n]] = True
    return mask


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
