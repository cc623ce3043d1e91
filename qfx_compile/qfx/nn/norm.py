"""QFX BatchNorm2d: a per-channel fixed-point affine map ``cast(x * a_c + b_c, out_type)``.

From the float parameters (float64 in eval):
``a_c = cast(gamma_c / sqrt(var_c + eps), scale_type)`` and
``b_c = cast(beta_c - mean_c * gamma_c / sqrt(var_c + eps), shift_type)``
(``b_c`` uses the uncast ``gamma/sqrt``), each with its own (per-channel)
binary point. Eval uses the running statistics; the product and sum are exact.
Training uses the batch statistics with the same quantizers (straight-through)
and updates the running statistics as torch does (unbiased variance). Fed by a convolution's per-tensor
training cast (values on a grid ``2**-F``, marked by ``Conv2d``), the batch mean and variance come from the
exact integer sums of the mantissas (:func:`_grid_batch_stats`), computed in the cast's own pass under
``Conv2d.fuse_cast_into_bn``; otherwise torch's statistics pass. It runs in float32 with fused passes:
``z = x * a + b`` (product and sum each rounded in float32) and the output cast in one pass
(:class:`_AffineCast`, the fused kernel on CPU, else torch with the same bits); backward: the cast's gradient
and the affine map's ``da``/``db`` (exact blocked sums, :func:`..quantize.bn_param_grads`) in one pass, and
the whole ``dx`` (affine map and batch statistics) in one. Where the scale and shift quantizers take the
per-channel kernel, all of it is one autograd node (:class:`_OneNode`, its per-channel part in one kernel call
each way); with ``fuse_relu`` (set by ``quantize_model``) the ReLU that follows is applied in the output cast,
and a convolution marked ``fuse_cast_into_bn`` has its output cast's backward run with ``dx`` in one pass.
Every path gives the bits of the composed one.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import fused
from ..quantize import affine_train_cast, bn_cast_backward, bn_dx_cast_backward, bn_param_grads, channel_sums
from ..quantizer import Quantizer
from ._base import (QFXModule, TensorsKey, amax, cast_of, frac_bits_of, grid_sums_of, guard, quantizer_state,
                    release_cast, relu_applied)


def _grid_batch_stats(x, grid, running_mean, running_var, momentum, eps):
    """:func:`_batch_stats` of ``x`` marked ``grid = (sums, F)`` (:func:`._base.grid_sums_of`; ``sums`` None:
    :func:`..quantize.channel_sums` of x), ``n`` values per channel on the grid ``2**-F``. From the exact
    mantissa sums ``S1 = sum m``, ``S2 = sum m*m`` (Python integers): the mean ``S1 / n * 2**-F`` and the biased
    variance ``(n S2 - S1**2) / n**2 * 2**-2F``, each rounded once to float64, then to float32; the running
    statistics ``r = r * (1 - momentum) + v * momentum`` in float32, with the unbiased variance
    ``(n S2 - S1**2) / (n (n - 1)) * 2**-2F`` (rounded as the variance)."""
    sums, frac = grid
    n = x.numel() // x.shape[1]
    if sums is None:
        sums = channel_sums(x, frac)
    s1, s2 = sums[0], sums[1]
    if n > 1 and float(s2.max()) * n < 2.0 ** 53:
        # float64 holds n * S2, S1**2 <= n * S2 and their difference exactly: each quotient is rounded once,
        # as Python's int / int below
        num = s2 * n - s1 * s1
        mean = (s1 / n) * 2.0 ** -frac
        var, unbiased = ((num / d) * 2.0 ** (-2 * frac) for d in (float(n * n), float(n * (n - 1))))
    else:
        mean, var, unbiased = [], [], []
        for a, b in zip(s1.tolist(), s2.tolist()):
            a, b = int(a), int(b)
            num = n * b - a * a
            mean.append(math.ldexp(a / n, -frac))
            var.append(math.ldexp(num / (n * n), -2 * frac))
            unbiased.append(math.ldexp(num / (n * (n - 1)), -2 * frac) if n > 1 else math.inf)
        mean, var, unbiased = (torch.tensor(v, dtype=torch.float64) for v in (mean, var, unbiased))
    dev = running_mean.device
    mean, var, unbiased = (v.to(dev, torch.float32) for v in (mean, var, unbiased))
    with torch.no_grad():
        running_mean.mul_(1.0 - momentum).add_(mean * momentum)
        running_var.mul_(1.0 - momentum).add_(unbiased * momentum)
    return mean, (var + eps).sqrt_().reciprocal_()


def _batch_stats(x, running_mean, running_var, momentum, eps, grid=None):
    """``(mean, 1/sqrt(var + eps))`` per channel (biased variance), the running statistics updated in place:
    from the exact mantissa sums where ``grid`` is given (:func:`_grid_batch_stats`), else torch's own."""
    if grid is not None:
        return _grid_batch_stats(x, grid, running_mean, running_var, momentum, eps)
    if x.device.type == "cpu" and hasattr(torch, "batch_norm_update_stats"):
        # statistics only (no normalized output written): one pass over x
        mean, var = torch.batch_norm_update_stats(x, running_mean, running_var, momentum)
        return mean, (var + eps).sqrt_().reciprocal_()
    _, mean, invstd = torch.ops.aten.native_batch_norm(x, None, None, running_mean, running_var, True, momentum, eps)
    return mean, invstd


def _stats_dx_coefficients(x, mean, invstd, g_mean, g_invstd):
    """``(B, C)`` of the statistics' input gradient ``x * B_c + C_c`` (see :class:`_BatchStats`)."""
    n = x.numel() // x.shape[1]
    g_mean = torch.zeros_like(mean) if g_mean is None else g_mean
    g_var = torch.zeros_like(mean) if g_invstd is None else g_invstd * invstd.pow(3) * -0.5
    b = g_var * (2.0 / n)
    return b, g_mean / n - b * mean


class _BatchStats(torch.autograd.Function):
    """Batch mean and ``1/sqrt(var + eps)`` per channel of (N, C, H, W) ``x`` (biased variance).

    One pass of torch's own statistics kernel (``batch_norm_update_stats`` on CPU, else a
    ``native_batch_norm`` training pass), which also updates the running statistics in place
    (momentum, unbiased variance) as torch does.
    Backward in one pass: ``dx = g_mean / n + g_var * 2 (x - mean) / n = x * B_c + C_c``
    with ``g_var = -g_invstd * invstd**3 / 2``; with the affine map's deferred ``g * a_c`` (``link``,
    see :class:`_ChannelAffine`) the whole ``dx = (x * B_c + C_c) + g * a_c`` in one pass (:func:`fused.bn_dx`).
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, momentum, eps, link=None, grid=None):
        mean, invstd = _batch_stats(x, running_mean, running_var, momentum, eps, grid)
        ctx.save_for_backward(x, mean, invstd)
        ctx.link = link
        return mean, invstd

    @staticmethod
    def backward(ctx, g_mean, g_invstd):
        x, mean, invstd = ctx.saved_tensors
        b, c = _stats_dx_coefficients(x, mean, invstd, g_mean, g_invstd)
        deferred = ctx.link.pop("dx", None) if ctx.link is not None else None
        if deferred is not None:
            return fused.bn_dx(deferred[0], x, deferred[1], b, c), None, None, None, None, None, None
        one = torch.ones_like(mean)
        gx = torch.ops.aten.native_batch_norm(x.contiguous(), b, c, torch.zeros_like(mean), one, False, 0.0, 0.0)[0]
        return gx, None, None, None, None, None, None


class _ChannelAffine(torch.autograd.Function):
    """``y = x * a_c + b_c`` in float32 (``addcmul``).

    Backward in one fused pass (``native_batch_norm_backward`` in eval form, mean 0, var 1, eps 0):
    ``dx = g * a_c``, ``da_c = sum g * x``, ``db_c = sum g``. With ``stats = (mean, invstd, link)`` of
    the :class:`_BatchStats` that x also feeds, ``dx`` is deferred: ``(g, a)`` go into ``link`` and that
    backward (which runs after this one: it needs the gradients of mean and invstd) writes the whole
    ``dx`` in one pass, so no ``g * a_c`` tensor is written and no two ``dx`` tensors are added.
    """

    @staticmethod
    def forward(ctx, x, a, b, mean=None, invstd=None, link=None):
        ctx.save_for_backward(x, a)
        ctx.link = link
        return torch.addcmul(b.reshape(1, -1, 1, 1), x, a.reshape(1, -1, 1, 1))

    @staticmethod
    def backward(ctx, g):
        x, a = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        link = ctx.link if need_x else None
        if link is not None:
            need_x = False
            link["dx"] = (g, a.detach())
        gx = None
        if need_x:
            gx = torch.ops.aten.native_batch_norm_backward(g.contiguous(), x, a, torch.zeros_like(a),
                                                           torch.ones_like(a), None, None, False, 0.0,
                                                           [True, False, False])[0]
        ga, gb = bn_param_grads(g, x, g)
        if link is not None:  # the statistics' backward must run: zero gradients keep it in the graph
            return None, ga, gb, torch.zeros_like(a), torch.zeros_like(a), None
        return gx, ga, gb, None, None, None


class _AffineCast(torch.autograd.Function):
    """``q = cast(x * a_c + b_c, t)`` (:func:`..quantize.affine_train_cast`: one pass), the output cast of
    :class:`_ChannelAffine` fused in, with the output quantizer's gradients (``dL/dz = g`` where
    ``lo <= z <= hi``, ``dL/dI`` the TQT sum of :func:`..quantize.ib_grad`) and ``_ChannelAffine``'s
    (``dx`` deferred to the statistics' backward through ``link``)."""

    @staticmethod
    def forward(ctx, x, a, b, ib, t, lo, hi, mean, invstd, link, relu):
        q = affine_train_cast(x, a, b, t, relu)
        ctx.save_for_backward(x, a, b, q)
        ctx.meta = (t, lo, hi, link, relu)
        return q

    @staticmethod
    def backward(ctx, g):
        x, a, b, q = ctx.saved_tensors
        t, lo, hi, link, relu = ctx.meta
        gz, gib, ga, gb = bn_cast_backward(g, x, a, b, q, t, lo, hi, bool(ctx.needs_input_grad[3]), relu)
        gx = None
        if link is not None and ctx.needs_input_grad[0]:
            link["dx"] = (gz, a.detach())
        else:
            link = None
            if ctx.needs_input_grad[0]:
                gx = torch.ops.aten.native_batch_norm_backward(gz, x, a, torch.zeros_like(a), torch.ones_like(a),
                                                               None, None, False, 0.0, [True, False, False])[0]
        zeros = (torch.zeros_like(a), torch.zeros_like(a)) if link is not None else (None, None)
        return gx, ga, gb, gib, None, None, None, *zeros, None, None


def _one_node_args(q: Quantizer, x: torch.Tensor):
    """``(W, qmin, qmax)`` of the per-channel scale or shift quantizer ``q`` for :class:`_OneNode`, None where
    it does not apply (not the per-channel fused kernel's cast, or not movable: ``Quantizer.movable_cast``)."""
    return q.movable_pc_fq_args(x) if q.axis == 0 else None


def _param_forward(x, weight, bias, th_a, th_b, rm, rv, momentum, eps, pa, pb, grid):
    """``(mean, invstd, a0, b0, a, b, sa, sb)`` float32 [C] of :class:`_OneNode`'s forward in one kernel call
    (cast.cpp ``qfx_bn_param_forward``: the statistics from ``grid``'s exact sums where they fit, else from
    :func:`_batch_stats`; ``a0 = weight * invstd``, ``b0 = bias - mean * a0`` and their per-channel casts
    ``a``, ``b`` with scales ``sa``, ``sb``), each value as torch computes it on the composed path."""
    c = weight.shape[0]
    out = torch.empty((8, c), dtype=torch.float32)
    mean, invstd, a0, b0, a, b, sa, sb = out.unbind(0)
    f32 = [fused.f32(v) for v in (weight, bias, th_a, th_b)]
    lib, n = fused.kernel(), x.numel() // c
    sums, frac = grid if grid is not None else (None, 0)
    if grid is not None and sums is None:
        sums = channel_sums(x, frac)

    def call(s):
        return lib.qfx_bn_param_forward(None if s is None else s.contiguous().data_ptr(), n, frac, float(momentum),
                                        float(eps), rm.data_ptr(), rv.data_ptr(), mean.data_ptr(), invstd.data_ptr(),
                                        *(v.data_ptr() for v in f32), *pa, *pb, c, a0.data_ptr(), b0.data_ptr(),
                                        a.data_ptr(), b.data_ptr(), sa.data_ptr(), sb.data_ptr())

    if sums is None or call(sums) != 0:  # torch's statistics, or the grid's too large for float64 (Python integers)
        m, i = _batch_stats(x, rm, rv, momentum, eps, grid)
        mean.copy_(m)
        invstd.copy_(i)
        call(None)
    return mean, invstd, a0, b0, a, b, sa, sb


class _OneNode(torch.autograd.Function):
    """BatchNorm2d's whole training step as one autograd node on the fused kernels: the statistics,
    ``a = cast(gamma * invstd)``, ``b = cast(beta - mean * gamma * invstd)`` (per-channel casts,
    :func:`..quantizer.pc_fq_forward`'s arithmetic) and ``q = cast(x * a_c + b_c)``
    (:func:`..quantize.affine_train_cast`), the per-channel part in one kernel call each way
    (:func:`_param_forward`, cast.cpp ``qfx_bn_param_backward``); backward by hand through the same operations in
    the same order, so every value and gradient has the bits of the composed path (:class:`_BatchStats`, the
    scale and shift quantizers, :class:`_AffineCast`), which runs where this one does not apply
    (tests/test_fused_cast.py). Fewer autograd nodes and small tensor operations: the per-step cost of a
    BatchNorm that does not grow with the batch."""

    @staticmethod
    def forward(ctx, x, weight, bias, th_a, th_b, th_out, th_in, rm, rv, momentum, eps, pa, pb, out, pre, relu,
                grid):
        y = x
        if pre is not None:  # x is a convolution's sum, pre = (its cast, the cast's type, lo, hi): see forward
            x = pre[0]
        mean, invstd, a0, b0, a, b, sa, sb = _param_forward(x, weight, bias, th_a, th_b, rm, rv, momentum, eps, pa,
                                                            pb, grid)
        t, lo, hi = out
        q = affine_train_cast(x, a, b, t, relu)
        ctx.save_for_backward(x, y, weight, q)
        ctx.params = (mean, invstd, a0, b0, a, b, sa, sb)
        ctx.meta = (pa[1:], pb[1:], t, lo, hi, relu, None if pre is None else pre[1:])
        return q

    @staticmethod
    def backward(ctx, g):
        x, y, weight, q = ctx.saved_tensors
        mean, invstd, a0, b0, a, b, sa, sb = ctx.params
        qa, qb, t, lo, hi, relu, pre = ctx.meta
        need = ctx.needs_input_grad
        c = a.shape[0]
        # Every output allocated before the first kernel pass, the [C] results in one buffer and the two
        # binary-point gradients in another: a tensor operation right after a pass over the batch runs on a cold
        # cache (tens of microseconds each), so the operations come in one burst, before the passes.
        gz = fused.empty(x.shape, torch.float32)
        gx = fused.empty(x.shape, torch.float32) if need[0] else None
        ga, gb, dw, dbias, g_th_a, g_th_b, coef_b, coef_c = fused.empty((8, c), torch.float32).unbind(0)
        g_out, g_in = fused.empty((2,), torch.float32).unbind(0)
        bn_cast_backward(g, x, a, b, q, t, lo, hi, need[5], relu, out=(gz, ga, gb, g_out))
        w32 = fused.f32(weight)
        fused.kernel().qfx_bn_param_backward(ga.data_ptr(), gb.data_ptr(), a0.data_ptr(), b0.data_ptr(),
                                             sa.data_ptr(), sb.data_ptr(), *qa, *qb, w32.data_ptr(), mean.data_ptr(),
                                             invstd.data_ptr(), c, x.numel() // c, int(need[0]), dw.data_ptr(),
                                             dbias.data_ptr(), g_th_a.data_ptr(), g_th_b.data_ptr(),
                                             coef_b.data_ptr(), coef_c.data_ptr())
        if need[0]:
            if pre is None:
                gx = fused.bn_dx(gz, x, a, coef_b, coef_c, out=gx)
            else:  # dx, then the convolution's output cast's backward, in one kernel
                bn_dx_cast_backward(gz, x, y, a, coef_b, coef_c, pre[1], pre[2], pre[0].int_bits, need[6],
                                    out=(gx, g_in))
        return (gx, dw if need[1] else None, dbias if need[2] else None, g_th_a if need[3] else None,
                g_th_b if need[4] else None, g_out if need[5] else None,
                g_in if need[0] and pre is not None and need[6] else None, *([None] * 10))


class BatchNorm2d(QFXModule):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, *,
                 scale_type="ap_fixed<8,3,AP_RND_CONV,AP_SAT>", shift_type="ap_fixed<8,3,AP_RND_CONV,AP_SAT>",
                 output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", per_channel: bool = True, learnable: bool = True):
        super().__init__()
        c = int(num_features)
        self.num_features, self.eps, self.momentum = c, float(eps), momentum
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        ch = c if per_channel else None
        self.scale_quantizer = Quantizer(scale_type, channels=ch, axis=0, learnable=learnable, name="bn scale")
        self.shift_quantizer = Quantizer(shift_type, channels=ch, axis=0, learnable=learnable, name="bn shift")
        self.output_quantizer = Quantizer(output_type, learnable=learnable, name="output")

    def _float_scale_shift(self, mean, var, dtype):
        a = self.weight.to(dtype) / torch.sqrt(var.to(dtype) + self.eps)
        return a, self.bias.to(dtype) - mean.to(dtype) * a

    def quantized_scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)``: float64 [C] on the scale / shift grids, from the running statistics."""
        with torch.no_grad():
            a, b = self._float_scale_shift(self.running_mean, self.running_var, torch.float64)
            return self.scale_quantizer.apply_eval(a.detach()), self.shift_quantizer.apply_eval(b.detach())

    def init_quantizers_from_stats(self) -> None:
        """Set the scale / shift binary points to cover the values from the running statistics."""
        with torch.no_grad():
            a, b = self._float_scale_shift(self.running_mean, self.running_var, torch.float64)
        self.scale_quantizer.calibrate(a)
        self.shift_quantizer.calibrate(b)

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"{self.layer_name}: expected a 4-D input (N, C, H, W), got {tuple(x.shape)}")
        if self._float_path():
            if self.training and not self._calibrating():
                self.num_batches_tracked.add_(1)  # in place: no Module.__setattr__ (a buffer without gradient)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                fo = self.output_quantizer.fused_cast_args(x, kernel=False)  # the torch path stands in for it
                pa, pb = _one_node_args(self.scale_quantizer, x), _one_node_args(self.shift_quantizer, x)
                stats_ok = all(v.dtype == torch.float32 and v.device.type == "cpu" and v.is_contiguous()
                               for v in (self.running_mean, self.running_var))
                if fo is not None and pa is not None and pb is not None and stats_ok:
                    src = cast_of(x)  # x = a convolution's output cast of src[0] (Conv2d.fuse_cast_into_bn)
                    pre = src[1].fused_cast_args(src[0], t=src[2]) if src is not None else None
                    if pre is not None:
                        release_cast(x)  # _OneNode keeps y and x and runs the cast's backward
                    inp, xc = (x, None) if pre is None else (src[0], x.detach())
                    y = _OneNode.apply(inp, self.weight, self.bias, self.scale_quantizer.int_bits_param,
                                       self.shift_quantizer.int_bits_param, fo[0], None if pre is None else pre[0],
                                       self.running_mean, self.running_var, m, self.eps, pa, pb, fo[1:],
                                       None if pre is None else (xc,) + pre[1:], self.fuse_relu, grid_sums_of(x))
                    return self._relu_mark(y)
                link = {} if x.requires_grad and torch.is_grad_enabled() else None
                mean, invstd = _BatchStats.apply(x, self.running_mean, self.running_var, m, self.eps, link,
                                                 grid_sums_of(x))
                a = self.weight.to(x.dtype) * invstd
                a, b = self.scale_quantizer(a), self.shift_quantizer(self.bias.to(x.dtype) - mean * a)
                if fo is not None:
                    return self._relu_mark(_AffineCast.apply(x, a, b, *fo, mean, invstd, link, self.fuse_relu))
                y = self.output_quantizer(_ChannelAffine.apply(x, a, b, mean, invstd, link))
                return self._relu_mark(torch.relu(y)) if self.fuse_relu else y
            mean, var = self.running_mean, self.running_var
            a, b = self._float_scale_shift(mean, var, x.dtype)
            a, b = self.scale_quantizer(a), self.shift_quantizer(b)
            return self.output_quantizer(_ChannelAffine.apply(x, a, b))
        x = x.to(torch.float64)
        a, b, fa, fb, aa, ab = self._eval_params()
        guard(self, [x], lambda g: (g[0][1] * aa + ab, max(g[0][0] + fa, fb)))
        return self.output_quantizer(torch.addcmul(b.reshape(1, -1, 1, 1), x, a.reshape(1, -1, 1, 1)))

    def _relu_mark(self, y: torch.Tensor) -> torch.Tensor:
        """``y``, marked as ReLU's output where this training forward applied the fused ReLU."""
        return relu_applied(y) if self.fuse_relu and self.training and not self._calibrating() else y

    def _eval_params(self):
        """``(a, b, F_a, F_b, max |a|, max |b|)``, cached until a parameter, statistic or quantizer changes."""
        ts, vs = quantizer_state(self.scale_quantizer)
        th, vh = quantizer_state(self.shift_quantizer)
        tensors = [self.weight, self.bias, self.running_mean, self.running_var] + ts + th
        values = (self.eps,) + vs + vh
        c = getattr(self, "_eval_cache", None)
        if c is None or not c[0].matches(tensors, values):
            a, b = self.quantized_scale_shift()
            c = (TensorsKey(tensors, values), (a, b, frac_bits_of(a), frac_bits_of(b), amax(a), amax(b)))
            self._eval_cache = c
        return c[1]

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def onnx_export(self, ctx):
        """ONNX body: ``x * FixedPoint(scale) + FixedPoint(shift)`` per channel (exact), then the cast."""
        from fractions import Fraction
        from ..export import _frac_of, _max_mag, _np64
        if len(ctx.shape) != 4:
            raise ctx.error("expects a (N, C, H, W) input")
        return self._onnx_affine(ctx, (-1, 1, 1))

    def _onnx_affine(self, ctx, axis_shape):
        """``x * FixedPoint(scale) + FixedPoint(shift)`` with constants shaped ``(C,) + axis_shape[1:]``."""
        from fractions import Fraction
        from ..export import _frac_of, _max_mag, _np64
        a, s = self.quantized_scale_shift()
        a, s = _np64(a).reshape(-1), _np64(s).reshape(-1)
        frac = max(ctx.xt.frac_bits + _frac_of(a), _frac_of(s))
        bound = _max_mag(ctx.xt) * Fraction(float(abs(a).max(initial=0))) + Fraction(float(abs(s).max(initial=0)))
        if bound * Fraction(2) ** frac >= 2 ** 53:
            raise ctx.error("x * scale + shift could need more than 53 bits; use narrower types")
        c = a.shape[0]
        shape = (c,) + tuple(axis_shape[1:])
        aq = ctx.const("scale", a.reshape(shape), self.scale_quantizer, axis_shape)
        sq = ctx.const("shift", s.reshape(shape), self.shift_quantizer, axis_shape)
        mul = ctx.node("Mul", [ctx.x, aq], "mul")
        return ctx.cast_out(ctx.node("Add", [mul, sq], "acc"))
