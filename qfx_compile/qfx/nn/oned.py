"""QFX 1-D layers: ``Conv1d``, ``MaxPool1d``, ``AvgPool1d``, ``AdaptiveAvgPool1d(1)``, ``BatchNorm1d`` on (N, C, L).

Each is its 2-D twin on the map (N, C, 1, L) (kernel (1, k), stride (1, s), padding (0, p)), so
training, eval-mode exactness and the semantics are those of docs/semantics.md for the 2-D layer
(the compiler represents a 1-D map as (C, 1, L) too). The weight is held as (O, C/G, 1, K); the
ONNX file keeps 1-D shapes (weight (O, C/G, K), tensors (N, C, L), 1-D kernel attributes).
"""
from __future__ import annotations

import numpy as np

from .linear import Conv2d
from .norm import BatchNorm2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d


def _one(v, name) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ValueError(f"{name} of a 1-D layer must be an int or a 1-tuple, got {v!r}")
        v = v[0]
    return int(v)


def _check_3d(layer, x):
    if x.dim() != 3:
        raise ValueError(f"{layer.layer_name}: expects an (N, C, L) input, got shape {tuple(x.shape)}")


class Conv1d(Conv2d):
    """``y = cast(conv1d(x, w) + b, out_type)`` (groups, zero padding): :class:`Conv2d` on (N, C, 1, L)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 **kw):
        super().__init__(in_channels, out_channels, (1, _one(kernel_size, "kernel_size")),
                         (1, _one(stride, "stride")), (0, _one(padding, "padding")), bias, **kw)

    def forward(self, x):
        _check_3d(self, x)
        return super().forward(x.unsqueeze(2)).squeeze(2)

    def onnx_export(self, ctx):
        """ONNX body: a 1-D ``qfx.Conv`` (weight (O, C/G, K)), then the cast."""
        from .. import onnx_ops
        if len(ctx.in_shapes[0]) != 2:
            raise ctx.error(f"expects a (N, C, L) input, got shape {ctx.in_shapes[0]}")
        c, length = ctx.in_shapes[0]
        o, cg, _, k = self.weight.shape
        inputs = ctx.weighted_inputs(self, (-1, 1, 1), weight_view=(o, cg, k))
        s, p = self.stride[1], self.padding[1]
        overload = ctx.overload("conv")
        ctx.b.custom_function(onnx_ops.conv_function(overload, (c, 1, length), o, (1, k), (1, s), (0, p, 0, p),
                                                     group=self.groups, has_bias=len(inputs) == 3, one_d=True))
        acc = ctx.node("Conv", inputs, "acc", domain=onnx_ops.DOMAIN, overload=overload, kernel_shape=[k],
                       strides=[s], pads=[p, p], dilations=[1], group=self.groups)
        return ctx.cast_out(acc)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size[1]}, "
                f"stride={self.stride[1]}, padding={self.padding[1]}, bias={self.bias is not None}" +
                (f", groups={self.groups}" if self.groups != 1 else ""))


class MaxPool1d(MaxPool2d):
    """Max over each window of (N, C, L) (padding never wins), no cast: :class:`MaxPool2d` on (N, C, 1, L)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        k = _one(kernel_size, "kernel_size")
        super().__init__((1, k), (1, _one(stride if stride is not None else k, "stride")),
                         (0, _one(padding, "padding")))

    def forward(self, x):
        _check_3d(self, x)
        return super().forward(x.unsqueeze(2)).squeeze(2)

    def onnx_export(self, ctx):
        """ONNX body: standard 1-D ``MaxPool``, no cast."""
        p = self.padding[1]
        return ctx.node("MaxPool", [ctx.x], "out", kernel_shape=[self.kernel_size[1]], strides=[self.stride[1]],
                        pads=[p, p]), ctx.xt


class AvgPool1d(AvgPool2d):
    """``cast(S * r, out_type)`` over windows of (N, C, L): :class:`AvgPool2d` on (N, C, 1, L)."""

    def __init__(self, kernel_size, stride=None, padding=0, **kw):
        k = _one(kernel_size, "kernel_size")
        super().__init__((1, k), (1, _one(stride if stride is not None else k, "stride")),
                         (0, _one(padding, "padding")), **kw)

    def forward(self, x):
        _check_3d(self, x)
        return super().forward(x.unsqueeze(2)).squeeze(2)

    def onnx_export(self, ctx):
        """ONNX body: a 1-D ``qfx.AveragePool`` (exact window sum times ``r``), then the cast."""
        from .. import onnx_ops
        c, length = ctx.in_shapes[0]
        k, s, p = self.kernel_size[1], self.stride[1], self.padding[1]
        overload = ctx.overload("pool")
        ctx.b.custom_function(onnx_ops.avgpool_function(overload, (c, 1, length), (1, k), (1, s), self.recip_bits,
                                                        (0, p, 0, p), one_d=True))
        acc = ctx.node("AveragePool", [ctx.x], "acc", domain=onnx_ops.DOMAIN, overload=overload,
                       kernel_shape=[k], strides=[s], pads=[p, p], recip_bits=self.recip_bits)
        return ctx.cast_out(acc)


class AdaptiveAvgPool1d(AdaptiveAvgPool2d):
    """Global average over L: (N, C, L) -> (N, C, 1); :class:`AdaptiveAvgPool2d` on (N, C, 1, L)."""

    def forward(self, x):
        _check_3d(self, x)
        return super().forward(x.unsqueeze(2)).squeeze(2)

    def onnx_export(self, ctx):
        """ONNX body: a 1-D ``qfx.GlobalAveragePool``, then the cast."""
        from .. import onnx_ops
        c, length = ctx.in_shapes[0]
        overload = ctx.overload("pool")
        ctx.b.custom_function(onnx_ops.global_avgpool_function(overload, (c, 1, length), self.recip_bits,
                                                               one_d=True))
        acc = ctx.node("GlobalAveragePool", [ctx.x], "acc", domain=onnx_ops.DOMAIN, overload=overload,
                       recip_bits=self.recip_bits)
        return ctx.cast_out(acc)


class BatchNorm1d(BatchNorm2d):
    """``cast(x * a_c + b_c, out_type)`` on (N, C, L) or (N, C): :class:`BatchNorm2d` on (N, C, 1, L) / (N, C, 1, 1)."""

    def forward(self, x):
        if x.dim() == 3:
            return self._relu_mark(super().forward(x.unsqueeze(2)).squeeze(2))
        if x.dim() == 2:
            return self._relu_mark(super().forward(x[:, :, None, None]).flatten(1))
        raise ValueError(f"{self.layer_name}: expects an (N, C, L) or (N, C) input, got shape {tuple(x.shape)}")

    def onnx_export(self, ctx):
        """ONNX body: on (N, C) the per-channel ``Mul``/``Add`` with (C,) constants; on (N, C, L) the 2-D body
        between ``Unsqueeze``/``Squeeze`` of axis 2 (the compiler's (C, 1, L))."""
        from ..export import ExportContext
        shp = ctx.in_shapes[0]
        if len(shp) == 1:
            return self._onnx_affine(ctx, (-1,))
        if len(shp) != 2:
            raise ctx.error(f"expects an (N, C, L) or (N, C) input, got shape {shp}")
        c, length = shp
        ax = ctx.b.init(f"{ctx.name}.axes", np.array([2], np.int64))
        x4 = ctx.node("Unsqueeze", [ctx.x, ax], "x4", shape=["N", c, 1, length])
        sub = ExportContext(ctx.b, self, ctx.name, [x4], list(ctx.types), [[c, 1, length]], ["N", c, 1, length])
        y4, t = BatchNorm2d.onnx_export(self, sub)
        return ctx.node("Squeeze", [y4, ax], "out"), t


__all__ = ["Conv1d", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d", "BatchNorm1d"]
