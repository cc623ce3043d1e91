"""``avgpool``: ``y = cast(S * r, out_type)``, ``S`` the exact sum of the ``N = kh*kw`` window
elements, ``r = cast(1/N, ap_ufixed<R, 1-p, AP_RND_CONV, AP_SAT>)``, ``p = floor(log2 N)``,
``R = recip_bits`` (default 16). Zero padding (``pads``, top, left, bottom, right): padding cells
count as zeros and ``N`` stays ``kh*kw`` (PyTorch's ``count_include_pad=True``). Attr ``recip``
(a Const scalar) holds ``r``.
"""
from __future__ import annotations

import numpy as np

from ...fixed.cast import requantize_raw
from ...fixed.types import FixedType, reciprocal_raw
from ..graph import Const
from .base import (OpDef, OpError, as_wide, fits64, int_pair, max_abs_raw,
                   out_type, pads4, window_out, type_casts_to_out_type)
from . import tokens
from .conv2d import patches
from .maxpool import window_sizes

DEFAULT_RECIP_BITS = 16
from ...backend.estimate import LayerShape
from ...backend.layerplan import signed_bits
from .intervals import sum_acc


def reciprocal(n: int, recip_bits: int) -> Const:
    """``r = cast(1/n, ap_ufixed<R, 1-p, AP_RND_CONV, AP_SAT>)`` as a scalar Const (exact integers)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise OpError(f"average pooling over {n!r} elements")
    if isinstance(recip_bits, bool) or not isinstance(recip_bits, (int, np.integer)) or not 1 <= recip_bits <= 64:
        raise OpError(f"recip_bits must be an int in 1..64, got {recip_bits!r}")
    q, t = reciprocal_raw(int(n), int(recip_bits))  # the rule lives in qfx/types.py
    return Const(np.array(q, dtype=np.int64), t)


def recip_bits(node) -> int:
    return node.attrs.get("recip_bits", DEFAULT_RECIP_BITS)


def scale_sum(node, s: np.ndarray, tx: FixedType, n: int) -> np.ndarray:
    """``cast(S * r, out_type)`` for window sums ``S`` of ``n`` elements at ``tx``'s binary point."""
    r = reciprocal(n, recip_bits(node))
    rv = int(r.raw)
    if fits64(max_abs_raw(tx) * n * rv) and s.dtype != object:
        prod = s.astype(np.int64) * rv
    else:
        prod = as_wide(s) * rv
    return requantize_raw(prod, tx.frac_bits + r.type.frac_bits, out_type(node))


def geometry(node):
    k = int_pair(node, "kernel")
    return k, int_pair(node, "stride", k), pads4(node)


def shape(node, in_shapes):
    k, s, p = geometry(node)
    reciprocal(k[0] * k[1], recip_bits(node))
    ho, wo = window_out(node, in_shapes[0], k, s, p)
    return (in_shapes[0][0], ho, wo)


def run(node, inputs):
    (x, tx), = inputs
    k, s, p = geometry(node)
    win = patches(x, k, s, p)
    n = k[0] * k[1]
    if not fits64(max_abs_raw(tx) * n):
        win = as_wide(win)
    return scale_sum(node, win.sum(axis=(2, 3)), tx, n)


# ---- HLS plan
def mean_plan(ctx, kernel: str, n: int, sizes, cycles: int):
    """Plan of a mean over ``n`` elements: exact sum in ``acc_t``, times ``r`` (``recip_raw``), one cast.

    One multiplier ``S * r`` per output; a shift when ``n`` is a power of two. Shared with
    ``global_avgpool``.
    """
    acc = ctx.acc_type()
    r = ctx.node.attrs["recip"]  # set by ir.passes.infer_shapes (rule: fixed.types.reciprocal_raw)
    pow2 = n & (n - 1) == 0
    cost = LayerShape("stream" if pow2 else "fixed_mul", a_bits=signed_bits(acc), b_bits=signed_bits(r.type),
                      fixed_cycles=cycles)
    return ctx.layer(kernel, cost, types=[("in_t", ctx.x.cpp()), ("acc_t", acc.cpp()), ("recip_t", r.type.cpp()),
                                          ("out_t", ctx.y.cpp())],
                     sizes=sizes, ulongs=[("recip_raw", int(r.raw))], acc=acc, has_mul_impl=True)


def hls(ctx):
    """``qfx::avgpool2d``: reads every input once, then one mean per output element."""
    k, s, p = geometry(ctx.node)
    sizes = window_sizes(ctx, k, s, p)
    return mean_plan(ctx, "avgpool2d", k[0] * k[1], sizes, ctx.inputs[0].count + ctx.output.count)



def acc(node, ins):
    kh, kw = node.attrs["kernel"]
    return sum_acc(ins[0].type, kh * kw)


def derive(node, ins):
    """``recip``: the constant ``r = cast(1/N, .)`` (rule: fixed.types.reciprocal_raw)."""
    kh, kw = node.attrs["kernel"]
    return {"recip": reciprocal(kh * kw, recip_bits(node))}


def token_rule(node, in_shapes, out_shape):
    """qfx::pool_windows: ``n_chan`` writes per window."""
    kernel, stride, pads = geometry(node)
    return tokens.window(in_shapes[0], kernel, stride, pads, writes=in_shapes[0][0])


OP = OpDef("avgpool", __doc__,
           attrs={"out_type": "FixedType", "kernel": "(kh, kw)", "stride": "(sh, sw)",
                  "pads": "(top, left, bottom, right)", "recip_bits": "int", "recip": "Const?", "acc_type": "FixedType?"},
           params={}, n_inputs=1, shape=shape, type=type_casts_to_out_type, run=run, casts=True, hls=hls, acc=acc, derive=derive,
           tokens=token_rule)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import INT as _INT, onnx_import  # noqa: E402


@onnx_import("AveragePool", max_inputs=1)
@onnx_import("AveragePool", domain="qfx", max_inputs=1, label="qfx.AveragePool")
def import_avgpool(r, out):
    """``AveragePool`` (a power-of-two window) or ``qfx.AveragePool`` (``recip_bits``): a pending ``avgpool``."""
    x = r.typed_act(0)
    k, s, p = r.window_attrs()
    if any(p) and r.cur.domain != "qfx" and r.attr("count_include_pad", _INT, 0) != 1:
        raise r.err("average pooling with padding divides by the whole window only with count_include_pad=1 "
                    "(the padding cells count as zeros); export with count_include_pad=1")
    r.pending(out, "avgpool", x, {"kernel": k, "stride": s, "pads": p,
                                  "recip_bits": r.recip_bits(r.cur.domain == "qfx", k[0] * k[1])})
