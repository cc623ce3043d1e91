"""``add``: ``y = cast(a + b, out_type)``; the sum is exact, the inputs may have different types."""
from __future__ import annotations

from ...fixed.cast import requantize_raw
from .base import OpDef, OpError, align_sum, max_abs_raw, out_type, type_casts_to_out_type
from . import tokens
from ...backend.layerplan import stream_cost
from .intervals import add_acc


def shape(node, in_shapes):
    a, b = in_shapes
    if tuple(a) != tuple(b):
        raise OpError(f"node {node.name!r} (add): input shapes differ: {tuple(a)} and {tuple(b)}")
    return tuple(a)


def run(node, inputs):
    (a, ta), (b, tb) = inputs
    s, f = align_sum(a, ta.frac_bits, b, tb.frac_bits, max(max_abs_raw(ta), max_abs_raw(tb)))
    return requantize_raw(s, f, out_type(node))


# ---- HLS plan
def hls(ctx):
    """``qfx::add``: the exact sum in ``acc_t`` (from the accumulators pass), one cast to ``out_t``."""
    a, b = ctx.inputs
    return ctx.layer("add", stream_cost(ctx.output.count),
                     types=[("in_a_t", a.type.cpp()), ("in_b_t", b.type.cpp()), ("acc_t", ctx.acc_type().cpp()),
                            ("out_t", ctx.y.cpp())],
                     sizes=[("n", ctx.output.count)], acc=ctx.acc_type())



def acc(node, ins):
    return add_acc(ins[0].type, ins[1].type)


OP = OpDef("add", __doc__, attrs={"out_type": "FixedType", "acc_type": "FixedType?"}, params={}, n_inputs=2,
           shape=shape, type=type_casts_to_out_type, run=run, casts=True, hls=hls, acc=acc, tokens=tokens.per_element)
