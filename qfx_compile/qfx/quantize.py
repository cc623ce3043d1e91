"""The exact fixed-point cast, in floating point (torch) and in integers (numpy / Python int).

``quantize(x, t)`` returns exactly the value that ``t v = x;`` leaves in an
``ap_fixed`` of type ``t`` in C++ (Xilinx ap_types), for every rounding and
overflow mode in :mod:`.types`:

1. quantization: ``q = round_mode(x * 2**F)`` (an integer);
2. overflow: ``q`` outside ``[raw_min, raw_max]`` is wrapped (low W bits) or
   saturated (``AP_SAT``: clamp; ``AP_SAT_SYM``: clamp to ``+-raw_max`` for
   signed types; ``AP_SAT_ZERO``: 0). Rounding may itself overflow.
3. result ``q * 2**-F``.

Exactness: every step is exact in the input's dtype as long as the mantissa
fits it, so float32 inputs are accepted for ``W <= 24`` and float64 for
``W <= 53``; anything wider raises ``ValueError`` (use the integer functions).
Non-finite inputs (inf, NaN) are outside the contract.

Kernels: on CPU a per-tensor cast runs in one pass of the fused C++ kernel
(:mod:`.fused`, ``cast.cpp``) when a compiler is there; otherwise, and for
per-channel casts and other devices, on the torch kernels below. Both give the
same values (tests/test_fused_cast.py); zero is always +0.0 from the kernel.

Gradient (straight-through): ``d quantize / d x = 1`` where ``min <= x <= max``
of the type, 0 outside (where the hardware saturates or wraps).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..fixed.cast import requantize_raw  # noqa: F401  (the integer twin, re-exported)
from ..fixed.types import FixedType, raw_range, sat_sym_raw_min
from . import fused as _fused

#: Mantissa bits a float dtype holds exactly (including the implicit bit).
_EXACT_BITS = {torch.float32: 24, torch.float64: 53}
_SMALLEST = {torch.float32: 2.0 ** -149, torch.float64: 2.0 ** -1074}


def max_exact_width(dtype: torch.dtype) -> int:
    """Widest type the float cast handles exactly for this dtype."""
    if dtype not in _EXACT_BITS:
        raise ValueError(f"quantize works on float32 or float64 tensors, got {dtype}")
    return _EXACT_BITS[dtype]


def _check(x: torch.Tensor, width: int, frac_min: int, frac_max: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"quantize expects a torch.Tensor, got {type(x).__name__}")
    limit = max_exact_width(x.dtype)
    if width > limit:
        hint = "convert the tensor to float64" if x.dtype == torch.float32 and width <= 53 else \
            "use qfx.requantize_raw on integer mantissas"
        raise ValueError(
            f"a {width}-bit type cannot be computed exactly in {str(x.dtype).replace('torch.', '')} "
            f"(at most {limit} bits): {hint}")
    # 2**-F (the lsb) and 2**F must be normal numbers and 2**(I+1) finite so that every
    # scaling below is exact.
    emax = 127 if x.dtype == torch.float32 else 1023
    for frac in (frac_min, frac_max):
        if not (-(emax - 1) <= frac <= emax - 1 and width - frac + 1 <= emax - 1):
            raise ValueError(
                f"a type with {frac} fractional bits and width {width} exceeds the exponent range of "
                f"{str(x.dtype).replace('torch.', '')}")


_sym_min = sat_sym_raw_min  # the rule lives in types.py


def _pow2(e: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Exact ``2.0**e`` for an integer tensor (normal range), built from the exponent bits.

    Independent of the device's ``exp2`` accuracy (CUDA's is not guaranteed exact).
    """
    e = e.to(torch.int64)
    if dtype == torch.float64:
        return ((e + 1023) << 52).view(torch.float64)
    return ((e + 127) << 23).to(torch.int32).view(torch.float32)


def _round(y: torch.Tensor, rounding: str) -> torch.Tensor:
    """Round an (exactly scaled) tensor to integers with the ap_fixed quantization rule."""
    if rounding == "AP_TRN":
        return torch.floor(y)
    if rounding == "AP_TRN_ZERO":
        return torch.trunc(y)
    if rounding == "AP_RND_CONV":
        return torch.round(y)  # half to even, exact (nearbyint)
    f = torch.floor(y)
    h = f + 0.5  # exact whenever y is not an integer (|f| < 2**(p-2) then)
    frac = y != f
    gt = y > h
    eq = y == h
    if rounding == "AP_RND":
        up = gt | eq
    elif rounding == "AP_RND_MIN_INF":
        up = gt
    elif rounding == "AP_RND_ZERO":
        up = gt | (eq & (y < 0))
    elif rounding == "AP_RND_INF":
        up = gt | (eq & (y > 0))
    else:  # pragma: no cover - FixedType validates
        raise ValueError(f"unknown rounding mode {rounding}")
    return f + (up & frac).to(y.dtype)


def _cast_scaled(x: torch.Tensor, frac: torch.Tensor | int, int_bits: torch.Tensor | int, width: int,
                 signed: bool, rounding: str, overflow: str) -> torch.Tensor:
    """Exact cast; ``frac``/``int_bits`` may be ints or tensors broadcastable to x (per channel)."""
    dt = x.dtype
    if isinstance(frac, torch.Tensor):
        scale = _pow2(frac, dt)
        inv = _pow2(-frac, dt)
        span = _pow2(int_bits, dt)  # 2**I = 2**W * 2**-F
    else:
        scale, inv, span = 2.0 ** frac, 2.0 ** -frac, 2.0 ** int_bits
    raw_min, raw_max = raw_range(width, signed)
    if overflow == "AP_WRAP":
        # q mod 2**W == round(fmod(x, 2**I) * 2**F) mod 2**W, fmod is exact and keeps the sign.
        # torch's vectorised fmod computes x - trunc(x / y) * y, which is NaN when x / y
        # overflows; any |x| >= 2**(I + p) is a multiple of 2**I anyway, so set it to 0 first.
        big = span * float(2 ** _EXACT_BITS[dt])
        x = torch.fmod(torch.where(torch.abs(x) >= big, torch.zeros_like(x), x), span)
    else:
        # Anything beyond +-2**(I+1) saturates the same way; clamping also removes overflow to inf.
        x = torch.clamp(x, -2 * span, 2 * span)
    y = x * scale
    if isinstance(frac, torch.Tensor) or frac < 0:
        # Scaling down can flush a tiny nonzero value to (signed) zero; any nonzero |y| < 1/2
        # rounds the same way, so restore a tiny value of the right sign.
        tiny = torch.full_like(y, _SMALLEST[dt])
        y = torch.where((y == 0) & (x != 0), torch.copysign(tiny, x), y)
    q = _round(y, rounding)
    if overflow == "AP_WRAP":
        # |x| < 2**I after fmod, so |q| <= 2**W: one step of 2**W wraps it, exactly.
        step = float(1 << width)
        q = torch.where(q > raw_max, q - step, torch.where(q < raw_min, q + step, q))
    elif overflow == "AP_SAT":
        q = q.clamp(raw_min, raw_max)
    elif overflow == "AP_SAT_SYM":
        q = q.clamp(_sym_min(width, signed), raw_max)
    elif overflow == "AP_SAT_ZERO":
        q = torch.where((q < raw_min) | (q > raw_max), torch.zeros_like(q), q)
    return q * inv


#: Tie-breaking perturbation of the float64 kernel (see _cast_f32_via_f64).
_EPS = 2.0 ** -26
#: (c, alpha factor) per rounding mode: q = floor(c + y * factor), y = x * 2**F (see _cast_f32_via_f64).
_RND_AFFINE = {"AP_RND": (0.5, 1.0), "AP_RND_MIN_INF": (0.5 - _EPS, 1.0),
               "AP_RND_INF": (0.5, 1.0 + _EPS), "AP_RND_ZERO": (0.5, 1.0 - _EPS)}


def _round64(y: torch.Tensor, rounding: str, scale: float) -> torch.Tensor:
    """In place on float64 ``y``: ``round_mode(y * scale)`` for y * scale of at most 24 significant bits, |.| < 2**25.

    Exactness argument for the AP_RND family (the float32 input has a 24-bit
    significand, so ``z = y * scale`` does too, and float64 holds 53 bits):
    ``q = floor(c + z * (1 + e))`` with (c, e) from ``_RND_AFFINE``, e = 0 or
    +-2**-26. ``z * (1 + e)`` has at most 24 + 27 bits: exact. For ``|z| >= 1/4``
    the sum with c spans bits 2**25 .. 2**-52 (at most 53): exact, so the floor
    is the floor of the exact value; for ``|z| < 1/4`` the exact value lies in
    (1/4 - 2**-26, 3/4], so the rounded sum floors to 0, as every mode must.
    Which way ties go: a tie ``z = n + 1/2`` is moved by ``c - 1/2 + e*z``:
    AP_RND +0 (up), AP_RND_MIN_INF -2**-26 (down), AP_RND_INF +e|z| away from 0,
    AP_RND_ZERO -e|z| towards 0, with ``0 < 2**-26 * |z| < 1/2``. A non-tie
    ``z = m * 2**k`` (m < 2**24) is at least ``2**k`` (k <= -2) or 1/2 (k >= -1)
    from every tie, more than ``|e z| < 2**(k-2)`` (resp. < 1/2 for |z| < 2**25)
    and more than 2**-26, so it rounds to the nearest integer as it must.
    tests/test_cast_headers.py checks this against the Xilinx headers.
    """
    if rounding == "AP_TRN":
        return y.mul_(scale).floor_()
    if rounding == "AP_TRN_ZERO":
        return y.mul_(scale).trunc_()
    if rounding == "AP_RND_CONV":
        return y.mul_(scale).round_()  # half to even (nearbyint), exact
    c, f = _RND_AFFINE[rounding]
    return torch.add(torch.tensor(c, dtype=torch.float64), y, alpha=scale * f, out=y).floor_()


def _cast_f32_via_f64(x: torch.Tensor, frac: int, width: int, signed: bool, rounding: str,
                      overflow: str) -> torch.Tensor:
    """The exact cast of a float32 tensor (W <= 24, per-tensor F), computed in one float64 buffer.

    ``x * 2**F`` is exact in float64 (no overflow or underflow for |F| < 127),
    so no tiny-value or infinity guard is needed. Saturation clamps x to the
    type's range first (rounding is monotone and the bounds are on the grid, so
    clamp-then-round equals round-then-clamp). Wrapping first reduces
    ``y = x * 2**F`` to ``r = y - trunc(y * 2**-W) * 2**W`` (exact: r is a
    multiple of y's lsb, |r| < 2**W; same sign as y, so every rounding mode
    commutes with it), rounds r, then wraps ``q - 2**W * floor((q - raw_min) * 2**-W)``
    (q is a small integer: exact). The result is converted back to float32
    (exact: a W-bit value).
    """
    scale, inv = 2.0 ** frac, 2.0 ** -frac
    raw_min, raw_max = raw_range(width, signed)
    y = x.to(torch.float64)  # always a new buffer (x is float32); all else happens in place
    if overflow == "AP_WRAP":
        step = float(1 << width)
        y.mul_(scale)
        k = torch.mul(y, 1.0 / step).trunc_()
        y.add_(k, alpha=-step)
        q = _round64(y, rounding, 1.0)
        torch.add(torch.tensor(-raw_min / step, dtype=torch.float64), q, alpha=1.0 / step, out=k).floor_()
        q.add_(k, alpha=-step)
    elif overflow in ("AP_SAT", "AP_SAT_SYM"):
        lo = _sym_min(width, signed) if overflow == "AP_SAT_SYM" else raw_min
        q = _round64(y.clamp_(lo * inv, raw_max * inv), rounding, scale)
    else:  # AP_SAT_ZERO: |x * 2**F| >= 2**25 may round inexactly but stays out of range (-> 0)
        q = _round64(y, rounding, scale)
        q.masked_fill_((q < raw_min) | (q > raw_max), 0.0)
    return q.mul_(inv).to(torch.float32)


class _QuantizeSTE(torch.autograd.Function):
    """The exact cast with the straight-through gradient (1 inside [min, max] of the type, else 0)."""

    @staticmethod
    def forward(ctx, x, frac, int_bits, width, signed, rounding, overflow):
        ctx.save_for_backward(x)
        ctx.meta = (frac, width, signed)
        return _cast(x, frac, int_bits, width, signed, rounding, overflow)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        frac, width, signed = ctx.meta
        inv = _pow2(-frac, x.dtype) if isinstance(frac, torch.Tensor) else 2.0 ** -frac
        raw_min, raw_max = raw_range(width, signed)
        inside = (x >= raw_min * inv) & (x <= raw_max * inv)
        return torch.where(inside, grad, 0.0), None, None, None, None, None, None


#: Rounding and overflow modes with the fused float64 kernel (``_cast_fused``), widths up to _F64_FAST_WIDTH.
_F64_FAST_ROUNDING = ("AP_TRN", "AP_TRN_ZERO", "AP_RND_CONV", "AP_RND")
_F64_FAST_OVERFLOW = ("AP_WRAP", "AP_SAT", "AP_SAT_SYM")
_F64_FAST_WIDTH = 50


#: Wrap pre-clamp ``B = 2**(I + margin)`` per dtype: every float of magnitude at least B has an ulp of at
#: least ``2**(I+2)`` (float64: 54, float32: 26), see :func:`_cast_fused` and :func:`_cast_f32`.
_WRAP_MARGIN = {torch.float64: 54, torch.float32: 26}


def _cast_fused(x: torch.Tensor, frac: int, width: int, signed: bool, rounding: str, overflow: str) -> torch.Tensor:
    """The exact cast of a float64 (``W <= 50``) or float32 (``W <= 22``) tensor, per-tensor F: 4 to 8 passes.

    Float64 (``0 <= F <= 960``):

    ``y = x * 2**F`` is exact (scaling up by a power of two: no underflow; no overflow
    after the first clamp). Saturation clamps x to the type's range first (the bounds
    are on the grid and rounding is monotone: clamp-then-round equals round-then-clamp).
    Wrapping first clamps x to ``+-B``, ``B = 2**(I + 54)``: every float64 of magnitude
    at least ``B`` has an ulp of at least ``2**(I+2)``, so it and B are multiples of
    ``2**I`` and wrap to 0 alike; then ``r = y - trunc(y / 2**W) * 2**W`` (exact: the
    quotient, trunc and product are exact, and the difference is a multiple of y's ulp
    below 2**W in magnitude, so representable), keeping y's sign, so every rounding
    mode commutes with it; ``q = round(r)`` is an integer in ``[-2**W, 2**W]`` and
    ``q - 2**W * floor((q - raw_min) / 2**W)`` wraps it into the range, exactly
    (small integers). Rounding: floor, trunc, nearbyint are exact; AP_RND is
    ``floor(y) + (y - floor(y) >= 1/2)``, the difference being exact.
    """
    scale, inv = 2.0 ** frac, 2.0 ** -frac
    raw_min, raw_max = raw_range(width, signed)
    step = float(1 << width)
    if overflow == "AP_WRAP":
        big = 2.0 ** (width - frac + _WRAP_MARGIN[x.dtype])
        y = torch.clamp(x, -big, big).mul_(scale)
        y.add_(torch.mul(y, 1.0 / step).trunc_(), alpha=-step)  # fmod(y, 2**W), exactly
    else:
        lo = _sym_min(width, signed) if overflow == "AP_SAT_SYM" else raw_min
        y = torch.clamp(x, lo * inv, raw_max * inv).mul_(scale)
    if rounding == "AP_TRN":
        q = y.floor_()
    elif rounding == "AP_TRN_ZERO":
        q = y.trunc_()
    elif rounding == "AP_RND_CONV":
        q = y.round_()
    else:  # AP_RND
        q = torch.floor(y)
        q.add_(y.sub_(q).ge_(0.5))
    if overflow == "AP_WRAP":
        k = torch.add(torch.tensor(-raw_min / step, dtype=x.dtype), q, alpha=1.0 / step).floor_()
        q.add_(k, alpha=-step)  # q - 2**W * floor((q - raw_min) / 2**W): into [raw_min, raw_max]
    return q.mul_(inv)


#: Widest type the float32 kernel (``_cast_f32``) handles.
_F32_FAST_WIDTH = 22


def _cast_f32(x: torch.Tensor, frac: int, width: int, signed: bool, rounding: str, overflow: str) -> torch.Tensor:
    """The exact cast of a float32 tensor in float32, per-tensor ``0 <= F <= 100``, ``W <= 22``.

    ``_cast_fused``'s steps with float32 arithmetic (half the memory traffic of the float64
    kernel). The wrap clamp bound is ``B = 2**(I + 26)`` (a float32 of magnitude at least
    ``2**(I+25)`` has an ulp of at least ``2**(I+2)``); ``B * 2**F = 2**(W + 26)`` is finite.
    The reductions, floor, trunc and nearbyint are exact as in float64. AP_RND: ``y - floor(y)``
    is exact for ``y >= 0`` and ``y <= -1`` (Sterbenz); for ``-1 < y < 0`` it may round, but
    never across 1/2 (below 1/2 the difference ``y + 1`` is a multiple of y's ulp ``2**-24``
    with an ulp of ``2**-25``: exact; at or above 1/2, rounding is monotone). The final wrap
    computes ``q / 2**W - raw_min / 2**W`` with at most ``W + 1 <= 23`` significant bits: exact.
    """
    return _cast_fused(x, frac, width, signed, rounding, overflow)


#: Mode numbers of the fused kernel (cast.cpp).
_ROUNDING_CODE = {"AP_TRN": 0, "AP_TRN_ZERO": 1, "AP_RND": 2, "AP_RND_ZERO": 3, "AP_RND_MIN_INF": 4,
                  "AP_RND_INF": 5, "AP_RND_CONV": 6}
_OVERFLOW_CODE = {"AP_SAT": 0, "AP_SAT_ZERO": 1, "AP_SAT_SYM": 2, "AP_WRAP": 3}
#: Widest float64 type of the fused kernel: its wrap step ``(q - raw_min) / 2**W`` is exact up to 50 bits.
_FUSED_F64_WIDTH = 50


def _fused_kind(x: torch.Tensor, frac, width: int, out_dtype: torch.dtype) -> int | None:
    """The fused kernel's input/output kind for this cast (see cast.cpp), None where it does not apply.

    It applies on CPU to a per-tensor cast of float32 (W <= 24, any F ``_check`` admits: ``x * 2**F`` is
    exact in double) into float32 or float64, or of float64 (W <= 50, 0 <= F <= 960: scaling up is exact,
    as in :func:`_cast_fused`) into float64.
    """
    if isinstance(frac, torch.Tensor) or x.device.type != "cpu" or _fused.kernel() is None:
        return None
    if x.dtype == torch.float32 and width <= 24:
        return {torch.float32: 0, torch.float64: 1}.get(out_dtype)
    if x.dtype == torch.float64 and out_dtype == torch.float64 and width <= _FUSED_F64_WIDTH and 0 <= frac <= 960:
        return 2
    return None


def _cast_kernel(x: torch.Tensor, kind: int, frac: int, width: int, signed: bool, rounding: str, overflow: str,
                 out_dtype: torch.dtype, relu: bool = False) -> torch.Tensor:
    """The exact cast in one pass of the fused kernel (same value as the torch kernels, see cast.cpp); ``relu``
    (kind 0): ``torch.relu`` of it in the same pass."""
    x = x.contiguous()
    out = _fused.empty(x.shape, out_dtype)
    rc = _fused.kernel().qfx_cast(x.data_ptr(), out.data_ptr(), x.numel(), kind, _ROUNDING_CODE[rounding],
                                  _OVERFLOW_CODE[overflow], width, int(signed), frac, float(_sym_min(width, signed)),
                                  int(relu), _fused.threads())
    if rc != 0:  # pragma: no cover - FixedType validates the modes
        raise ValueError(f"fused cast: unknown mode {rounding} / {overflow}")
    return out


def _type_args(t: FixedType) -> tuple:
    """``t`` as the fused kernels take a type: rounding and overflow codes, width, signedness, F and the lowest
    AP_SAT_SYM mantissa."""
    return (_ROUNDING_CODE[t.rounding], _OVERFLOW_CODE[t.overflow], t.width, int(t.signed), t.frac_bits,
            float(_sym_min(t.width, t.signed)))


# ------------------------------------------------------------ training (float32, per tensor)
_LN2 = math.log(2.0)


#: Elements per block of the exact blocked sums (the binary-point gradient, BatchNorm's da/db; cast.cpp's kBlock):
#: each block is summed exactly on its own grid, so the fused kernel reads it twice while it is in cache (its
#: max |g|, then the terms).
IB_BLOCK = 1 << 14


def block_grid(m: torch.Tensor, n: int, extra) -> torch.Tensor:
    """``k_b`` (int64, one per block) of the blocked exact sums over ``n`` elements in blocks of
    :data:`IB_BLOCK` (the last one shorter, ``L_b`` elements): ``ceil(log2 L_b) + e_b + extra - 52`` with
    ``e_b`` the frexp exponent of the block's largest ``|g|`` ``m_b > 0`` (``|g| < 2**e_b``) and ``extra``
    (an int or per-block tensor) the exponent that bounds what multiplies g in each term (``I`` for the
    binary-point sum: ``|d| <= 2**I``). Each term ``round(p * 2**-k_b)`` is then at most
    ``2**(52 - ceil(log2 L_b))`` (also after ``p`` is rounded to its dtype) and every partial sum at most
    ``2**52``: integers that float64 adds exactly, in any order, on any number of threads; the rounding to the
    grid is at most ``2**(k_b - 1)`` per term. cast.cpp's ``sum_k`` is the same rule."""
    nb = m.shape[0]
    en = torch.full((nb,), (IB_BLOCK - 1).bit_length(), dtype=torch.int64, device=m.device)
    en[-1] = (n - (nb - 1) * IB_BLOCK - 1).bit_length()
    return en + torch.frexp(m).exponent + extra - 52


def _in_block_order(v: torch.Tensor) -> torch.Tensor:
    """``0.0 + v[0] + v[1] + ...`` along dim 0 in float64, one addition after another (the kernel's order):
    a CPU cumsum is that sequential scan."""
    return torch.cat([v.new_zeros((1,) + v.shape[1:]), v]).cpu().cumsum(dim=0)[-1]


def _ib_grad(total: float, status: int) -> torch.Tensor:
    """``ln2 * total`` as a float32 scalar (status 1: every g is 0; 2: a g is not finite -> NaN)."""
    v = math.nan if status == 2 else 0.0 if status == 1 else total * _LN2
    return torch.tensor(v, dtype=torch.float32)


def ib_grad(g: torch.Tensor, x: torch.Tensor, q: torch.Tensor, inside: torch.Tensor, int_bits: int) -> torch.Tensor:
    """The per-tensor binary-point gradient ``dL/dI = ln2 * sum g * (q - x inside | q outside)`` (TQT).

    Computed over blocks of :data:`IB_BLOCK` consecutive elements of the flattened tensors (the last one
    shorter): block ``b`` gives the exact integer sum ``S_b`` of ``round(p * 2**-k_b)``, ``p = g * d`` rounded to
    x's dtype, on its own grid ``k_b = block_grid(max |g|, n, I)``, and the total is ``sum_b S_b * 2**k_b``
    added in block order, so the value does not depend on the number of threads: the fused kernel (cast.cpp)
    returns the same. ``d = q - x`` is taken in x's dtype.
    """
    n = g.numel()
    if n == 0:
        return _ib_grad(0.0, 1)
    g, x, q, inside = (v.reshape(-1) for v in (g, x, q, inside))
    gb, pb = _as_blocks([g.abs(), (g * torch.where(inside, q - x, q)).double()])
    gmax = gb.amax(dim=1)
    if not bool(torch.isfinite(gmax).all()):
        return _ib_grad(0.0, 2)
    if not bool((gmax > 0).any()):
        return _ib_grad(0.0, 1)
    k = torch.where(gmax > 0, block_grid(gmax, n, int_bits), 0).double()
    sums = pb.mul(torch.exp2(-k).unsqueeze(1)).round_().sum(dim=1)  # p * 2**-k exact; integer partial sums
    return _ib_grad(float(_in_block_order(sums * torch.exp2(k))), 0)


def _relu_grad(g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """ReLU's backward from its output ``r`` (torch's ``threshold_backward``): 0 where ``r <= 0``, else g."""
    return torch.where(r <= 0, 0.0, g)


def train_cast_backward(g: torch.Tensor, x: torch.Tensor, q: torch.Tensor, lo: float, hi: float, int_bits: int,
                        need_ib: bool, relu: bool, b: torch.Tensor | None = None):
    """``(dL/dx, dL/dI or None)`` on the fused kernel for a per-tensor cast of float32 ``x``, ``q`` the forward's
    output (:class:`_FusedTrainCast`); with ``b``, of the cast of the float32 sum ``x + b`` (:class:`_FusedAddCast`:
    the kernel recomputes the sum)."""
    g, x, q = g.contiguous(), x.contiguous(), q.contiguous()
    gx = _fused.empty(x.shape, torch.float32)
    gib = _fused.empty((), torch.float32) if need_ib else None  # the kernel writes _ib_grad's value
    _fused.kernel().qfx_cast_backward(g.data_ptr(), x.data_ptr(), q.data_ptr(), gx.data_ptr(), x.numel(), lo, hi,
                                      int_bits, int(need_ib), int(relu), _fused.threads(),
                                      None if gib is None else gib.data_ptr(), None if b is None else b.data_ptr())
    return gx, gib


def bn_dx_cast_backward(g: torch.Tensor, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                        c: torch.Tensor, lo: float, hi: float, int_bits: int, need_ib: bool,
                        out=None):
    """``(dL/dy, dL/dI or None)`` of ``x = cast(y)`` (:func:`fused_train_cast`'s gradients) where the gradient
    reaching x is BatchNorm's ``dx = (x * b_c + c_c) + g * a_c`` (:func:`.fused.bn_dx`), on the kernel without
    writing dx: the values of ``bn_dx`` followed by the cast's backward, float32 (N, C, ...) tensors. ``out``:
    float32 tensors ``(dL/dy, dL/dI 0-d)`` to write into (else new ones)."""
    g, x, y = g.contiguous(), x.contiguous(), y.contiguous()
    a, b, c = (_fused.f32(v) for v in (a, b, c))
    n, ch = x.shape[0], x.shape[1]
    if out is None:
        gy = _fused.empty(x.shape, torch.float32)
        gib = _fused.empty((), torch.float32) if need_ib else None
    else:
        gy, gib = out
    _fused.kernel().qfx_bn_dx_cast_backward(g.data_ptr(), x.data_ptr(), y.data_ptr(), a.data_ptr(), b.data_ptr(),
                                            c.data_ptr(), gy.data_ptr(), n, ch, x.numel() // max(1, n * ch), lo, hi,
                                            int_bits, int(need_ib), _fused.threads(),
                                            gib.data_ptr() if need_ib else None)
    return gy, (gib if need_ib else None)


def train_cast_forward(x: torch.Tensor, t: FixedType, relu: bool = False, with_sums: bool = False):
    """``(q, sums)``: the per-tensor training cast of float32 ``x`` to ``t`` on the fused kernel in one pass (with
    ``relu`` ``torch.relu`` of it), and with ``with_sums`` (no relu, (N, C, ...) ``x``, :func:`channel_sums_fit`)
    the float64 (2, C) :func:`channel_sums` of q from the same pass, else None. No autograd node: the values of
    :class:`_FusedTrainCast`'s forward, whose backward is :func:`train_cast_backward`."""
    if with_sums:
        return _cast_channel_sums(x, t)
    return _cast_kernel(x, 0, t.frac_bits, t.width, t.signed, t.rounding, t.overflow, torch.float32, relu), None


class _FusedTrainCast(torch.autograd.Function):
    """The per-tensor float32 training cast on the fused kernel, one pass each way.

    Forward: the exact cast (:func:`quantize`'s value), with ``relu`` ``torch.relu`` of it. Backward:
    ``dL/dx = g'`` where ``lo <= x <= hi`` (the caller's "inside" bounds), else 0, and ``dL/dI`` as
    :func:`ib_grad` (the same float32 value), from the saved x and q; ``g' = g``, with ``relu`` ReLU's backward
    of g (:func:`_relu_grad`).
    """

    @staticmethod
    def forward(ctx, x, ib, t, lo, hi, relu, sums=None):
        q, s = train_cast_forward(x, t, relu, sums is not None)
        if sums is not None:  # (N, C, ...) x: the per-channel mantissa sums too, appended to the list sums
            sums.append(s)
        ctx.save_for_backward(x, q)
        ctx.meta = (t.int_bits, lo, hi, relu)
        return q

    @staticmethod
    def backward(ctx, g):
        x, q = ctx.saved_tensors
        int_bits, lo, hi, relu = ctx.meta
        gx, gib = train_cast_backward(g, x, q, lo, hi, int_bits, bool(ctx.needs_input_grad[1]), relu)
        return gx, gib, None, None, None, None, None


def fused_train_cast(x: torch.Tensor, ib: torch.Tensor, t: FixedType, lo_raw: int,
                     relu: bool = False, sums: list | None = None) -> torch.Tensor | None:
    """The training cast of float32 ``x`` to ``t`` on the fused kernel, the binary-point gradient (the TQT sum)
    going to the 0-d tensor ``ib`` (straight through: the integer-bits parameter itself); ``dL/dx`` passes
    where ``lo_raw * lsb <= x <= max``; with ``relu``, ``torch.relu`` of the cast (values and gradients); with
    a list ``sums`` (no relu, :func:`channel_sums_fit`), :func:`channel_sums` of the cast appended to it, from
    the same pass. None where the kernel does not apply (not CPU float32, W > 22, F out of float32's range, no
    kernel)."""
    bounds = _kernel_bounds(x, ib, t, lo_raw)
    return None if bounds is None else _FusedTrainCast.apply(x.contiguous(), ib, t, *bounds, relu, sums)


def _kernel_bounds(x: torch.Tensor, ib: torch.Tensor, t: FixedType, lo_raw: int) -> tuple[float, float] | None:
    """:func:`train_cast_bounds` where the fused kernel takes the per-tensor training cast of ``x`` to ``t``
    (CPU float32 ``x``, a 0-d binary-point parameter ``ib``, a kernel), else None."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or ib.dim() != 0:
        return None
    bounds = train_cast_bounds(t, lo_raw)
    return None if bounds is None or _fused.kernel() is None else bounds


class _FusedAddCast(torch.autograd.Function):
    """The per-tensor float32 training cast of a residual sum ``a + b`` (:class:`_FusedTrainCast`'s values and
    gradients for ``x = a + b``, the sum rounded in float32 as torch's add), one pass each way without the sum in
    memory: the forward casts it as it adds (``qfx_add_cast``), the backward recomputes it from a and b, which the
    layers before keep anyway. ``dL/da = dL/db = dL/dx``, one tensor for both as torch's add gives."""

    @staticmethod
    def forward(ctx, a, b, ib, t, lo, hi, relu):
        q = _fused.empty(a.shape, torch.float32)
        rc = _fused.kernel().qfx_add_cast(a.data_ptr(), b.data_ptr(), q.data_ptr(), a.numel(), *_type_args(t),
                                          int(relu), _fused.threads())
        if rc != 0:  # pragma: no cover - fused_train_add_cast checks the type
            raise ValueError(f"fused add cast: {t} is not computed in float32")
        ctx.save_for_backward(a, b, q)
        ctx.meta = (t.int_bits, lo, hi, relu)
        return q

    @staticmethod
    def backward(ctx, g):
        a, b, q = ctx.saved_tensors
        int_bits, lo, hi, relu = ctx.meta
        need = ctx.needs_input_grad
        gx, gib = train_cast_backward(g, a, q, lo, hi, int_bits, bool(need[2]), relu, b)
        return (gx if need[0] else None), (gx if need[1] else None), gib, None, None, None, None


def fused_train_add_cast(a: torch.Tensor, b: torch.Tensor, ib: torch.Tensor, t: FixedType, lo_raw: int,
                         relu: bool = False) -> torch.Tensor | None:
    """:func:`fused_train_cast` of ``a + b`` (float32 tensors of one shape: no broadcasting) without the sum in
    memory (:class:`_FusedAddCast`), the same values and gradients; None where it does not apply (those of
    :func:`fused_train_cast`, other shapes or dtypes, or F outside 0..100: the float32 compute of the kernel)."""
    if b.dtype != torch.float32 or b.device.type != "cpu" or a.shape != b.shape or not 0 <= t.frac_bits <= 100:
        return None
    bounds = _kernel_bounds(a, ib, t, lo_raw)
    return None if bounds is None else _FusedAddCast.apply(a.contiguous(), b.contiguous(), ib, t, *bounds, relu)


def channel_sums_fit(shape: Sequence[int], t: FixedType) -> bool:
    """Whether the per-channel sums of the mantissas ``m`` of ``t`` over an (N, C, ...) tensor of ``shape`` and of
    ``m * m`` are integers below ``2**53`` for any values (``|m| <= 2**W``): exact in float64 in any order."""
    return len(shape) >= 2 and shape[1] > 0 and (math.prod(shape) // shape[1]) * 4 ** t.width <= 2 ** 53


def _cast_channel_sums(x: torch.Tensor, t: FixedType) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cast(x, t), sums)`` of float32 (N, C, ...) ``x`` on the kernel in one pass: the cast's float32 value and
    float64 (2, C) sums of its mantissas ``m`` and of ``m * m`` per channel (:func:`channel_sums_fit`)."""
    x = x.contiguous()
    q = _fused.empty(x.shape, torch.float32)
    n, c = x.shape[0], x.shape[1]
    sums = torch.empty((2, c), dtype=torch.float64)
    rc = _fused.kernel().qfx_cast_channel_sums(x.data_ptr(), q.data_ptr(), n, c, x.numel() // max(1, n * c),
                                               *_type_args(t), _fused.threads(), sums.data_ptr())
    if rc != 0:  # pragma: no cover - FixedType validates the modes
        raise ValueError(f"fused cast: unknown mode {t.rounding} / {t.overflow}")
    return q, sums


def channel_sums(q: torch.Tensor, frac: int) -> torch.Tensor:
    """Float64 (2, C): per channel of (N, C, ...) ``q`` (values on the grid ``2**-frac``, :func:`channel_sums_fit`)
    the sums of the mantissas ``m = q * 2**frac`` and of ``m * m``, exact (what the kernel's cast returns)."""
    m = q.detach().double().mul_(2.0 ** frac).reshape(q.shape[0], q.shape[1], -1)
    return torch.stack([m.sum((0, 2)), m.square().sum((0, 2))])


def train_cast_bounds(t: FixedType, lo_raw: int) -> tuple[float, float] | None:
    """``(lo_raw * lsb, max)``: where ``dL/dx`` passes in the fused float32 training casts to ``t``; None where
    they do not take ``t`` (W > 22, or F or I outside float32's exponent range)."""
    if t.width > 22 or not (-126 <= t.frac_bits <= 126 and t.int_bits + 1 <= 126):
        return None
    lsb = 2.0 ** -t.frac_bits
    return lo_raw * lsb, t.raw_max * lsb


def _channel_affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``z = x * a_c + b_c`` along axis 1, the product and the sum each rounded in x's dtype."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x * a.detach().reshape(shape)).add_(b.detach().reshape(shape))


def _affine_kernel_applies(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dim() >= 2 and _fused.kernel() is not None


def affine_train_cast(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, t: FixedType,
                      relu: bool = False) -> torch.Tensor:
    """``cast(x * a_c + b_c, t)`` of float32 ``x`` (N, C, ...) and [C] ``a``, ``b`` (see :func:`_channel_affine`),
    ``t`` with ``W <= 22`` and F within float32's range (as :func:`fused_train_cast`), with ``relu``
    ``torch.relu`` of it: one pass on the kernel (CPU), else the affine map and :func:`quantize`'s cast; the same
    float32 bits (zero is +0.0)."""
    if not _affine_kernel_applies(x):  # + 0.0: zero is +0.0, as the kernel writes it
        z = _channel_affine(x, a, b)
        q = _cast(z, t.frac_bits, t.int_bits, t.width, t.signed, t.rounding, t.overflow).add_(0.0)
        return torch.relu(q) if relu else q
    x = x.contiguous()
    a, b = (_fused.f32(v) for v in (a, b))
    q = _fused.empty(x.shape, torch.float32)
    n, c = x.shape[0], x.shape[1]
    rc = _fused.kernel().qfx_affine_cast(x.data_ptr(), a.data_ptr(), b.data_ptr(), q.data_ptr(), n, c,
                                         x.numel() // max(1, n * c), *_type_args(t), int(relu), _fused.threads())
    if rc != 0:  # pragma: no cover - FixedType validates the modes
        raise ValueError(f"fused cast: unknown mode {t.rounding} / {t.overflow}")
    return q


def _as_blocks(flat: list[torch.Tensor]) -> list[torch.Tensor]:
    """The 1-D tensors as (blocks, IB_BLOCK) rows, the last block padded with zeros."""
    n = flat[0].numel()
    pad = -n % IB_BLOCK
    return [(torch.nn.functional.pad(t, (0, pad)) if pad else t).reshape(-1, IB_BLOCK) for t in flat]


def _block_channel_sums(terms: torch.Tensor, hw: int, c: int) -> torch.Tensor:
    """(blocks, c) float64: per block row of ``terms`` (integers, every partial sum within a block below
    ``2**53``) the sums over each channel, element ``i`` of the flattened tensor in channel ``(i // hw) % c``;
    exact (plane sums where the blocks hold whole planes, else running sums within each block and their
    differences at the plane and block ends)."""
    nb, size = terms.shape
    dev = terms.device
    if size % hw == 0:  # whole planes per block: plane sums, then their channels
        planes = terms.reshape(nb, size // hw, hw).sum(dim=2)
        if (size // hw) % c == 0:  # every block starts at channel 0 (no index_add: none on CUDA's deterministic list)
            return planes.reshape(nb, -1, c).sum(dim=1)
        key = torch.arange(nb * (size // hw), device=dev)
        key = (key // (size // hw)) * c + key % c
        return torch.zeros(nb * c, dtype=torch.float64, device=dev).index_add_(0, key, planes.reshape(-1)).reshape(nb, c)
    flat = terms.cumsum(dim=1).reshape(-1)
    ends = torch.unique(torch.cat([torch.arange(hw - 1, nb * size, hw, device=dev),
                                   torch.arange(size - 1, nb * size, size, device=dev)]))
    starts = torch.cat([ends.new_zeros(1), ends[:-1] + 1])
    before = torch.where(starts % size == 0, 0.0, flat[(starts - 1).clamp(min=0)])
    key = (ends // size) * c + (ends // hw) % c
    return torch.zeros(nb * c, dtype=torch.float64, device=dev).index_add_(0, key, flat[ends] - before).reshape(nb, c)


def bn_param_grads(gz: torch.Tensor, x: torch.Tensor, gref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(da, db)``, float32 [C], of float32 (N, C, ...) ``gz`` and ``x``: ``da_c = sum gz * x`` and
    ``db_c = sum gz`` over channel c, as exact blocked sums (BatchNorm's affine map, cast.cpp's
    ``qfx_bn_cast_backward``, which gives the same bits). Per block of :data:`IB_BLOCK` elements of the flattened
    tensors, with ``m = max |gref|`` (``gref`` bounds ``|gz|``: BatchNorm's incoming gradient after ReLU) and
    ``mx = max |x|``: the terms ``round(float32(gz * x) * 2**-ka)`` and ``round(gz * 2**-kb)``,
    ``ka = block_grid(m, n, e(mx))``, ``kb = block_grid(m, n, 0)`` (exact integer sums per block and
    channel), the grid 0 where the block's ``gref`` is all 0 or not finite (and for ``ka`` where an x is not
    finite or all are 0); each channel adds its blocks' sums times ``2**k`` in block order, in float64."""
    n, c = gz.numel(), x.shape[1]
    hw = n // max(1, x.shape[0] * c)
    gzb, pb, gab, xab = _as_blocks([gz.reshape(-1).double(), (gz * x).reshape(-1).double(), gref.reshape(-1).abs(),
                                    x.reshape(-1).abs()])
    m, mx = gab.amax(dim=1), xab.amax(dim=1)
    ok = torch.isfinite(m) & (m > 0)
    ok_a = ok & torch.isfinite(mx) & (mx > 0)
    m = torch.where(ok, m, 1.0)
    kb = torch.where(ok, block_grid(m, n, 0), 0).double()
    ka = torch.where(ok_a, block_grid(m, n, torch.frexp(torch.where(ok_a, mx, 1.0)).exponent), 0).double()
    sa = torch.where(ok_a, torch.exp2(-ka), 0.0).unsqueeze(1)
    sb = torch.where(ok, torch.exp2(-kb), 0.0).unsqueeze(1)
    tot_a = _block_channel_sums(pb.mul(sa).round_(), hw, c).mul_(torch.exp2(ka).unsqueeze(1))
    tot_b = _block_channel_sums(gzb.mul(sb).round_(), hw, c).mul_(torch.exp2(kb).unsqueeze(1))
    return tuple(_in_block_order(t).to(x.device, torch.float32) for t in (tot_a, tot_b))


def bn_cast_backward(g: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, q: torch.Tensor,
                     t: FixedType, lo: float, hi: float, need_ib: bool, relu: bool = False, out=None):
    """``(dL/dz, dL/dI or None, da, db)`` of :func:`affine_train_cast` (q its output, z recomputed):
    ``dL/dz = g'`` where ``lo <= z <= hi``, else 0, ``g' = g``, with ``relu`` ReLU's backward of g; ``dL/dI`` as
    :func:`ib_grad` (None without ``need_ib``); the affine map's parameter gradients :func:`bn_param_grads`
    (``gref = g'``). One pass on the kernel (CPU), else torch with the same bits. ``out``: float32 tensors
    ``(dL/dz, da [C], db [C], dL/dI 0-d)`` for the kernel to write into (else new ones)."""
    if not _affine_kernel_applies(x):
        gref = _relu_grad(g, q) if relu else g
        z = _channel_affine(x, a, b)
        inside = (z >= lo) & (z <= hi)
        gz = torch.where(inside, gref, 0.0)
        return (gz, ib_grad(gref, z, q, inside, t.int_bits) if need_ib else None) + bn_param_grads(gz, x, gref)
    g, x, q = g.contiguous(), x.contiguous(), q.contiguous()
    a, b = (_fused.f32(v) for v in (a, b))
    n, c = x.shape[0], x.shape[1]
    if out is None:
        gz = _fused.empty(x.shape, torch.float32)
        da, db = _fused.empty((2, c), torch.float32).unbind(0)
        gib = _fused.empty((), torch.float32) if need_ib else None
    else:
        gz, da, db, gib = out
    _fused.kernel().qfx_bn_cast_backward(g.data_ptr(), x.data_ptr(), a.data_ptr(), b.data_ptr(), q.data_ptr(),
                                         gz.data_ptr(), n, c, x.numel() // max(1, n * c), lo, hi, t.int_bits,
                                         int(need_ib), int(relu), _fused.threads(),
                                         gib.data_ptr() if need_ib else None, da.data_ptr(), db.data_ptr())
    return gz, (gib if need_ib else None), da, db


def _cast(x, frac, int_bits, width, signed, rounding, overflow, out_dtype=None):
    out_dtype = out_dtype or x.dtype
    kind = _fused_kind(x, frac, width, out_dtype)
    if kind is not None:
        return _cast_kernel(x, kind, frac, width, signed, rounding, overflow, out_dtype)
    return _cast_torch(x, frac, int_bits, width, signed, rounding, overflow).to(out_dtype)


def _cast_torch(x, frac, int_bits, width, signed, rounding, overflow):
    if x.dtype == torch.float32 and not isinstance(frac, torch.Tensor) and width <= 24:
        if (width <= _F32_FAST_WIDTH and 0 <= frac <= 100 and rounding in _F64_FAST_ROUNDING
                and overflow in _F64_FAST_OVERFLOW):
            return _cast_f32(x, frac, width, signed, rounding, overflow)
        return _cast_f32_via_f64(x, frac, width, signed, rounding, overflow)
    if (x.dtype == torch.float64 and not isinstance(frac, torch.Tensor) and 0 <= frac <= 960
            and width <= _F64_FAST_WIDTH and rounding in _F64_FAST_ROUNDING and overflow in _F64_FAST_OVERFLOW):
        return _cast_fused(x, frac, width, signed, rounding, overflow)
    return _cast_scaled(x, frac, int_bits, width, signed, rounding, overflow)


def _per_channel(int_bits, x: torch.Tensor, axis: int) -> torch.Tensor:
    ib = torch.as_tensor(int_bits, device=x.device)
    if ib.dim() != 1 or ib.numel() != x.shape[axis]:
        raise ValueError(
            f"per-channel int_bits must have one entry per channel: {x.shape[axis]} along axis {axis}, "
            f"got shape {tuple(ib.shape)}")
    if ib.is_floating_point() and not torch.equal(ib, torch.round(ib)):
        raise ValueError("per-channel int_bits must be integers")
    shape = [1] * x.dim()
    shape[axis] = -1
    return ib.to(torch.int64).reshape(shape)


def quantize(x: torch.Tensor, t: FixedType, *, int_bits: Sequence[int] | torch.Tensor | None = None,
             axis: int = 1, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Cast ``x`` onto ``t``'s grid exactly as ``ap_fixed`` assignment does (see module doc).

    With ``int_bits`` (one integer per channel along ``axis``) each channel uses
    ``t`` with its own integer bits: a per-channel binary point. Differentiable
    with the straight-through gradient described in the module docstring.
    ``out_dtype``: the result's dtype, x's by default; float64 from float32 (the values
    are the same) is one pass with the conversion on the fused kernel.
    """
    if not isinstance(t, FixedType):
        raise ValueError(f"quantize expects a FixedType, got {type(t).__name__}")
    if out_dtype is not None and out_dtype != x.dtype:  # (x's own dtype: _check says what is wrong)
        if x.dtype != torch.float32 or out_dtype != torch.float64:
            raise ValueError(f"quantize: out_dtype {out_dtype} for a {x.dtype} input; float64 or the input's dtype")
        if t.width > max_exact_width(out_dtype):
            raise ValueError(f"quantize: {t} does not fit out_dtype {out_dtype} exactly")
    out_dtype = out_dtype or x.dtype
    if int_bits is None:
        _check(x, t.width, t.frac_bits, t.frac_bits)
        if not (x.requires_grad and torch.is_grad_enabled()):
            return _cast(x, t.frac_bits, t.int_bits, t.width, t.signed, t.rounding, t.overflow, out_dtype)
        y = _QuantizeSTE.apply(x, t.frac_bits, t.int_bits, t.width, t.signed, t.rounding, t.overflow)
        return y.to(out_dtype)
    ib = _per_channel(int_bits, x, axis)
    frac = t.width - ib
    _check(x, t.width, int(frac.min()), int(frac.max()))
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _cast(x, frac, ib, t.width, t.signed, t.rounding, t.overflow, out_dtype)
    return _QuantizeSTE.apply(x, frac, ib, t.width, t.signed, t.rounding, t.overflow).to(out_dtype)


# --------------------------------------------------------------- raw view
def _scale_of(frac, dtype: torch.dtype, what: str) -> float | torch.Tensor:
    """``2**frac`` (int or int64 tensor) exactly, as a normal number of ``dtype``."""
    emax = 127 if dtype == torch.float32 else 1023
    lo, hi = (int(frac.min()), int(frac.max())) if isinstance(frac, torch.Tensor) else (frac, frac)
    if lo < 1 - emax or hi > emax:
        raise ValueError(f"{what}: the scale 2**{lo if lo < 1 - emax else hi} is outside the normal range of "
                         f"{str(dtype).replace('torch.', '')}")
    if isinstance(frac, torch.Tensor):
        return _pow2(frac, dtype)
    return 2.0 ** frac


def to_raw(x: torch.Tensor, t: FixedType, *, int_bits=None, axis: int = 1) -> torch.Tensor:
    """Mantissas (int64) of values already on ``t``'s grid; raises if any value is off-grid or out of range."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"to_raw expects a float tensor of values, got {getattr(x, 'dtype', type(x).__name__)}")
    if t.width > 53:
        raise ValueError(f"to_raw handles widths up to 53 bits, got {t}: use integer mantissas")
    x = x.to(torch.float64)
    if int_bits is None:
        m = x * _scale_of(t.frac_bits, torch.float64, f"to_raw to {t}")
    else:
        ib = _per_channel(int_bits, x, axis)
        m = x * _scale_of(t.width - ib, torch.float64, f"to_raw to {t}")
    if not torch.equal(m, torch.round(m)):
        raise ValueError(f"values are not on the grid of {t}: quantize them first")
    if bool((m < t.raw_min).any()) or bool((m > t.raw_max).any()):
        raise ValueError(f"values are outside the range of {t} [{t.min}, {t.max}]")
    return m.to(torch.int64)


def from_raw(m: torch.Tensor, t: FixedType, *, dtype: torch.dtype = torch.float64, int_bits=None,
             axis: int = 1) -> torch.Tensor:
    """Values ``m * 2**-F`` of int64 mantissas, exact in ``dtype`` (checked against its width)."""
    m = torch.as_tensor(m)
    if m.is_floating_point() or m.is_complex() or m.dtype == torch.bool:
        raise ValueError(f"from_raw expects integer mantissas, got {m.dtype}")
    if t.width > max_exact_width(dtype):
        raise ValueError(f"{t} does not fit {dtype} exactly (at most {max_exact_width(dtype)} bits)")
    if m.numel() and (int(m.min()) < t.raw_min or int(m.max()) > t.raw_max):
        raise ValueError(f"mantissas outside the range of {t} [{t.raw_min}, {t.raw_max}]")
    if int_bits is None:
        return m.to(dtype) * _scale_of(-t.frac_bits, dtype, f"from_raw of {t}")
    ib = _per_channel(int_bits, m, axis)
    return m.to(dtype) * _scale_of(ib - t.width, dtype, f"from_raw of {t}")
