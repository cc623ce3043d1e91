"""``global_avgpool``: (C, H, W) -> (C, 1, 1), ``y = cast(S * r, out_type)`` over all ``N = H*W``
elements of a channel, ``r`` as in ``avgpool`` (attrs ``recip_bits``, ``recip``)."""
from __future__ import annotations

from .avgpool import mean_plan, reciprocal, recip_bits, scale_sum
from .base import OpDef, OpError, as_wide, fits64, max_abs_raw, type_casts_to_out_type
from . import tokens
from .intervals import sum_acc


def shape(node, in_shapes):
    s = tuple(in_shapes[0])
    if len(s) != 3:
        raise OpError(f"node {node.name!r} (global_avgpool) needs a (C, H, W) input, got {s}")
    reciprocal(s[1] * s[2], recip_bits(node))
    return (s[0], 1, 1)


def run(node, inputs):
    (x, tx), = inputs
    n = x.shape[2] * x.shape[3]
    if not fits64(max_abs_raw(tx) * n):
        x = as_wide(x)
    return scale_sum(node, x.sum(axis=(2, 3), keepdims=True), tx, n)


# ---- HLS plan
def hls(ctx):
    """``qfx::global_avgpool``: per-channel sums over the map, then one mean per channel."""
    c, h, w = ctx.chw()
    return mean_plan(ctx, "global_avgpool", h * w, [("in_height", h), ("in_width", w), ("n_chan", c)],
                     c * h * w + c)



def acc(node, ins):
    return sum_acc(ins[0].type, ins[0].shape[1] * ins[0].shape[2])


def derive(node, ins):
    """``recip``: the constant ``r = cast(1/N, .)`` over the ``H*W`` elements of a channel."""
    return {"recip": reciprocal(ins[0].shape[1] * ins[0].shape[2], recip_bits(node))}


OP = OpDef("global_avgpool", __doc__,
           attrs={"out_type": "FixedType", "recip_bits": "int", "recip": "Const?", "acc_type": "FixedType?"},
           params={}, n_inputs=1, shape=shape, type=type_casts_to_out_type, run=run, casts=True, hls=hls, acc=acc, derive=derive,
           tokens=tokens.all_first)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import onnx_import  # noqa: E402


@onnx_import("GlobalAveragePool", max_inputs=1)
@onnx_import("GlobalAveragePool", domain="qfx", max_inputs=1, label="qfx.GlobalAveragePool")
def import_global_avgpool(r, out):
    """``GlobalAveragePool`` (power-of-two H*W) or ``qfx.GlobalAveragePool``: a pending ``global_avgpool``."""
    x = r.typed_act(0)
    if len(x.shape) != 3:
        raise r.err(f"needs a (C, H, W) input, got {x.shape}")
    r.pending(out, "global_avgpool", x, {"recip_bits": r.recip_bits(r.cur.domain == "qfx",
                                                                      x.shape[1] * x.shape[2])})
