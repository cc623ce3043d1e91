"""QFX pooling. MaxPool2d: max over the window, no cast. AvgPool2d / AdaptiveAvgPool2d(1):
``cast(S * r, out_type)`` with ``S`` the exact sum of the ``N`` window elements and
``r = cast(1/N, ap_ufixed<R, 1-p, AP_RND_CONV, AP_SAT>)``, ``p = floor(log2 N)``,
``R = recip_bits`` (default 16); exact in eval (float64, guarded). ``padding``: max pooling pads
with -inf (padding never wins), average pooling with zeros and ``N = kh*kw`` (``count_include_pad``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import fused
from ..quantizer import Quantizer
from ...fixed.types import reciprocal_raw
from ._base import QFXModule, guard
from .linear import _pair


def _check_recip_bits(r):
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 32:
        raise ValueError(f"recip_bits must be an int in 1..32, got {r!r}")
    return r


class MaxPool2d(QFXModule):
    """Max over each window (padding never wins), no cast; output type = input type."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride if stride is not None else kernel_size, "stride")
        self.padding = _pair(padding, "padding")

    def forward(self, x):
        if not self._float_path():
            y = fused.max_pool2d(x, self.kernel_size, self.stride, self.padding)  # CPU kernel, same values
            if y is not None:
                return y
            x = x.to(torch.float64)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def output_type(self, input_types):
        return input_types[0]

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def onnx_export(self, ctx):
        """ONNX body: standard ``MaxPool``, no cast."""
        (ph, pw) = self.padding
        return ctx.node("MaxPool", [ctx.x], "out", kernel_shape=list(self.kernel_size),
                        strides=list(self.stride), pads=[ph, pw, ph, pw]), ctx.xt


class _Avg(QFXModule):
    def _mean(self, x, summed, n):
        r_raw, rt = reciprocal_raw(n, self.recip_bits)
        r = r_raw * 2.0 ** -rt.frac_bits
        if self._float_path():
            return self.output_quantizer(summed(x) * r)
        x = x.to(torch.float64)
        guard(self, [x], lambda g: (g[0][1] * n, g[0][0]), "window sum")
        s = summed(x)
        guard(self, [x], lambda g: (g[0][1] * n * r, g[0][0] + rt.frac_bits), "product S * r")
        return self.output_quantizer(s * r)


class AvgPool2d(_Avg):
    """``cast(S * r, out_type)`` over ``kernel_size`` windows with ``stride`` (zero ``padding``, counted in
    N); see module doc."""

    def __init__(self, kernel_size, stride=None, padding=0, *, output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>",
                 recip_bits: int = 16, learnable: bool = True):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride if stride is not None else kernel_size, "stride")
        self.padding = _pair(padding, "padding")
        self.recip_bits = _check_recip_bits(recip_bits)
        self.output_quantizer = Quantizer(output_type, learnable=learnable, name="output")

    def forward(self, x):
        n = self.kernel_size[0] * self.kernel_size[1]
        return self._mean(x, lambda v: F.avg_pool2d(v, self.kernel_size, self.stride, self.padding,
                                                    divisor_override=1), n)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, recip_bits={self.recip_bits}"

    def onnx_export(self, ctx):
        """ONNX body: ``qfx.AveragePool`` (exact window sum times ``r``), then the cast."""
        from .. import onnx_ops
        overload = ctx.overload("pool")
        (ph, pw) = self.padding
        ctx.b.custom_function(onnx_ops.avgpool_function(overload, ctx.in_shapes[0], self.kernel_size,
                                                        self.stride, self.recip_bits, (ph, pw, ph, pw)))
        acc = ctx.node("AveragePool", [ctx.x], "acc", domain=onnx_ops.DOMAIN, overload=overload,
                       kernel_shape=list(self.kernel_size), strides=list(self.stride), pads=[ph, pw, ph, pw],
                       recip_bits=self.recip_bits)
        return ctx.cast_out(acc)


class AdaptiveAvgPool2d(_Avg):
    """Global average pooling (output size 1): ``cast(S * r, out_type)``, ``N = H*W``; output (N, C, 1, 1)."""

    def __init__(self, output_size=1, *, output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", recip_bits: int = 16,
                 learnable: bool = True):
        super().__init__()
        if _pair(output_size, "output_size") != (1, 1):
            raise ValueError(f"AdaptiveAvgPool2d supports output_size 1 only, got {output_size}")
        self.output_size = 1
        self.kernel_size = None  # the whole input plane
        self.stride = None
        self.recip_bits = _check_recip_bits(recip_bits)
        self.output_quantizer = Quantizer(output_type, learnable=learnable, name="output")

    def forward(self, x):
        n = x.shape[-1] * x.shape[-2]
        return self._mean(x, lambda v: v.sum((2, 3), keepdim=True), n)

    def extra_repr(self):
        return f"output_size=1, recip_bits={self.recip_bits}"

    def onnx_export(self, ctx):
        """ONNX body: ``qfx.GlobalAveragePool`` (exact sum times ``r``), then the cast."""
        from .. import onnx_ops
        overload = ctx.overload("pool")
        ctx.b.custom_function(onnx_ops.global_avgpool_function(overload, ctx.in_shapes[0], self.recip_bits))
        acc = ctx.node("GlobalAveragePool", [ctx.x], "acc", domain=onnx_ops.DOMAIN, overload=overload,
                       recip_bits=self.recip_bits)
        return ctx.cast_out(acc)
