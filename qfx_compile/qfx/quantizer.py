"""``Quantizer``: a fixed-point cast whose binary point (integer bits) is learned.

Width ``W``, signedness, rounding and overflow are fixed; the integer bits ``I``
(per tensor, or one per channel along ``axis``) are a real-valued parameter
``theta`` used as ``I = round(theta)`` in the forward pass (straight-through
round: ``dI/dtheta = 1``).

Forward:
* eval: exactly :func:`qfx.quantize` with type ``ap_fixed<W, I, Q, O>`` (per-channel
  ``int_bits`` when per channel), or, with K-hot, the exact nearest K-hot value
  of that grid (:mod:`.khot`). No other rounding happens anywhere.
* training: the same cast computed in float32 (exact for ``W <= 22``; wider types
  train through a float64 cast). AP_RND_CONV with AP_SAT[_SYM] runs on torch's
  fused fake-quant kernels (the common, fast case).

Gradient (TQT / Brevitas log2-scale style, arXiv 1903.08066): the lsb is
``s = 2**(I-W)``, so ``I`` is ``log2 s`` up to a constant and
``dq/dI = ln2 * (q - x)`` where ``x`` is inside the range (rounding error:
pushes towards more fractional bits) and ``dq/dI = ln2 * q`` where it saturates
(``q`` = the bound: pushes towards more range). ``dq/dx`` is 1 inside the
range, 0 outside (straight-through). For speed, per-tensor AP_RND_CONV
quantizers on tensors above ``GRAD_SAMPLE`` elements sum the ``I`` gradient
over every k-th element (k prime) times k, an estimate; all others sum exactly.

Calibration: :meth:`Quantizer.calibrate` (or ``with qfx.calibrate(model)``)
observes the max magnitude and sets ``I`` to the fewest integer bits whose
range covers it: ``I = ceil(log2 max) + 1`` signed, ``ceil(log2 max)`` unsigned.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import khot as _khot
from .quantize import quantize
from .types import FixedType

_LN2 = math.log(2.0)
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
        raw_min = -(1 << (width - 1)) if signed else 0
        raw_max = (1 << (width - 1)) - 1 if signed else (1 << width) - 1
        inv = torch.exp2(-frac)
        t = FixedType(width, 0, signed, rounding, overflow)
        if k is not None:
            q = _khot._khot_forward(x, frac, t, k, digits, axis)
        elif rounding in _FAST_ROUNDING and overflow in _FAST_OVERFLOW and width <= _F32_WIDTH:
            y = x * torch.exp2(frac)
            lo = -raw_max if (overflow == "AP_SAT_SYM" and signed) else raw_min
            y = y.clamp(lo - 1, raw_max + 1)
            if rounding == "AP_TRN":
                y = y.floor_()
            elif rounding == "AP_RND":
                y = y.add_(0.5).floor_()
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
        ctx.meta = (raw_min, raw_max, ib.dim(), axis, ib.requires_grad)
        return q

    @staticmethod
    def backward(ctx, grad):
        x, q, inv = ctx.saved_tensors
        raw_min, raw_max, ibdim, axis, need_ib = ctx.meta
        inside = (x >= raw_min * inv) & (x <= raw_max * inv)
        gx = grad * inside
        gib = None
        if need_ib:
            d = torch.where(inside, q - x, q)
            g = grad * d
            if ibdim == 1:
                dims = [i for i in range(g.dim()) if i != axis % g.dim()]
                gib = (g.sum(dims) if dims else g) * _LN2
            else:
                gib = g.sum().reshape(()) * _LN2
        return gx, gib, None, None, None, None, None, None, None


#: Per-tensor integer-bit gradients are estimated from at most this many elements (see _FakeQuantTQT).
GRAD_SAMPLE = 1 << 16


def _sample_stride(n: int) -> int:
    """1 for small tensors, else the smallest prime >= n / GRAD_SAMPLE (a prime avoids aliasing with shapes)."""
    k = -(-n // GRAD_SAMPLE)
    if k <= 1:
        return 1
    while any(k % p == 0 for p in range(2, int(k ** 0.5) + 1)):
        k += 1
    return k


class _FakeQuantTQT(torch.autograd.Function):
    """Per-tensor AP_RND_CONV + AP_SAT[_SYM] cast on torch's fused fake-quant kernel (exact for W <= 22).

    ``dL/dx = g`` inside the range, 0 outside. ``dL/dI = ln2 * sum g * (q - x | q)`` (TQT, module doc),
    summed over every element for tensors up to GRAD_SAMPLE elements and, for larger ones, over every
    k-th element (k prime) times k: an estimate that keeps the training step cheap.
    """

    @staticmethod
    def forward(ctx, x, ib, width, qmin, qmax):
        scale = 2.0 ** (float(ib) - width)
        q, mask = torch.ops.aten.fake_quantize_per_tensor_affine_cachemask(x, scale, 0, qmin, qmax)
        ctx.save_for_backward(x, q, mask)
        return q

    @staticmethod
    def backward(ctx, g):
        x, q, mask = ctx.saved_tensors
        gx = g * mask
        gib = None
        if ctx.needs_input_grad[1]:
            k = _sample_stride(x.numel())
            xs, qs, ms, gs = (v.reshape(-1)[::k] for v in (x, q, mask, g))
            d = torch.where(ms, qs - xs, qs)
            gib = (torch.dot(gs.contiguous(), d.contiguous()) * (k * _LN2)).reshape(())
        return gx, gib, None, None, None


class Quantizer(nn.Module):
    """A fixed-point cast ``ap_[u]fixed<W, I, Q, O>`` with learned ``I`` (see module doc).

    Args:
        type: the base type (FixedType or spelling); its ``int_bits`` is the initial ``I``.
        channels: None for one binary point per tensor, else the number of channels
            along ``axis`` (one ``I`` each, same width).
        axis: the channel axis (0 for weights, 1 for activations).
        k_hot: None, or K (int, or one K per channel) for K-hot weights.
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
            _khot.check_khot(k_hot, digits, t.width, name)
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
        """Stop learning and calibrating ``I``: the type is fixed from now on."""
        self.int_bits_param.requires_grad_(False)
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
    def apply_eval(self, x: torch.Tensor) -> torch.Tensor:
        """The exact eval-mode cast (no gradient to I): ``qfx.quantize`` or the K-hot projection."""
        ib = self.int_bits_tensor().to(x.device)
        t = self.fixed_type()
        if self.k_hot is not None:
            if self.per_channel:
                return _khot.khot_quantize(x, self.base_type, self.k_hot, self.digits, int_bits=ib, axis=self.axis)
            return _khot.khot_quantize(x, t, self.k_hot, self.digits)
        if self.per_channel:
            return quantize(x, t, int_bits=ib, axis=self.axis)
        return quantize(x, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observe(x)
            return x
        if not self.training:
            return self.apply_eval(x)
        p = self.int_bits_param
        ib = p + (torch.floor(p + 0.5) - p).detach()  # straight-through round
        t = self.base_type
        if (self.k_hot is None and t.rounding == "AP_RND_CONV" and t.overflow in _FAST_OVERFLOW
                and t.width <= _F32_WIDTH and x.dtype == torch.float32 and not (self.per_channel and x.dim() < 2)):
            # torch's fused fake-quant kernel: round half to even, clamp; its LSQ gradient for the
            # scale s = 2**(I-W) is exactly the TQT gradient above after ds/dI = s ln2.
            qmax = t.raw_max
            qmin = -qmax if (t.overflow == "AP_SAT_SYM" and t.signed) else t.raw_min
            scale = torch.exp2(ib - t.width)
            if self.per_channel:
                return torch._fake_quantize_learnable_per_channel_affine(
                    x, scale, torch.zeros_like(scale), self.axis % x.dim(), qmin, qmax, 1.0)
            return _FakeQuantTQT.apply(x, ib, t.width, qmin, qmax)
        return _FixedPointTrain.apply(x, ib, self.width, self.base_type.signed, self.base_type.rounding,
                                      self.base_type.overflow, self.axis, self.k_hot, self.digits)


def quantizers(model: nn.Module) -> list[Quantizer]:
    """Every Quantizer in a model."""
    return [m for m in model.modules() if isinstance(m, Quantizer)]


def int_bits_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable integer-bit parameters (give them their own optimizer group, e.g. a larger lr)."""
    return [q.int_bits_param for q in quantizers(model) if q.int_bits_param.requires_grad]


def other_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every trainable parameter that is not an integer-bit parameter."""
    ids = {id(p) for p in int_bits_parameters(model)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
