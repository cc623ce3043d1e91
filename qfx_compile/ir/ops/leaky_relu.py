"""``leaky_relu``: ``y = cast(x if x >= 0 else x * a, out_type)``: the exact product, one cast.

Param ``slope`` (a scalar Const): ``a`` as a fixed-point constant. For inputs of at most
``fixed.tables.MAX_TABLE_BITS`` bits the same function is a ``table`` (a ROM, cheaper than a
multiplier for narrow inputs); this op is the form for wider inputs: one multiplier per element.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ...fixed.cast import requantize_raw
from ...fixed.tables import MAX_TABLE_BITS
from ...fixed.types import FixedType
from ..graph import Const
from .base import OpDef, OpError, as_wide, fits64, max_abs_raw, out_type, shape_keeps_input, type_casts_to_out_type
from . import tokens
from ...backend.estimate import LayerShape
from ...backend.layerplan import signed_bits


def _slope(node) -> Const:
    a = node.params.get("slope")
    if not isinstance(a, Const) or np.asarray(a.raw).size != 1 or a.int_bits is not None:
        raise OpError(f"node {node.name!r} (leaky_relu): param 'slope' must be a scalar Const")
    return a


def shape(node, in_shapes):
    _slope(node)
    return shape_keeps_input(node, in_shapes)


def run(node, inputs):
    (x, tx), = inputs
    a = _slope(node)
    fa = a.type.frac_bits
    s = max(fa, 0)  # common binary point F_in + s of x * a and of x
    ar = int(np.asarray(a.raw).reshape(-1)[0]) << max(-fa, 0)
    if x.dtype != object and fits64(max_abs_raw(tx) * max(abs(ar), 1 << s)):
        xs = x.astype(np.int64)
        v = np.where(xs < 0, xs * ar, xs << s)
    else:
        xs = as_wide(x)
        v = np.where(xs < 0, xs * ar, xs * (1 << s))
    return requantize_raw(v, tx.frac_bits + s, out_type(node))


# ---- HLS plan
def hls(ctx):
    """``qfx::leaky_relu``: one multiplier (``x * a`` exact), one cast per element."""
    a = _slope(ctx.node)
    ar = int(np.asarray(a.raw).reshape(-1)[0])
    cost = LayerShape("fixed_mul", a_bits=signed_bits(ctx.x), b_bits=signed_bits(a.type),
                      fixed_cycles=ctx.inputs[0].count)
    return ctx.layer("leaky_relu", cost, types=[("in_t", ctx.x.cpp()), ("slope_t", a.type.cpp()),
                                                ("out_t", ctx.y.cpp())],
                     sizes=[("n", ctx.inputs[0].count)], longs=[("slope_raw", ar)], has_mul_impl=True)


OP = OpDef("leaky_relu", __doc__, attrs={"out_type": "FixedType"}, params={"slope": "() Const"}, n_inputs=1,
           shape=shape, type=type_casts_to_out_type, run=run, casts=True, hls=hls, order_free=True,
           tokens=tokens.per_element)


def slope_const(a: Fraction) -> Const:
    """A dyadic rational (a float's exact value) as the smallest signed fixed-point scalar Const."""
    a = Fraction(a)
    d = a.denominator
    if d & (d - 1):
        raise ValueError(f"slope {a} is not a dyadic rational")
    f = d.bit_length() - 1
    raw = a.numerator
    w = max(2, abs(raw).bit_length() + 1)
    if w > 62:
        raise ValueError(f"slope {float(a)!r} needs {w} bits")
    return Const(np.array(raw, dtype=np.int64), FixedType(w, w - f, True))


def wide_input(t: FixedType) -> bool:
    """Whether a LeakyReLU of an input of type ``t`` is this op (not a ``table``)."""
    return t.width > MAX_TABLE_BITS
