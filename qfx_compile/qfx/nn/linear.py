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

from ...fixed.window import out_shape, symmetric_pads
from .. import fused
from ..quantize import train_cast_backward, train_cast_forward
from ..quantizer import Quantizer, pc_fq_backward, pc_fq_forward
from ._base import (QFXModule, TensorsKey, amax, frac_bits_of, guard, input_grids, mark_cast_of, mark_grid_sums,
                    quantizer_state)


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v}")
    return v


def _ieee_f32() -> bool:
    """float32 convolutions and matmuls on CPU round every operation in IEEE single precision."""
    mk = torch.backends.mkldnn
    precs = [getattr(getattr(mk, k, None), "fp32_precision", "none") for k in ("conv", "matmul")]
    return all(p in ("none", "ieee") for p in precs) and torch.get_float32_matmul_precision() == "highest"


class _ConvCast(torch.autograd.Function):
    """A convolution's training forward as one autograd node on the fused kernels: the per-channel casts of the
    weights and the bias (:func:`..quantizer.pc_fq_forward`; ``bias`` None: none), ``y = conv2d(x, w, b)`` and
    the output cast ``q = cast(y, t)``, with ``sums`` (a list) also its per-channel mantissa sums
    (:func:`..quantize.train_cast_forward`).

    Outputs ``(q, y)``. A BatchNorm fed by q (``Conv2d.fuse_cast_into_bn``) runs the cast's backward in its own
    pass and sends ``dL/dy``; it also empties ``keep`` (``_base.release_cast``), where this node holds y and q
    for the cast's backward, so that they are freed with the BatchNorm's node (held to this node's backward, they
    doubled the step's fresh memory). ``dL/dq`` from any other use goes through the cast's backward here
    (:func:`..quantize.train_cast_backward`), on y and q recomputed where they were released or changed in place.
    Then torch's ``convolution_backward`` (what the convolution's own autograd node calls) and the parameter
    casts' backward (:func:`..quantizer.pc_fq_backward`). Values and gradients are those of the separate nodes
    (parameter casts, convolution, output cast), bit for bit. torch allocates the convolution's outputs without
    deterministic mode's NaN fill (:func:`..fused.unfilled`: it writes them in full); that fill and the early
    release are what the node saves (README, round (7)), not the node count."""

    @staticmethod
    def forward(ctx, x, weight, th_w, bias, th_b, th_out, geom, wq, bq, t, lo, hi, sums):
        w, ctx.w_saved = pc_fq_forward(weight, th_w, *wq)
        b, ctx.b_saved = pc_fq_forward(bias, th_b, *bq) if bias is not None else (None, None)
        y = fused.unfilled(torch.conv2d, x, w, b, geom[0], geom[1], 1, geom[2])
        q, s = train_cast_forward(y, t, with_sums=sums is not None)
        if sums is not None:
            sums.append(s)
        ctx.save_for_backward(x, w)
        y_, q_ = y.detach(), q.detach()  # detached: no reference cycle through the outputs' grad_fn
        ctx.keep = [y_, q_, y_._version, q_._version]
        ctx.meta = (geom, b, t, lo, hi)
        ctx.set_materialize_grads(False)
        return q, y

    @staticmethod
    def backward(ctx, gq, gy):
        x, w = ctx.saved_tensors
        (stride, padding, groups), b, t, lo, hi = ctx.meta
        need = ctx.needs_input_grad
        g, g_out = gy, None
        if gq is not None:
            keep = ctx.keep
            if keep and keep[0]._version == keep[2] and keep[1]._version == keep[3]:
                y, q = keep[0], keep[1]
            else:
                y = torch.conv2d(x, w, b, stride, padding, 1, groups)
                q = train_cast_forward(y, t)[0]
            gc, g_out = train_cast_backward(gq, y, q, lo, hi, t.int_bits, bool(need[5]), False)
            g = gc if g is None else g + gc
        grads = [None] * 13
        if g is not None:
            need_w, need_b = bool(need[1] or need[2]), bool(need[3] or need[4])
            gx, gw, gb = fused.unfilled(torch.ops.aten.convolution_backward, g, x, w,
                                        None if b is None else list(b.shape), stride, padding, (1, 1), False,
                                        (0, 0), groups, [bool(need[0]), need_w, need_b])
            grads[0] = gx
            if need_w:
                grads[1:3] = pc_fq_backward(gw, ctx.w_saved, bool(need[1]), bool(need[2]))
            if need_b:
                grads[3:5] = pc_fq_backward(gb, ctx.b_saved, bool(need[3]), bool(need[4]))
        grads[5] = g_out
        return tuple(grads)


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

    def _eval_params(self):
        """``(w, b, F_w+b, max row sum |w|, max |b|)`` for eval, cached until a parameter, an integer-bit
        parameter or a quantizer setting changes (in place or replaced)."""
        tw, vw = quantizer_state(self.weight_quantizer)
        tb, vb = quantizer_state(self.bias_quantizer)
        tensors, values = [self.weight, self.bias] + tw + tb, vw + vb
        c = getattr(self, "_eval_cache", None)
        if c is None or not c[0].matches(tensors, values):
            w, b = self.quantized_weight(), self.quantized_bias()
            self._f32_cache = None
            per_out = float(w.abs().reshape(w.shape[0], -1).sum(1).max()) if w.numel() else 0.0
            fb = frac_bits_of(b) if b is not None else None
            c = (TensorsKey(tensors, values), (w, b, frac_bits_of(w), fb, per_out, amax(b)))
            self._eval_cache = c
        return c[1]

    def _f32_operands(self, x):
        """``(x, w, b)`` in float32 when the float32 sum of products is provably exact for ``x``, else None.

        Exact when x, w and b are float32 numbers and every partial sum is a multiple of
        ``2**-F`` (F = the finest operand grid) below ``2**24`` lsbs in magnitude: then every
        addition (or fused multiply-add) of a direct or im2col/GEMM convolution is exact,
        whatever the order. x's grid and range come from its static type (its width at most
        24 bits); the magnitude bound from the type, else from the data (one pass). Only on
        CPU with IEEE float32 arithmetic in oneDNN and matmul (no TF32 / bfloat16 shortcut).
        """
        if x.device.type != "cpu" or not _ieee_f32():
            return None
        grid = input_grids(self, [x])[0]
        t = (getattr(self, "static_input_types", None) or [None])[0]
        if grid is None or t is None or t.width > 24 or abs(grid[0]) > 100:
            return None
        c = self._eval_params()
        f32 = getattr(self, "_f32_cache", None)
        if f32 is None or f32[0] is not c:
            w, b = c[0], c[1]
            w32 = w.float() if torch.equal(w.float().double(), w) else None
            b32 = None if b is None else (b.float() if torch.equal(b.float().double(), b) else False)
            f32 = (c, w32, b32)
            self._f32_cache = f32
        _, w32, b32 = f32
        if w32 is None or b32 is False:
            return None
        _, _, fw, fb, per_out, ab = c
        frac = grid[0] + fw if fb is None else max(grid[0] + fw, fb)
        lim = 2.0 ** (24 - frac)
        if not grid[1] * per_out + ab < lim:
            lo, hi = torch.aminmax(x)
            if not max(-float(lo), float(hi)) * per_out + ab < lim:
                return None
        return x.float(), w32, b32

    def _cast_f32_out(self, y32):
        """The output cast of an exact float32 sum (the float32 cast is exact up to 24 bits), as float64."""
        if self.output_quantizer.width <= 24 and abs(self.output_quantizer.fixed_type().frac_bits) <= 100:
            return self.output_quantizer(y32, out_dtype=torch.float64)  # cast and widening in one pass
        return self.output_quantizer(y32.double())

    def _params(self):
        if self._float_path():
            w = self.weight_quantizer(self.weight)
            b = self.bias_quantizer(self.bias) if self.bias is not None else None
        else:
            w, b = self._eval_params()[:2]
        return w, b

    def _check(self, x, w, b):
        _, _, fw, fb, per_out, ab = self._eval_params()

        def rule(grids):
            (fx, ax), = grids
            frac = fx + fw if fb is None else max(fx + fw, fb)
            return ax * per_out + ab, frac
        guard(self, [x], rule)


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
        ops = self._f32_operands(x)
        if ops is not None:
            return self._cast_f32_out(F.linear(*ops))
        x = x.to(torch.float64)
        self._check(x, w, b)
        return self.output_quantizer(F.linear(x, w, b))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def onnx_export(self, ctx):
        """ONNX body: ``Gemm`` of the FixedPoint weight and bias (exact), then the output cast."""
        return ctx.cast_out(ctx.node("Gemm", ctx.weighted_inputs(self, (-1, 1)), "acc", transB=1))


class Conv2d(_Weighted):
    """``y = cast(conv2d(x, w) + b, out_type)``; dilation 1, zero padding, ``groups`` (depthwise: groups =
    in_channels), see module doc."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 *, weight_type="ap_fixed<8,1,AP_RND_CONV,AP_SAT>", bias_type="ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
                 output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", per_channel: bool = True, k_hot=None, digits=None,
                 learnable: bool = True, groups: int = 1):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation, self.groups = (1, 1), int(groups)
        ref = nn.Conv2d(in_channels, out_channels, self.kernel_size, self.stride, self.padding, bias=bias,
                        groups=self.groups)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if bias else None
        self._make_quantizers(out_channels, weight_type, bias_type, output_type, bias, per_channel, k_hot,
                              digits, learnable)

    #: Set by ``quantize_model`` when every call of this convolution feeds one BatchNorm2d and nothing else: a
    #: training forward then marks its output (the cast, as always) with the sum before the cast
    #: (``mark_cast_of``), and the BatchNorm's one-node path runs the cast's backward together with its own input
    #: gradient, in one kernel (values and gradients unchanged; the cast's own node is then never run).
    fuse_cast_into_bn: bool = False

    def _out_spatial(self, x) -> tuple[int, int]:
        """``(H_out, W_out)`` for (N, C, H, W) ``x`` (:func:`...fixed.window.out_shape`); ValueError where the window
        does not fit."""
        return out_shape(x.shape[2:], self.kernel_size, self.stride, symmetric_pads(self.padding, 2))

    def _train_node(self, x):
        """The training forward as one autograd node (:class:`_ConvCast`) where it applies: the weight and bias
        casts on the per-channel fused kernel, the output cast plain per tensor with mantissa sums that fit
        (``Quantizer.train_grid``), CPU float32, every quantizer movable (``Quantizer.movable_cast``); else None.
        Its output is marked as the other training path marks it."""
        wq, bq, q = self.weight_quantizer, self.bias_quantizer, self.output_quantizer
        if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu":
            return None
        pw = wq.movable_pc_fq_args(self.weight)
        pb = None if self.bias is None else bq.movable_pc_fq_args(self.bias)
        if pw is None or (self.bias is not None and pb is None):
            return None
        try:
            spatial = self._out_spatial(x)
        except ValueError:  # a window larger than the padded input: torch's own message, on the other path
            return None
        t = q.train_grid(x, (x.shape[0], self.out_channels) + spatial)
        fo = q.fused_cast_args(x, t=t) if t is not None else None
        if fo is None:
            return None
        sums = [] if self.fuse_cast_into_bn else None
        out, y = _ConvCast.apply(x, self.weight, wq.int_bits_param, self.bias,
                                 None if self.bias is None else bq.int_bits_param, q.int_bits_param,
                                 (self.stride, self.padding, self.groups), (*pw, wq.axis),
                                 None if pb is None else (*pb, bq.axis), t, fo[2], fo[3], sums)
        if sums is None:
            return mark_grid_sums(out, None, t.frac_bits)
        keep = out.grad_fn.keep if out.grad_fn is not None else None  # grad_fn: the node's ctx
        return mark_cast_of(mark_grid_sums(out, sums[0], t.frac_bits), y, q, t, keep)

    def forward(self, x):
        if self._float_path() and not self._calibrating():
            y = self._train_node(x)
            if y is not None:
                return y
        w, b = self._params()
        if self._float_path():
            y = F.conv2d(x, w, b, self.stride, self.padding, groups=self.groups)
            q = self.output_quantizer
            t = q.train_grid(y) if self.training and not self._calibrating() else None
            if t is None:
                return q(y)
            cast = q.train_cast_channel_sums(y, t) if self.fuse_cast_into_bn else None
            if cast is None:  # the BatchNorm computes the sums (same values)
                return mark_grid_sums(q(y), None, t.frac_bits)
            return mark_cast_of(mark_grid_sums(cast[0], cast[1], t.frac_bits), y, q, t)
        ops = self._f32_operands(x)
        if ops is not None:
            return self._cast_f32_out(F.conv2d(*ops, self.stride, self.padding, groups=self.groups))
        x = x.to(torch.float64)
        self._check(x, w, b)
        if x.device.type == "cpu":
            y = F.conv2d(x, w, b, self.stride, self.padding, groups=self.groups)
        else:  # im2col + matmul: no FFT / Winograd algorithm on accelerators
            n = x.shape[0]
            cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
            g = self.groups  # per group: (O/g, C/g*K) @ (C/g*K, L)
            y = (w.reshape(g, w.shape[0] // g, -1) @ cols.reshape(n, g, -1, cols.shape[-1]))
            y = y.reshape((n, w.shape[0]) + self._out_spatial(x))
            if b is not None:
                y = y + b.reshape(1, -1, 1, 1)
        return self.output_quantizer(y)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}" +
                (f", groups={self.groups}" if self.groups != 1 else ""))

    def onnx_export(self, ctx):
        """ONNX body: ``qfx.Conv`` (exact im2col + MatMul, :func:`..onnx_ops.conv_function`), then the cast."""
        from .. import onnx_ops
        if tuple(self.dilation) != (1, 1):
            raise ctx.error("only dilation 1 is supported")
        if len(ctx.in_shapes[0]) != 3:
            raise ctx.error(f"expects a (N, C, H, W) input, got shape {ctx.in_shapes[0]}")
        inputs = ctx.weighted_inputs(self, (-1, 1, 1, 1))
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        overload = ctx.overload("conv")
        ctx.b.custom_function(onnx_ops.conv_function(overload, ctx.in_shapes[0], self.out_channels, (kh, kw),
                                                     (sh, sw), (ph, pw, ph, pw), group=self.groups,
                                                     has_bias=len(inputs) == 3))
        acc = ctx.node("Conv", inputs, "acc", domain=onnx_ops.DOMAIN, overload=overload, kernel_shape=[kh, kw],
                       strides=[sh, sw], pads=[ph, pw, ph, pw], dilations=[1, 1], group=self.groups)
        return ctx.cast_out(acc)
