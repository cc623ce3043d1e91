"""``quant``: ``y = cast(x, out_type)`` (an activation quantizer; the first node casts the float input)."""
from __future__ import annotations

from ...fixed.cast import requantize_raw
from .base import OpDef, cast_check, out_type, shape_keeps_input
from . import tokens
from ...backend.layerplan import stream_cost


def type_rule(node, in_types):
    return out_type(node)


def run(node, inputs):
    (x, tx), = inputs
    cast_check(node, tx)
    return requantize_raw(x, tx.frac_bits, out_type(node))


# ---- HLS plan
def hls(ctx):
    """``qfx::cast``: one assignment per element."""
    return ctx.layer("cast", stream_cost(ctx.inputs[0].count),
                     types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp())], sizes=[("n", ctx.inputs[0].count)])


OP = OpDef("quant", __doc__, attrs={"out_type": "FixedType"}, params={}, n_inputs=1,
           shape=shape_keeps_input, type=type_rule, run=run, casts=True, hls=hls, order_free=True,
           tokens=tokens.per_element)
