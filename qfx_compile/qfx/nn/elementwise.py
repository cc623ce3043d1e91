"""QFX element-wise layers.

``QuantInput(t)``: ``cast(x_float, t)`` (eval: x converted to float64 first).
``Quant(t)``: ``cast(x, t)`` anywhere. ``ReLU``: ``max(x, 0)``, no cast.
``Clip(lo, hi)`` (ReLU6 = Clip(0, 6)): ``min(max(x, lo_q), hi_q)``, no cast, with
``lo_q, hi_q`` = lo, hi cast to the input's type with AP_RND_CONV / AP_SAT
(eval needs ``input_type``, which ``quantize_model`` keeps up to date; training
clamps to lo, hi). ``Add(out_type)``: ``cast(a + b, out_type)``, the sum exact.
``Flatten``: (N, C, H, W) -> (N, C*H*W) in PyTorch order.
"""
from __future__ import annotations

import numpy as np
import torch

from ..quantize import quantize
from ..quantizer import Quantizer
from ...fixed.types import FixedType
from ._base import QFXModule, guard, is_relu_applied, relu_applied


class Quant(QFXModule):
    """``cast(x, t)`` with a learned binary point."""

    def __init__(self, type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", *, learnable: bool = True):
        super().__init__()
        self.output_quantizer = Quantizer(type, learnable=learnable, name="output")

    @property
    def quantizer(self) -> Quantizer:
        return self.output_quantizer

    def onnx_export(self, ctx):
        """ONNX body: ``FixedPoint(x)`` to the layer's type."""
        t = ctx.act_type()
        return ctx.b.fixed_point(ctx.x, t, t.int_bits, (), ctx.name, ctx.shape), t

    def forward(self, x):
        if self._float_path():
            return self.output_quantizer(x)
        q = self.output_quantizer
        if x.dtype == torch.float32 and q.width <= 24 and not q.per_channel and abs(q.fixed_type().frac_bits) <= 100:
            # the float32 cast is exact (the same real value either way), then widen the W-bit result
            return self.output_quantizer(x, out_dtype=torch.float64)
        return self.output_quantizer(x.to(torch.float64))


class QuantInput(Quant):
    """The input quantizer: ``cast(x_float, t)``; the first layer of every QFX model."""

    onnx_untyped_input = True  # export: reads the float model input
    onnx_is_input = True


class ReLU(QFXModule):
    def forward(self, x):
        if self.training and is_relu_applied(x):  # applied by its producer's cast (QFXModule.fuse_relu)
            return x
        if not self._float_path():
            x = x.to(torch.float64)
        return torch.relu(x)

    def output_type(self, input_types):
        return input_types[0]

    def onnx_export(self, ctx):
        """ONNX body: ``Relu``, no cast."""
        return ctx.node("Relu", [ctx.x], "out"), ctx.xt


class Clip(QFXModule):
    """``min(max(x, lo_q), hi_q)``; see module doc."""

    def __init__(self, lo: float = 0.0, hi: float = 6.0):
        super().__init__()
        self.lo, self.hi = float(lo), float(hi)
        if not self.lo < self.hi:
            raise ValueError(f"Clip needs lo < hi, got lo={lo}, hi={hi}")
        self.input_type: FixedType | None = None

    def bounds(self, t: FixedType) -> tuple[float, float]:
        """``lo_q, hi_q``: lo and hi cast to ``t`` with AP_RND_CONV / AP_SAT."""
        c = t.replace(rounding="AP_RND_CONV", overflow="AP_SAT")
        v = quantize(torch.tensor([self.lo, self.hi], dtype=torch.float64), c)
        return float(v[0]), float(v[1])

    def forward(self, x):
        if self._float_path():
            return torch.clamp(x, self.lo, self.hi)
        if self.input_type is None:
            raise ValueError(f"{self.layer_name}: eval mode needs the input type (set .input_type, or build the "
                             f"model with qfx.quantize_model, which infers it)")
        lo, hi = self.bounds(self.input_type)
        return torch.clamp(x.to(torch.float64), lo, hi)

    def output_type(self, input_types):
        return input_types[0]

    def extra_repr(self):
        return f"lo={self.lo}, hi={self.hi}"

    def onnx_export(self, ctx):
        """ONNX body: ``Clip`` with the bounds cast to the input type (AP_RND_CONV / AP_SAT)."""
        lo, hi = self.bounds(ctx.xt)
        loi = ctx.b.init(f"{ctx.name}.lo", np.array(lo, np.float64))
        hii = ctx.b.init(f"{ctx.name}.hi", np.array(hi, np.float64))
        return ctx.node("Clip", [ctx.x, loi, hii], "out"), ctx.xt


class Add(QFXModule):
    """Residual addition ``cast(a + b, out_type)``; a and b may have different types."""

    def __init__(self, output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", *, learnable: bool = True):
        super().__init__()
        self.output_quantizer = Quantizer(output_type, learnable=learnable, name="output")

    def forward(self, a, b):
        if self._float_path():
            if self.training and not self._calibrating():
                # the sum and its cast in one pass, the sum never in memory (same values and gradients)
                y = self.output_quantizer.train_add_cast(a, b, relu=self.fuse_relu)
                if y is not None:
                    return relu_applied(y) if self.fuse_relu else y
                if self.fuse_relu:
                    return relu_applied(self.output_quantizer.train_cast_relu(a + b))
            return self.output_quantizer(a + b)
        a, b = a.to(torch.float64), b.to(torch.float64)
        guard(self, [a, b], lambda g: (g[0][1] + g[1][1], max(g[0][0], g[1][0])), "sum")
        return self.output_quantizer(a + b)

    def onnx_export(self, ctx):
        """ONNX body: exact ``Add`` then ``FixedPoint`` to the output type."""
        if len(ctx.inputs) != 2:
            raise ctx.error("Add takes two tensors")
        return ctx.cast_out(ctx.node("Add", ctx.inputs, "acc"))


class Flatten(QFXModule):
    """``(N, C, H, W) -> (N, C*H*W)``, no arithmetic."""

    def forward(self, x):
        if not self._float_path():
            x = x.to(torch.float64)
        return torch.flatten(x, 1)

    def output_type(self, input_types):
        return input_types[0]

    def onnx_export(self, ctx):
        """ONNX body: ``Flatten(axis=1)``."""
        return ctx.node("Flatten", [ctx.x], "out", axis=1), ctx.xt
