"""QFX Linear and Conv2d: exact sum of products plus bias, one cast to the output type.

Eval: ``w = cast(w_float, weight_type)`` per output channel (or its K-hot
projection), ``b = cast(b_float, bias_type)`` (0 without bias),
``y = cast(sum x*w + b, out_type)``; the sum is exact (float64, guarded).
Training: the same casts in float32 with straight-through gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quantizer import Quantizer
from ._base import QFXModule, amax, check_exact, frac_bits_of


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v}")
    return v


class _Weighted(QFXModule):
    def _make_quantizers(self, out_ch, weight_type, bias_type, output_type, bias, per_channel, k_hot, digits,
                         learnable):
        self.weight_quantizer = Quantizer(weight_type, channels=out_ch if per_channel else None, axis=0,
                                          k_hot=k_hot, digits=digits, learnable=learnable, name="weight")
        if not self.weight_quantizer.base_type.signed:
            raise ValueError("weight type must be signed (ap_fixed): weights take both signs")
        self.bias_quantizer = Quantizer(bias_type, channels=out_ch if per_channel else None, axis=0,
                                        learnable=learnable, name="bias") if bias else None
        self.output_quantizer = Quantizer(output_type, learnable=learnable, name="output")

    def quantized_weight(self) -> torch.Tensor:
        """The weights on their grid (K-hot projected), float64, as eval mode uses them."""
        with torch.no_grad():
            return self.weight_quantizer.apply_eval(self.weight.detach().double())

    def quantized_bias(self) -> torch.Tensor | None:
        """The bias on its grid, float64 (None without bias)."""
        if self.bias is None:
            return None
        with torch.no_grad():
            return self.bias_quantizer.apply_eval(self.bias.detach().double())

    def init_quantizers_from_weights(self) -> None:
        """Set the weight / bias binary points to cover the current values (skips frozen ones)."""
        self.weight_quantizer.calibrate(self.weight)
        if self.bias is not None:
            self.bias_quantizer.calibrate(self.bias)

    def _params(self):
        if self._float_path():
            w = self.weight_quantizer(self.weight)
            b = self.bias_quantizer(self.bias) if self.bias is not None else None
        else:
            w, b = self.quantized_weight(), self.quantized_bias()
        return w, b

    def _check(self, x, w, b):
        fx = frac_bits_of(x)
        fw = frac_bits_of(w)
        frac = fx + fw
        if b is not None:
            frac = max(frac, frac_bits_of(b))
        per_out = w.detach().abs().reshape(w.shape[0], -1).sum(1).max() if w.numel() else 0.0
        check_exact(self, amax(x) * float(per_out) + amax(b), frac)


class Linear(_Weighted):
    """``y = cast(x @ w.T + b, out_type)`` (see module doc)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 weight_type="ap_fixed<8,1,AP_RND_CONV,AP_SAT>", bias_type="ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
                 output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", per_channel: bool = True, k_hot=None,
                 digits=None, learnable: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        ref = nn.Linear(in_features, out_features, bias)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if bias else None
        self._make_quantizers(out_features, weight_type, bias_type, output_type, bias, per_channel, k_hot,
                              digits, learnable)

    def forward(self, x):
        w, b = self._params()
        if self._float_path():
            return self.output_quantizer(F.linear(x, w, b))
        x = x.to(torch.float64)
        self._check(x, w, b)
        return self.output_quantizer(F.linear(x, w, b))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def onnx_export(self, ctx):
        """ONNX body: ``Gemm`` of the FixedPoint weight and bias (exact), then the output cast."""
        return ctx.cast_out(ctx.node("Gemm", ctx.weighted_inputs(self, (-1, 1)), "acc", transB=1))


class Conv2d(_Weighted):
    """``y = cast(conv2d(x, w) + b, out_type)``; groups 1, dilation 1, zero padding (see module doc)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 *, weight_type="ap_fixed<8,1,AP_RND_CONV,AP_SAT>", bias_type="ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
                 output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", per_channel: bool = True, k_hot=None, digits=None,
                 learnable: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation, self.groups = (1, 1), 1
        ref = nn.Conv2d(in_channels, out_channels, self.kernel_size, self.stride, self.padding, bias=bias)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if bias else None
        self._make_quantizers(out_channels, weight_type, bias_type, output_type, bias, per_channel, k_hot,
                              digits, learnable)

    def forward(self, x):
        w, b = self._params()
        if self._float_path():
            return self.output_quantizer(F.conv2d(x, w, b, self.stride, self.padding))
        x = x.to(torch.float64)
        self._check(x, w, b)
        if x.device.type == "cpu":
            y = F.conv2d(x, w, b, self.stride, self.padding)
        else:  # im2col + matmul: no FFT / Winograd algorithm on accelerators
            n, _, h, wd = x.shape
            cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
            y = (w.reshape(w.shape[0], -1) @ cols)
            oh = (h + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
            ow = (wd + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
            y = y.reshape(n, w.shape[0], oh, ow)
            if b is not None:
                y = y + b.reshape(1, -1, 1, 1)
        return self.output_quantizer(y)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")

    def onnx_export(self, ctx):
        """ONNX body: ``qfx.Conv`` (exact im2col + MatMul, :func:`..onnx_ops.conv_function`), then the cast."""
        from .. import onnx_ops
        if tuple(self.dilation) != (1, 1) or int(self.groups) != 1:
            raise ctx.error("only dilation 1 and groups 1 are supported")
        if len(ctx.in_shapes[0]) != 3:
            raise ctx.error(f"expects a (N, C, H, W) input, got shape {ctx.in_shapes[0]}")
        inputs = ctx.weighted_inputs(self, (-1, 1, 1, 1))
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        overload = ctx.overload("conv")
        ctx.b.custom_function(onnx_ops.conv_function(overload, ctx.in_shapes[0], self.out_channels, (kh, kw),
                                                     (sh, sw), (ph, pw, ph, pw), has_bias=len(inputs) == 3))
        acc = ctx.node("Conv", inputs, "acc", domain=onnx_ops.DOMAIN, overload=overload, kernel_shape=[kh, kw],
                       strides=[sh, sw], pads=[ph, pw, ph, pw], dilations=[1, 1], group=1)
        return ctx.cast_out(acc)
