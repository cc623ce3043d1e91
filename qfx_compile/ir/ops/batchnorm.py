"""``batchnorm``: ``y = cast(x * a_c + b_c, out_type)`` per channel (axis 0 of the activation).

Params ``scale`` (a, shape (C,)) and ``shift`` (b, shape (C,)), each with its own
(optionally per-channel) binary point. Inputs (C, H, W) or (C,).
"""
from __future__ import annotations

import numpy as np

from ...fixed.cast import requantize_raw
from ..graph import Const
from .base import (OpDef, OpError, align_sum, as_wide, const_common, max_abs_raw,
                   out_type, fits64, type_casts_to_out_type)
from . import tokens
from ...backend.estimate import LayerShape
from ...backend.layerplan import signed_bits
from .intervals import batchnorm_acc


def shape(node, in_shapes):
    s = tuple(in_shapes[0])
    if len(s) not in (1, 3):
        raise OpError(f"node {node.name!r} (batchnorm) needs a (C, H, W) or (C,) input, got {s}")
    for k in ("scale", "shift"):
        c = node.params.get(k)
        if not isinstance(c, Const) or c.shape != (s[0],):
            raise OpError(f"node {node.name!r} (batchnorm): {k} must have shape ({s[0]},), got "
                          f"{getattr(c, 'shape', c)}")
    return s


def run(node, inputs):
    (x, tx), = inputs
    a, fa = const_common(node.params["scale"])
    b, fb = const_common(node.params["shift"])
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    bound = max_abs_raw(tx) * (int(np.abs(as_wide(a)).max()) if a.size else 0)
    if fits64(bound) and x.dtype != object and a.dtype != object:
        prod = x.astype(np.int64) * a.astype(np.int64).reshape(bshape)
    else:
        prod = as_wide(x) * as_wide(a).reshape(bshape)
    bb = int(np.abs(as_wide(b)).max()) if b.size else 0
    s, f = align_sum(prod, tx.frac_bits + fa, np.asarray(b).reshape(bshape), fb, max(bound, bb))
    return requantize_raw(s, f, out_type(node))


# ---- HLS plan
def hls(ctx):
    """``qfx::batchnorm``: one multiplier (``x * a_c`` exact in ``acc_t``, + ``b_c``, one cast) per element.

    Channels are those of the output: after a flatten (``backend.lower``) every feature is a channel.
    """
    c, h, w = ctx.chw(ctx.output)
    sa = ctx.const("scale", "scale", ctx.node.params["scale"], "[n_chan]")
    ha = ctx.const("shift", "shift", ctx.node.params["shift"], "[n_chan]")
    acc = ctx.acc_type()
    return ctx.layer(
        "batchnorm", LayerShape("fixed_mul", a_bits=signed_bits(ctx.x), b_bits=signed_bits(sa.type),
                                fixed_cycles=c * h * w),
        types=[("in_t", ctx.x.cpp()), ("scale_t", sa.type.cpp()), ("shift_t", ha.type.cpp()), ("acc_t", acc.cpp()),
               ("out_t", ctx.y.cpp()), ("scale_raw_t", sa.ctype), ("shift_raw_t", ha.ctype)],
        sizes=[("n_chan", c), ("n_pixels", h * w)], arrays=[sa, ha], acc=acc, macs=c * h * w,
        n_params=sa.depth + ha.depth, params_bits=sa.depth * sa.width + ha.depth * ha.width, has_mul_impl=True)



def acc(node, ins):
    return batchnorm_acc(node.params["scale"], node.params["shift"], ins[0].type)


OP = OpDef("batchnorm", __doc__, attrs={"out_type": "FixedType", "acc_type": "FixedType?"},
           params={"scale": "(C,)", "shift": "(C,)"}, n_inputs=1, shape=shape, type=type_casts_to_out_type, run=run,
           casts=True, hls=hls, acc=acc, tokens=tokens.per_element)
