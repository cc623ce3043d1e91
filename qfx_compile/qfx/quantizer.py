"""``Quantizer``: a fixed-point cast whose binary point (integer bits) is learned.

Width ``W``, signedness, rounding and overflow are fixed; the integer bits ``I``
(per tensor, or one per channel along ``axis``) are a real-valued parameter
``theta`` used as ``I = round(theta)`` in the forward pass (straight-through
round: ``dI/dtheta = 1``). Optionally ``W`` is learned too, one per tensor, in
the same way (:meth:`Quantizer.learn_width`: its gradient and bounds).

Forward:
* eval: exactly :func:`qfx.quantize` with type ``ap_fixed<W, I, Q, O>`` (per-channel
  ``int_bits`` when per channel), or, with K-hot, the exact nearest K-hot value
  of that grid (:mod:`.khot`). No other rounding happens anywhere.
* training: the same cast computed in float32 (exact for ``W <= 22``; wider types
  train through a float64 cast). AP_RND_CONV with AP_SAT[_SYM] runs on torch's
  fast paths (the common case): per tensor two to four vectorised float32
  passes (``_FakeQuantTQT``: torch's quantize_per_tensor / dequantize), per channel (also 1-D tensors: bias, BatchNorm scale /
  shift) torch's ``_fake_quantize_learnable_per_channel_affine``.

Gradient (TQT / Brevitas log2-scale style, arXiv 1903.08066): the lsb is
``s = 2**(I-W)``, so ``I`` is ``log2 s`` up to a constant and
``dq/dI = ln2 * (q - x)`` where ``x`` is inside the range (rounding error:
pushes towards more fractional bits) and ``dq/dI = ln2 * q`` where it saturates
(``q`` = the bound: pushes towards more range). ``dq/dx`` is 1 inside the
range, 0 outside (straight-through). Per tensor, the ``I`` gradient is
:func:`.quantize.ib_grad`: each term rounded to its block's power-of-two grid, each block
summed exactly, the blocks in order (the same float32 value whatever the thread count or the kernel);
per channel, float32 sums. On CPU, per-tensor float32 casts (W <= 22) run on the fused
kernel of :mod:`.fused` (one pass forward, one backward) when a C++ compiler is there.
On the fused kernels (AP_RND_CONV with
AP_SAT[_SYM]) per channel (torch's LSQ kernel) "inside" means the rounded value
is within the raw range (x up to half an lsb beyond ``max`` counts as inside);
everywhere else it is ``min <= x <= max``.

Calibration: :meth:`Quantizer.calibrate` (or ``with qfx.calibrate(model)``)
observes the max magnitude and sets ``I`` to the fewest integer bits whose
range covers it: ``I = ceil(log2 max) + 1`` signed, ``ceil(log2 max)`` unsigned.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import fused as _fused
from . import khot as _khot
from .quantize import (_LN2, channel_sums_fit, fused_train_add_cast, fused_train_cast, ib_grad, quantize,
                       train_cast_bounds)
from ..fixed.types import FixedType, raw_range, sat_sym_raw_min
#: Widths the float32 training path emulates exactly; wider casts train in float64.
_F32_WIDTH = 22
#: Rounding / overflow modes with a fused float32 training kernel.
_FAST_ROUNDING = ("AP_TRN", "AP_RND", "AP_RND_CONV", "AP_TRN_ZERO")
_FAST_OVERFLOW = ("AP_SAT", "AP_SAT_SYM")


def as_fixed_type(t, what: str = "type") -> FixedType:
    """A FixedType from a FixedType or its C++ spelling (``"ap_fixed<8,3,AP_RND_CONV,AP_SAT>"``)."""
    if isinstance(t, FixedType):
        return t
    if isinstance(t, str):
        try:
            return FixedType.parse(t)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    raise ValueError(f"{what}: expected a FixedType or a spelling such as 'ap_fixed<8,3>', got {t!r}")


def int_bits_to_cover(lo: float, hi: float, signed: bool) -> int:
    """Fewest integer bits whose range covers ``[lo, hi]`` up to the top lsb (TQT's ceil rule)."""
    amax = max(abs(lo), abs(hi)) if signed else max(hi, 0.0)
    if not amax > 0 or not math.isfinite(amax):
        return 1 if signed else 0
    e = math.ceil(math.log2(amax))
    return e + 1 if signed else e


class _FixedPointTrain(torch.autograd.Function):
    """Training-mode cast with the STE gradient for x and the TQT gradient for the integer bits."""

    @staticmethod
    def forward(ctx, x, ib, width, signed, rounding, overflow, axis, k, digits):
        shape = [1] * x.dim()
        if ib.dim() == 1:
            shape[axis] = -1
        ibr = ib.detach().to(x.dtype).reshape(shape)
        frac = width - ibr
        raw_min, raw_max = raw_range(width, signed)
        inv = torch.exp2(-frac)
        t = FixedType(width, 0, signed, rounding, overflow)
        if k is not None:
            q = _khot._khot_forward(x, frac, t, k, digits, axis)
        elif rounding in _FAST_ROUNDING and overflow in _FAST_OVERFLOW and width <= _F32_WIDTH:
            y = x * torch.exp2(frac)
            lo = sat_sym_raw_min(width, signed) if overflow == "AP_SAT_SYM" else raw_min
            y = y.clamp(lo - 1, raw_max + 1)
            if rounding == "AP_TRN":
                y = y.floor_()
            elif rounding == "AP_RND":
                # floor(y + 0.5) is inexact in float32 for y = 0.5 - 2**-25; floor plus (fraction >= 1/2) is
                # exact (the fraction y - floor(y) is exact or rounds within (0, 1) without crossing 1/2).
                f = torch.floor(y)
                y = f.add_(y.sub_(f).ge_(0.5))
            elif rounding == "AP_RND_CONV":
                y = y.round_()
            else:
                y = y.trunc_()
            q = y.clamp_(lo, raw_max).mul_(inv)
        else:
            xd = x.double() if width > _F32_WIDTH else x
            ib_int = ib.detach().round().long()
            if ib.dim() == 1:
                q = quantize(xd, t.replace(int_bits=int(ib_int.max())), int_bits=ib_int, axis=axis)
            else:
                q = quantize(xd, t.replace(int_bits=int(ib_int)))
            q = q.to(x.dtype)
        ctx.save_for_backward(x, q, inv)
        ctx.meta = (raw_min, raw_max, ib.dim(), axis, ib.requires_grad, int(ib.detach().max()))
        return q

    @staticmethod
    def backward(ctx, grad):
        x, q, inv = ctx.saved_tensors
        raw_min, raw_max, ibdim, axis, need_ib, ib_int = ctx.meta
        inside = (x >= raw_min * inv) & (x <= raw_max * inv)
        gx = torch.where(inside, grad, 0.0)
        gib = None
        if need_ib and ibdim == 0:
            gib = ib_grad(grad, x, q, inside, ib_int)
        elif need_ib:
            d = torch.where(inside, q - x, q)
            g = grad * d
            dims = [i for i in range(g.dim()) if i != axis % g.dim()]
            gib = (g.sum(dims) if dims else g) * _LN2
        return gx, gib, None, None, None, None, None, None, None


def _widen(v: float, up: bool) -> float:
    """The next float32 after ``v`` (towards +inf if up): strict ``<`` against it is ``<=`` against v."""
    t = torch.tensor(v, dtype=torch.float32)
    return float(torch.nextafter(t, torch.tensor(math.inf if up else -math.inf)))


_QINT = {(-128, 127): getattr(torch, "qint8", None), (0, 255): getattr(torch, "quint8", None)}
_HAS_QUANTIZED = hasattr(torch, "quantize_per_tensor") and getattr(torch, "qint32", None) is not None
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated")


def _round_sat(x: torch.Tensor, s: float, lo: float, hi: float, qmin: int, qmax: int) -> torch.Tensor:
    """``nearbyint(clamp(x, lo, hi) / s) * s`` for float32 x and a power-of-two lsb s (exact).

    ``torch.quantize_per_tensor`` + ``dequantize`` (vectorised, round half to even on
    ``x * (1/s)``, both exact for a power-of-two s) when available: 2 passes for an
    8-bit range it saturates to by itself (qint8 / quint8), else clamp first and qint32
    (3 passes); otherwise 4 elementwise passes.
    """
    if _HAS_QUANTIZED:
        dt = _QINT.get((qmin, qmax))
        if dt is not None:
            return torch.dequantize(torch.quantize_per_tensor(x, s, 0, dt))
        if qmin >= -(1 << 31) and qmax < (1 << 31):
            return torch.dequantize(torch.quantize_per_tensor(x.clamp(lo, hi), s, 0, torch.qint32))
    return x.clamp(lo, hi).mul_(1.0 / s).round_().mul_(s)


class _FakeQuantTQT(torch.autograd.Function):
    """Per-tensor AP_RND_CONV + AP_SAT[_SYM] cast in float32 (exact for W <= 24), TQT gradients.

    Forward (2 to 4 vectorised passes, ``_round_sat``): ``q = nearbyint(clamp(x, lo*s, hi*s) * 2**F) * 2**-F``
    (s = 2**-F the lsb; clamping first equals saturating after rounding, the bounds being on
    the grid; scaling by a power of two is exact, and a product that underflows rounds to 0
    as the exact one does). Saves x and q (q is saved by the next layer anyway).
    Backward: ``dL/dx = g`` where ``lo*s <= x <= hi*s``, else 0 (one fused pass:
    ``hardtanh_backward`` with bounds one float32 ulp wider); ``dL/dI = ln2 * sum g * (q - x
    inside | q outside)`` (TQT, module doc), as :func:`.quantize.ib_grad` (exact block sums of
    rounded terms, independent of the thread count: the fused kernel's value).
    """

    @staticmethod
    def forward(ctx, x, ib, width, qmin, qmax):
        frac = width - int(ib)
        s = 2.0 ** -frac
        lo, hi = qmin * s, qmax * s
        q = _round_sat(x, s, lo, hi, qmin, qmax)
        ctx.save_for_backward(x, q)
        ctx.bounds = (_widen(lo, False), _widen(hi, True))
        ctx.range = (lo, hi, int(ib))
        return q

    @staticmethod
    def backward(ctx, g):
        x, q = ctx.saved_tensors
        g = g.contiguous()
        gx = torch.ops.aten.hardtanh_backward(g, x, *ctx.bounds)
        gib = None
        if ctx.needs_input_grad[1]:
            lo, hi, ib = ctx.range
            gib = ib_grad(g, x, q, (x >= lo) & (x <= hi), ib)
        return (gx if ctx.needs_input_grad[0] else None), gib, None, None, None


def pc_fq_forward(x: torch.Tensor, theta: torch.Tensor, width: int, qmin: int, qmax: int, axis: int):
    """``(y, saved)``: the per-channel fake-quant cast of float32 ``x`` on the fused kernel (see
    :class:`_PerChannelFakeQuant`); ``saved`` is what :func:`pc_fq_backward` needs."""
    x = x.contiguous()
    flat = x.dim() == 1  # torch's path views [C] as [C, 1]
    ax = 0 if flat else axis % x.dim()
    c = x.shape[ax]
    outer, inner = math.prod(x.shape[:ax]), math.prod(x.shape[ax + 1:])
    theta = _fused.f32(theta)
    y = _fused.empty(x.shape, torch.float32)
    scale = _fused.empty((c,), torch.float32)
    _fused.kernel().qfx_pc_fq_forward(x.data_ptr(), theta.data_ptr(), y.data_ptr(), scale.data_ptr(), outer, c,
                                      inner, width, qmin, qmax)
    dims = (1,) if flat else tuple(d for d in range(x.dim()) if d != ax)
    return y, (x, scale, (outer, c, inner, qmin, qmax, dims))


def pc_fq_backward(g: torch.Tensor, saved, need_x: bool, need_theta: bool):
    """``(dL/dx, dL/dtheta)`` (None where not needed) of :func:`pc_fq_forward` for the output gradient ``g``."""
    x, scale, (outer, c, inner, qmin, qmax, dims) = saved
    g = g.contiguous()
    dx = _fused.empty(x.shape, torch.float32)
    dscale = _fused.empty(x.shape, torch.float32)
    _fused.kernel().qfx_pc_fq_backward(g.data_ptr(), x.data_ptr(), scale.data_ptr(), dx.data_ptr(),
                                       dscale.data_ptr(), outer, c, inner, qmin, qmax)
    dtheta = None
    if need_theta:
        dtheta = dscale.reshape(-1, 1).sum(dims) if x.dim() == 1 else dscale.sum(dims)
        dtheta = dtheta * scale * _LN2
    return (dx if need_x else None), dtheta


class _PerChannelFakeQuant(torch.autograd.Function):
    """The per-channel AP_RND_CONV + AP_SAT[_SYM] training cast of float32 ``x`` (W <= 22) on the fused kernel
    (``qfx_pc_fq_forward`` / ``_backward`` in cast.cpp), one autograd node: the values and gradients of the torch
    path below it in :meth:`Quantizer._train_cast` (``round(theta)`` straight through, ``exp2``, the clamp one lsb
    beyond the range, ``_fake_quantize_learnable_per_channel_affine``), bit for bit
    (tests/test_qfx_train_kernels.py). The per-element scale gradients are summed per channel by torch's ``sum``
    as that kernel's backward does; ``dL/dtheta = dscale * s * ln2`` as ``exp2``'s backward."""

    @staticmethod
    def forward(ctx, x, theta, width, qmin, qmax, axis):
        y, ctx.saved = pc_fq_forward(x, theta, width, qmin, qmax, axis)
        return y

    @staticmethod
    def backward(ctx, g):
        dx, dtheta = pc_fq_backward(g, ctx.saved, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return dx, dtheta, None, None, None, None


class Quantizer(nn.Module):
    """A fixed-point cast ``ap_[u]fixed<W, I, Q, O>`` with learned ``I`` (see module doc).

    Args:
        type: the base type (FixedType or spelling); its ``int_bits`` is the initial ``I``.
        channels: None for one binary point per tensor, else the number of channels
            along ``axis`` (one ``I`` each, same width).
        axis: the channel axis (0 for weights, 1 for activations).
        k_hot: None, or K (int, or one K per channel; 0: a plain fixed-point channel) for K-hot weights.
        digits: "binary" or "csd" (K-hot digit flavour; default "csd" when k_hot is set).
        learnable: whether ``I`` receives gradients.
    """

    def __init__(self, type, *, channels: int | None = None, axis: int = 1, k_hot=None,
                 digits: str | None = None, learnable: bool = True, name: str = "quantizer"):
        super().__init__()
        t = as_fixed_type(type, name)
        if t.width > 53:
            raise ValueError(f"{name}: {t} is wider than 53 bits; eval mode computes in float64")
        if channels is not None and (not isinstance(channels, int) or channels < 1):
            raise ValueError(f"{name}: channels must be a positive int or None, got {channels!r}")
        if k_hot is not None:
            digits = digits or "csd"
            _khot.check_row_k(k_hot, digits, t.width, name)
            if isinstance(k_hot, (list, tuple)):
                if channels is None or len(k_hot) != channels:
                    raise ValueError(f"{name}: one K per channel needs a per-channel quantizer with "
                                     f"{len(k_hot)} channels")
                k_hot = [int(k) for k in k_hot]
            else:
                k_hot = int(k_hot)
            if t.width > _F32_WIDTH:
                raise ValueError(f"{name}: K-hot weights support widths up to {_F32_WIDTH}, got {t.width}")
        elif digits is not None:
            raise ValueError(f"{name}: digits={digits!r} given without k_hot")
        self.width_param = None  # learn_width: a learned word length (see learn_width)
        self.base_type = t.replace(int_bits=0)
        self.axis = axis
        self.channels = channels
        self.k_hot = k_hot
        self.digits = digits if k_hot is not None else None
        self.name = name
        shape = () if channels is None else (channels,)
        self.int_bits_param = nn.Parameter(torch.full(shape, float(t.int_bits)), requires_grad=learnable)
        self.frozen = not learnable
        self.calibrating = False
        self._obs = None  # (lo, hi) tensors observed while calibrating

    # ----------------------------------------------------------------- API
    @property
    def per_channel(self) -> bool:
        return self.channels is not None

    @property
    def width(self) -> int:
        return self.base_type.width

    @property
    def base_type(self) -> FixedType:
        """The type with ``int_bits=0``; with a learned width (:meth:`learn_width`), the current width."""
        p = self.width_param
        if p is None:
            return self._base_type
        lo, hi = self.width_bounds
        return self._base_type.replace(width=min(hi, max(lo, int(math.floor(float(p.detach()) + 0.5)))))

    @base_type.setter
    def base_type(self, t: FixedType) -> None:
        self._base_type = t
        if self.width_param is not None and t.width != self.base_type.width:
            self.set_width(t.width)

    def learn_width(self, min_width: int = 2, max_width: int | None = None) -> "Quantizer":
        """Learn the word length W (one per tensor, shared by the channels) within ``[min_width, max_width]``.

        The forward pass casts to the integer width ``clamp(round(w), min, max)`` (straight-through
        round); a training step projects ``w`` back into the bounds. ``max_width=None``: the current
        width (training can only narrow the type). The gradient of the task loss reaches ``w``
        as the binary point's does (module doc): with I fixed the lsb is ``s = 2**(I-W)``, so
        ``dq/dW = -ln2 * (q - x)`` inside the range (one more bit halves the rounding error), and
        at saturation ``dq/dW = ln2 * s`` at the top (``max = 2**(I-1) - s`` grows towards
        ``2**(I-1)``), 0 at the bottom (``-2**(I-1)`` does not move; ``-ln2 * s`` for AP_SAT_SYM).
        ``qfx.hardware_cost`` adds the gradient of the estimated LUT/DSP/BRAM in W.
        """
        w0 = self.width
        hi = w0 if max_width is None else max_width
        problems = []
        for what, v in (("min_width", min_width), ("max_width", hi)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{what} must be an int >= 1, got {v!r}")
        if not problems and min_width > hi:
            problems.append(f"min_width {min_width} > max_width {hi}")
        limit = _F32_WIDTH if _khot.has_khot_rows(self.k_hot) else 53
        if not problems and hi > limit:
            problems.append(f"max_width {hi} is above {limit} bits, the widest {'K-hot ' if limit < 53 else ''}"
                            f"type eval mode computes exactly")
        if not problems and self.k_hot is not None:
            for w in range(min_width, hi + 1):
                try:
                    _khot.check_row_k(self.k_hot, self.digits, w, self.name)
                except ValueError as e:
                    problems.append(f"width {w} in [min_width, max_width]: {e}; raise min_width")
                    break
        if problems:
            raise ValueError(f"{self.name}: learn_width: " + "; ".join(problems))
        self.width_bounds = (int(min_width), int(hi))
        self.width_param = nn.Parameter(torch.tensor(float(min(hi, max(min_width, w0)))),
                                        requires_grad=not self.frozen)
        return self

    def set_width(self, w: int) -> None:
        """Set the learned width (within the bounds)."""
        with torch.no_grad():
            self.width_param.fill_(float(min(self.width_bounds[1], max(self.width_bounds[0], int(w)))))

    def _width_term(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Zero, with the gradient ``dq/dW`` of :meth:`learn_width` (added to the training cast's output)."""
        p = self.width_param
        lo, hi = self.width_bounds
        if not lo <= float(p.detach()) <= hi:
            with torch.no_grad():
                p.clamp_(lo, hi)  # projected gradient step: the width stays within its bounds
        t = self.base_type
        ib = self.int_bits_tensor().to(x.device, x.dtype)
        if self.per_channel:
            shape = [1] * x.dim()
            shape[self.axis % x.dim()] = -1
            ib = ib.reshape(shape)
        with torch.no_grad():
            s = torch.exp2(ib - t.width)
            top = t.raw_max * s
            sym = t.overflow == "AP_SAT_SYM"
            bottom = (sat_sym_raw_min(t.width, t.signed) if sym else t.raw_min) * s
            d = torch.where(x > top, s, torch.where(x < bottom, -s if sym and t.signed else 0.0 * s, x - q))
            d = d.mul_(_LN2)
        return (p - p.detach()) * d

    def int_bits_tensor(self) -> torch.Tensor:
        """The integer bits in use (LongTensor: scalar per tensor, [C] per channel)."""
        return torch.floor(self.int_bits_param.detach() + 0.5).long().cpu()

    def fixed_type(self) -> FixedType:
        """The type (per tensor); per channel, the base type with the max integer bits over channels."""
        return self.base_type.replace(int_bits=int(self.int_bits_tensor().max()))

    def set_int_bits(self, ib) -> None:
        ib = torch.as_tensor(ib, dtype=torch.float32).reshape(self.int_bits_param.shape)
        with torch.no_grad():
            self.int_bits_param.copy_(ib)

    def freeze(self) -> "Quantizer":
        """Stop learning and calibrating ``I`` (and the width): the type is fixed from now on."""
        self.int_bits_param.requires_grad_(False)
        if self.width_param is not None:
            self.width_param.requires_grad_(False)
        self.frozen = True
        return self

    def extra_repr(self) -> str:
        s = f"{self.fixed_type()}"
        if self.per_channel:
            s += f", channels={self.channels}, axis={self.axis}"
        if self.k_hot is not None:
            s += f", k_hot={self.k_hot}, digits={self.digits}"
        return s

    # ---------------------------------------------------------- calibration
    def _reduce_dims(self, x):
        if not self.per_channel:
            return list(range(x.dim()))
        ax = self.axis % x.dim()
        return [i for i in range(x.dim()) if i != ax]

    def observe(self, x: torch.Tensor) -> None:
        """Record the min and max of ``x`` (per channel) for :meth:`finish_calibration`."""
        x = x.detach()
        dims = self._reduce_dims(x)
        lo = x.amin(dim=dims) if dims else x
        hi = x.amax(dim=dims) if dims else x
        if self._obs is None:
            self._obs = (lo.float().cpu(), hi.float().cpu())
        else:
            self._obs = (torch.minimum(self._obs[0], lo.float().cpu()),
                         torch.maximum(self._obs[1], hi.float().cpu()))

    def finish_calibration(self) -> None:
        """Set ``I`` from the observed range (no-op when frozen or nothing was observed)."""
        if self._obs is not None and not self.frozen:
            lo, hi = self._obs
            s = self.base_type.signed
            ib = [int_bits_to_cover(float(a), float(b), s) for a, b in zip(lo.reshape(-1), hi.reshape(-1))]
            self.set_int_bits(ib if self.per_channel else ib[0])
        self._obs = None
        self.calibrating = False

    def calibrate(self, x: torch.Tensor) -> "Quantizer":
        """Set ``I`` to cover ``x`` at once."""
        self.observe(x)
        self.finish_calibration()
        return self

    # --------------------------------------------------------------- casts
    def apply_eval(self, x: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """The exact eval-mode cast (no gradient to I): ``qfx.quantize`` or the K-hot projection, as
        ``out_dtype`` (default x's)."""
        ib = self.int_bits_tensor().to(x.device)
        t = self.fixed_type()
        if _khot.has_khot_rows(self.k_hot):
            if self.per_channel:
                y = _khot.khot_quantize(x, self.base_type, self.k_hot, self.digits, int_bits=ib, axis=self.axis)
            else:
                y = _khot.khot_quantize(x, t, self.k_hot, self.digits)
            return y.to(out_dtype or y.dtype)
        if self.per_channel:
            return quantize(x, t, int_bits=ib, axis=self.axis, out_dtype=out_dtype)
        return quantize(x, t, out_dtype=out_dtype)

    def forward(self, x: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """The cast (``out_dtype``: eval mode only, see :meth:`apply_eval`)."""
        if out_dtype is not None and (self.calibrating or self.training):
            raise ValueError(f"{self.name}: out_dtype is for eval mode (training and calibration keep x's dtype)")
        if self.calibrating:
            self.observe(x)
            return x
        if not self.training:
            return self.apply_eval(x, out_dtype)
        if self.width_param is not None and self.width_param.requires_grad and torch.is_grad_enabled():
            q = self._train_cast(x)
            return q + self._width_term(x, q)
        return self._train_cast(x)

    def train_cast_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``torch.relu(self(x))`` in training mode (values and gradients), in one pass each way where the
        per-tensor fused kernel applies (:func:`..quantize.fused_train_cast`)."""
        if self.training and not self.calibrating and self.width_param is None:
            y = self._fused_cast(x, relu=True)
            if y is not None:
                return y
        return torch.relu(self(x))

    def train_add_cast(self, a: torch.Tensor, b: torch.Tensor, relu: bool = False) -> torch.Tensor | None:
        """``self(a + b)`` (with ``relu`` ``torch.relu`` of it) in training mode, values and gradients, on the fused
        kernel without the sum in memory (:func:`..quantize.fused_train_add_cast`), where this cast is movable
        (:meth:`movable_cast`) and plain per tensor; None elsewhere."""
        if not self._movable_per_tensor(a):
            return None
        t = self.fused_type()
        return fused_train_add_cast(a, b, self.int_bits_param, t, self.fused_lo_raw(t), relu)

    def _fused_cast(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor | None:
        """The per-tensor training cast on the fused kernel; None where it does not apply."""
        if self.per_channel or _khot.has_khot_rows(self.k_hot):
            return None
        t = self.fused_type()
        return fused_train_cast(x, self.int_bits_param, t, self.fused_lo_raw(t), relu)

    def ste_int_bits(self) -> torch.Tensor:
        """The integer bits as the training cast uses them: ``round(theta)`` with the straight-through gradient."""
        p = self.int_bits_param
        return p + (torch.floor(p + 0.5) - p).detach()

    def fused_type(self) -> FixedType:
        """The per-tensor type with :meth:`ste_int_bits`'s value as its integer bits (the same float32 steps on
        the Python number: no tensor operations), for the fused kernels, which take the parameter itself as
        the straight-through input (``d ste_int_bits / d theta = 1``)."""
        p = np.float32(self.int_bits_param.item())
        ib = int(p + (np.floor(p + np.float32(0.5)) - p))
        base = self.base_type
        cache = self.__dict__.get("_fused_types")
        if cache is None or cache[0] is not base:  # a new base type (set, or a learned width): start afresh
            cache = self.__dict__["_fused_types"] = (base, {})
        t = cache[1].get(ib)
        if t is None:
            t = cache[1][ib] = base.replace(int_bits=ib)
        return t

    @staticmethod
    def fused_lo_raw(t: FixedType) -> int:
        """The lowest mantissa whose input passes ``dL/dx`` on the fused per-tensor kernels (``_FakeQuantTQT``'s range)."""
        sym = t.overflow == "AP_SAT_SYM" and t.rounding == "AP_RND_CONV"
        return sat_sym_raw_min(t.width, t.signed) if sym else t.raw_min

    def fused_cast_args(self, x: torch.Tensor, kernel: bool = True, t: FixedType | None = None):
        """``(theta, t, lo, hi)`` where this quantizer's training cast of float32 ``x`` is the per-tensor fused
        cast and another module's autograd node may run it (training, plain per-tensor, no learned width, no
        hooks, not calibrating, W <= 22, F within float32's range; with ``kernel`` also CPU and a kernel): the
        parameter taking the binary-point gradient, the type with its integer bits (``t`` where the caller has
        it: the :meth:`fused_type` the cast was computed with), and the bounds where ``dL/dx`` passes. None
        otherwise."""
        if not self._movable_per_tensor(x) or (kernel and (x.device.type != "cpu" or _fused.kernel() is None)):
            return None
        t = self.fused_type() if t is None else t
        bounds = train_cast_bounds(t, self.fused_lo_raw(t))
        return None if bounds is None else (self.int_bits_param, t, *bounds)

    def train_grid(self, x: torch.Tensor, shape: Sequence[int] | None = None) -> FixedType | None:
        """The type (integer bits as :meth:`fused_type`) on whose grid this quantizer's training cast of float32
        (N, C, ...) ``x`` certainly lies, where the cast is plain per tensor and movable (:meth:`movable_cast`)
        and the per-channel mantissa sums fit (:func:`..quantize.channel_sums_fit`); else None. ``shape``: the
        cast's input shape where it is not yet computed (``x`` then any float32 tensor of its dtype)."""
        if not self._movable_per_tensor(x):
            return None
        t = self.fused_type()
        return t if channel_sums_fit(x.shape if shape is None else shape, t) else None

    def train_cast_channel_sums(self, x: torch.Tensor, t: FixedType):
        """``(self(x), sums)`` with ``t = train_grid(x)``: the training cast on the fused kernel (values and
        gradients) and :func:`..quantize.channel_sums` of it from the same pass; None where the kernel does not
        apply."""
        sums = []
        y = fused_train_cast(x, self.int_bits_param, t, self.fused_lo_raw(t), sums=sums)
        return None if y is None else (y, sums[0])

    def _movable_per_tensor(self, x: torch.Tensor) -> bool:
        """A movable (:meth:`movable_cast`) plain per-tensor cast of float32 ``x``."""
        return self.movable_cast() and not self.per_channel and self.k_hot is None and x.dtype == torch.float32

    def movable_cast(self) -> bool:
        """Whether another module's autograd node may run this quantizer's training cast: training, not
        calibrating, no learned width, no hooks (which that node would not call)."""
        return (self.training and not self.calibrating and self.width_param is None and not self._forward_hooks
                and not self._forward_pre_hooks)

    def pc_fq_args(self, x: torch.Tensor) -> tuple[int, int, int] | None:
        """``(W, qmin, qmax)`` where this quantizer's training cast of ``x`` runs on the per-channel fused kernel
        (:func:`pc_fq_forward`: per channel, plain, AP_RND_CONV with AP_SAT[_SYM], W <= 22, CPU float32, a
        kernel), else None."""
        t = self.base_type
        if (not self.per_channel or _khot.has_khot_rows(self.k_hot) or t.rounding != "AP_RND_CONV"
                or t.overflow not in _FAST_OVERFLOW or t.width > _F32_WIDTH or x.dtype != torch.float32
                or x.device.type != "cpu" or _fused.kernel() is None):
            return None
        qmin = sat_sym_raw_min(t.width, t.signed) if t.overflow == "AP_SAT_SYM" else t.raw_min
        return t.width, qmin, t.raw_max

    def movable_pc_fq_args(self, x: torch.Tensor) -> tuple[int, int, int] | None:
        """:meth:`pc_fq_args` where another module's autograd node may run this cast (:meth:`movable_cast`), else
        None."""
        return self.pc_fq_args(x) if self.movable_cast() else None

    def _train_cast(self, x: torch.Tensor) -> torch.Tensor:
        """The training-mode cast (values of the eval cast, straight-through / TQT gradients)."""
        y = self._fused_cast(x)  # the fused CPU kernel (quantize.fused_train_cast), same values
        if y is not None:
            return y
        pc = self.pc_fq_args(x)
        if pc is not None:
            return _PerChannelFakeQuant.apply(x, self.int_bits_param, *pc, self.axis)
        t = self.base_type
        plain = not _khot.has_khot_rows(self.k_hot)
        if (plain and t.rounding == "AP_RND_CONV" and t.overflow in _FAST_OVERFLOW
                and t.width <= _F32_WIDTH and x.dtype == torch.float32):
            # torch's fused fake-quant kernel: round half to even, clamp; its LSQ gradient for the
            # scale s = 2**(I-W) is exactly the TQT gradient above after ds/dI = s ln2.
            qmax = t.raw_max
            qmin = sat_sym_raw_min(t.width, t.signed) if t.overflow == "AP_SAT_SYM" else t.raw_min
            ib = self.ste_int_bits()
            if self.per_channel:
                scale = torch.exp2(ib - t.width)
                flat = x.dim() == 1  # the kernel needs a 2-D tensor at least: [C] -> [C, 1]
                ax = 0 if flat else self.axis % x.dim()
                xs = x.reshape(-1, 1) if flat else x
                # The kernel's float->int conversion overflows for huge |x|: clamp one lsb beyond the range
                # first (still outside, so the value, dL/dx = 0 and the dL/dI term are unchanged).
                shape = [1] * xs.dim()
                shape[ax] = -1
                s_ = scale.detach().reshape(shape)
                xs = torch.clamp(xs, (qmin - 1) * s_, (qmax + 1) * s_)
                y = torch._fake_quantize_learnable_per_channel_affine(xs, scale, torch.zeros_like(scale), ax,
                                                                      qmin, qmax, 1.0)
                return y.reshape(-1) if flat else y
            return _FakeQuantTQT.apply(x, ib, t.width, qmin, qmax)
        return _FixedPointTrain.apply(x, self.ste_int_bits(), self.width, self.base_type.signed,
                                      self.base_type.rounding, self.base_type.overflow, self.axis,
                                      self.k_hot if _khot.has_khot_rows(self.k_hot) else None, self.digits)


def quantizers(model: nn.Module) -> list[Quantizer]:
    """Every Quantizer in a model."""
    return [m for m in model.modules() if isinstance(m, Quantizer)]


def int_bits_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable bit parameters: integer bits and learned widths (give them their own optimizer group,
    e.g. a larger lr: a step of 1.0 is one bit)."""
    ps = [q.int_bits_param for q in quantizers(model) if q.int_bits_param.requires_grad]
    return ps + [q.width_param for q in quantizers(model) if q.width_param is not None and q.width_param.requires_grad]


def other_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every trainable parameter that is not an integer-bit parameter."""
    ids = {id(p) for p in int_bits_parameters(model)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
