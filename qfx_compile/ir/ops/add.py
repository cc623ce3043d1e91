"""``add``: ``y = cast(a + b, out_type)``; the sum is exact, the inputs may have different types."""
from __future__ import annotations

from ...fixed.cast import requantize_raw
from .base import OpDef, OpError, align_sum, max_abs_raw, out_type, type_casts_to_out_type


def shape(node, in_shapes):
    a, b = in_shapes
    if tuple(a) != tuple(b):
        raise OpError(f"node {node.name!r} (add): input shapes differ: {tuple(a)} and {tuple(b)}")
    return tuple(a)


def run(node, inputs):
    (a, ta), (b, tb) = inputs
    s, f = align_sum(a, ta.frac_bits, b, tb.frac_bits, max(max_abs_raw(ta), max_abs_raw(tb)))
    return requantize_raw(s, f, out_type(node))


OP = OpDef("add", __doc__, attrs={"out_type": "FixedType", "acc_type": "FixedType?"}, params={}, n_inputs=2,
           shape=shape, type=type_casts_to_out_type, run=run, casts=True)
