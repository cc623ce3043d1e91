"""QFX structural layers: no arithmetic, exact in every mode.

``Concat(dim=1)``: ``torch.cat`` on the channel axis; the output type is the common type of the
inputs (:func:`...fixed.types.common_type`, the input type itself when they agree), which holds
every input exactly: nothing is rounded. ``ZeroPad2d(padding)``: zeros around the map (PyTorch's
``(left, right, top, bottom)`` order); ``Upsample(scale_factor)``: nearest-neighbour by integer
factors. Both keep the input type. Their ONNX bodies are standard ``Concat`` / ``Pad`` and the
model-local function ``qfx.Upsample`` (two ``Gather``s); the compiler's ops are ``concat``, ``pad``,
``upsample`` (docs/semantics.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...fixed.types import common_type
from ...fixed.window import pads_to_onnx
from ._base import QFXModule


def _to_eval(layer: QFXModule, x: torch.Tensor) -> torch.Tensor:
    return x if layer._float_path() else x.to(torch.float64)


def _check_4d(layer: QFXModule, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{layer.layer_name}: expects an (N, C, H, W) map, got shape {tuple(x.shape)} (1-D "
                         f"padding and upsampling are not supported)")


class Concat(QFXModule):
    """``torch.cat(xs, dim=1)``: channel concatenation, no cast (output type: the inputs' common type)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        if dim != 1:
            raise ValueError(f"Concat supports the channel axis (dim=1) only, got dim={dim}")
        self.dim = 1

    def forward(self, *xs):
        if len(xs) == 1 and isinstance(xs[0], (list, tuple)):
            xs = tuple(xs[0])
        return torch.cat([_to_eval(self, x) for x in xs], dim=1)

    def output_type(self, input_types):
        if not input_types or any(t is None for t in input_types):
            raise ValueError(f"{self.layer_name}: output_type needs every input type")
        return input_types[0] if all(t == input_types[0] for t in input_types) else common_type(input_types)

    def onnx_export(self, ctx):
        """ONNX body: standard ``Concat(axis=1)`` (exact); the output type is the inputs' common type."""
        if len(ctx.inputs) < 1:
            raise ctx.error("Concat needs at least one tensor")
        return ctx.node("Concat", list(ctx.inputs), "out", axis=1), self.output_type(list(ctx.types))

    def extra_repr(self):
        return "dim=1"


def _pad4(padding) -> tuple[int, int, int, int]:
    """PyTorch's ZeroPad2d padding: an int or (left, right, top, bottom)."""
    p = (padding,) * 4 if isinstance(padding, int) else tuple(int(v) for v in padding)
    if len(p) != 4 or any(v < 0 for v in p):
        raise ValueError(f"padding must be an int or (left, right, top, bottom) >= 0, got {padding!r}")
    return p


class ZeroPad2d(QFXModule):
    """Zeros around an (N, C, H, W) map, no cast; ``padding``: an int or (left, right, top, bottom)."""

    def __init__(self, padding):
        super().__init__()
        self.padding = _pad4(padding)

    def forward(self, x):
        _check_4d(self, x)
        return F.pad(_to_eval(self, x), self.padding)

    def onnx_export(self, ctx):
        """ONNX body: standard ``Pad`` (constant 0) of H and W."""
        from onnx import TensorProto
        left, right, top, bottom = self.padding
        pads = np.array(pads_to_onnx(((0, 0), (0, 0), (top, bottom), (left, right))), dtype=np.int64)
        pi = ctx.b.init(f"{ctx.name}.pads", pads)
        ctx.b.shapes[pi] = ([8], TensorProto.INT64)
        return ctx.node("Pad", [ctx.x, pi], "out", mode="constant"), ctx.xt

    def extra_repr(self):
        return f"padding={self.padding}"


class Upsample(QFXModule):
    """Nearest-neighbour upsampling of an (N, C, H, W) map by integer ``scale_factor`` (one, or (sh, sw))."""

    def __init__(self, scale_factor=2):
        super().__init__()
        s = (scale_factor,) * 2 if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
        if len(s) != 2 or any(float(v) != int(v) or int(v) < 1 for v in s):
            raise ValueError(f"Upsample supports integer scale factors >= 1, got {scale_factor!r}")
        self.scale_factor = (int(s[0]), int(s[1]))

    def forward(self, x):
        _check_4d(self, x)
        x = _to_eval(self, x)
        sh, sw = self.scale_factor
        return x.repeat_interleave(sh, dim=2).repeat_interleave(sw, dim=3)

    def onnx_export(self, ctx):
        """ONNX body: ``qfx.Upsample`` (two ``Gather``s with constant index tables, no arithmetic)."""
        from .. import onnx_ops
        if len(ctx.in_shapes[0]) != 3:
            raise ctx.error(f"expects a (N, C, H, W) input, got shape {ctx.in_shapes[0]}")
        overload = ctx.overload("up")
        ctx.b.custom_function(onnx_ops.upsample_function(overload, ctx.in_shapes[0], self.scale_factor))
        return ctx.node("Upsample", [ctx.x], "out", domain=onnx_ops.DOMAIN, overload=overload,
                        scales=list(self.scale_factor)), ctx.xt

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}, mode='nearest'"


# ------------------------------------------------------------------ functional forms
def _functions() -> dict:
    from torch import nn
    pool = ("kernel_size", "stride", "padding")
    table = {
        F.max_pool2d: (nn.MaxPool2d, pool + ("dilation", "ceil_mode", "return_indices")),
        F.avg_pool2d: (nn.AvgPool2d, pool + ("ceil_mode", "count_include_pad", "divisor_override")),
        F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ("output_size",)),
        F.pad: ("pad", ("pad", "mode", "value")),
        F.interpolate: (nn.Upsample, ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                                      "antialias")),
        F.max_pool1d: (nn.MaxPool1d, pool + ("dilation", "ceil_mode", "return_indices")),
        F.avg_pool1d: (nn.AvgPool1d, pool + ("ceil_mode", "count_include_pad")),
        F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, ("output_size",)),
        F.relu6: (nn.ReLU6, ("inplace",)),
        F.dropout: (nn.Dropout, ("p", "training", "inplace")),
        F.hardtanh: (nn.Hardtanh, ("min_val", "max_val", "inplace")),
    }
    for alias, src in ((getattr(torch, "max_pool2d", None), F.max_pool2d),
                       (getattr(torch, "avg_pool2d", None), F.avg_pool2d),
                       (getattr(torch, "max_pool1d", None), F.max_pool1d),
                       (getattr(torch, "avg_pool1d", None), F.avg_pool1d),
                       (getattr(torch, "adaptive_avg_pool1d", None), F.adaptive_avg_pool1d)):
        if alias is not None and alias not in table:
            table[alias] = table[src]
    return table


_FUNCTIONS: dict | None = None


def function_module(t, args, kwargs):
    """The torch module that the functional call ``t(x, *args[1:], **kwargs)`` computes (``F.max_pool2d``
    -> ``nn.MaxPool2d``, ``F.pad`` -> ``nn.ZeroPad2d``, ``F.interpolate`` -> ``nn.Upsample``, ...), for
    ``quantize_model`` to convert like the module; None if ``t`` is not one of these functions.
    Raises ValueError for a form that has no module twin (e.g. a non-constant pad)."""
    global _FUNCTIONS
    from torch import fx, nn
    if _FUNCTIONS is None:
        _FUNCTIONS = _functions()
    try:
        spec = _FUNCTIONS.get(t)
    except TypeError:  # an unhashable target
        return None
    if spec is None:
        return None
    cls, names = spec
    if len(args) - 1 > len(names) or set(kwargs) - set(names):
        raise ValueError(f"unexpected arguments {list(args[1:])} {dict(kwargs)}")
    kw = dict(zip(names, args[1:]))
    kw.update(kwargs)
    if any(isinstance(v, fx.Node) for v in kw.values()):
        raise ValueError("a size or padding computed in forward; give it as a constant")
    kw.pop("inplace", None)
    if cls is nn.Dropout:
        kw.pop("training", None)  # removed like nn.Dropout: the exact model is the eval model
    if cls == "pad":
        pad, mode, value = kw.get("pad"), kw.get("mode", "constant"), kw.get("value", None)
        if mode != "constant" or value not in (None, 0, 0.0) or pad is None or len(pad) != 4:
            raise ValueError(f"only zero padding of H and W (F.pad(x, (left, right, top, bottom))) is supported, "
                             f"got pad={pad}, mode={mode!r}, value={value!r}")
        return nn.ZeroPad2d(tuple(int(v) for v in pad))
    if cls is nn.Upsample:
        for k in ("recompute_scale_factor", "antialias"):
            if kw.pop(k, None):
                raise ValueError(f"{k} is not supported")
    return cls(**kw)


def batch_flatten_source(node):
    """``x`` when ``node`` is ``x.view(x.size(0), -1)`` / ``x.reshape(x.shape[0], -1)`` / ``torch.reshape(x,
    (x.size(0), -1))`` (a flatten of everything after the batch axis), else None."""
    import operator
    from torch import fx
    t, args = node.target, list(node.args)
    if node.kwargs or not args or not isinstance(args[0], fx.Node):
        return None
    x, rest = args[0], args[1:]
    if t not in ("view", "reshape", torch.reshape):
        return None
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        rest = list(rest[0])
    if len(rest) != 2 or rest[1] != -1 or not isinstance(rest[0], fx.Node):
        return None
    n0 = rest[0]
    if n0.op == "call_method" and n0.target == "size" and list(n0.args) in ([x, 0],) and not n0.kwargs:
        return x
    if n0.op == "call_function" and n0.target is operator.getitem and len(n0.args) == 2 and n0.args[1] == 0:
        src = n0.args[0]
        if isinstance(src, fx.Node) and src.op == "call_function" and src.target is getattr and \
                list(src.args) == [x, "shape"]:
            return x
    return None
