"""``clip``: ``y = min(max(x, lo), hi)``, no cast; ``lo``/``hi`` are int mantissas of the input type."""
from __future__ import annotations

import numpy as np

from .base import OpDef, OpError, attr, type_keeps_input
from . import tokens
from ...backend.layerplan import stream_cost


def _bounds(node):
    lo, hi = attr(node, "lo"), attr(node, "hi")
    for k, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise OpError(f"node {node.name!r} (clip): {k} must be an int mantissa, got {v!r}")
    if lo > hi:
        raise OpError(f"node {node.name!r} (clip): lo {lo} > hi {hi}")
    return int(lo), int(hi)


def shape(node, in_shapes):
    _bounds(node)
    return tuple(in_shapes[0])


def run(node, inputs):
    (x, tx), = inputs
    lo, hi = _bounds(node)
    return np.where(x < lo, lo, np.where(x > hi, hi, x)).astype(x.dtype)


# ---- HLS plan
def hls(ctx):
    """``qfx::clip`` with the bounds as mantissas of the input type."""
    lo, hi = _bounds(ctx.node)
    return ctx.layer("clip", stream_cost(ctx.inputs[0].count),
                     types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp())], sizes=[("n", ctx.inputs[0].count)],
                     longs=[("lo_raw", lo), ("hi_raw", hi)])


OP = OpDef("clip", __doc__, attrs={"lo": "int", "hi": "int"}, params={}, n_inputs=1,
           shape=shape, type=type_keeps_input, run=run, hls=hls, reads_codes=True, order_free=True,
           tokens=tokens.per_element)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import onnx_import  # noqa: E402


@onnx_import("Clip", max_inputs=3)
def import_clip(r, out):
    """``Clip(x, lo, hi)``: bounds must be scalar constants on ``x``'s grid (mantissas of its type)."""
    import numpy as np
    x = r.typed_act(0)
    t = x.type.replace(rounding="AP_RND_CONV", overflow="AP_SAT")
    bounds = []
    for i, default, side in ((1, x.type.raw_min, "min"), (2, x.type.raw_max, "max")):
        if i < len(r.cur.input) and r.cur.input[i]:
            v = r.inp(i)
            arr = getattr(v, "arr", None)
            if arr is None or np.size(arr) != 1:
                what = "an activation" if not hasattr(v, "arr") and not hasattr(v, "raw") else \
                    f"a tensor of {int(np.size(arr if arr is not None else v.raw))} values"
                raise r.err(f"Clip {side} must be a scalar constant (an initializer or Constant), not {what}")
            bounds.append(r.clip_bound(float(np.asarray(arr).reshape(-1)[0]), x.type, t, side))
        else:
            bounds.append(default)
    if bounds[0] > bounds[1]:
        raise r.err(f"Clip min is greater than max (as mantissas of {x.type}: {bounds[0]} > {bounds[1]}); "
                    f"give min <= max")
    r.set_act(r.emit("clip", [x.name], out, {"lo": bounds[0], "hi": bounds[1]}), out)
