"""``concat``: ``y = concat_channels(cast(x_0, out_type), cast(x_1, out_type), ...)``, any number of inputs.

Inputs are feature maps ``(C_i, H, W)`` with the same ``H, W`` (or vectors ``(C_i,)``); the output is
``(sum C_i, H, W)``. Each input is cast to ``out_type`` (its rounding, then its overflow), so the
inputs may have different types; where an input already has ``out_type`` its cast changes nothing
(the frontend chooses the common type of the inputs, which holds every input exactly).
"""
from __future__ import annotations

import numpy as np

from ...fixed.cast import requantize_raw
from ...fixed.types import common_type
from .base import OpDef, OpError, as_wide, cast_check, out_type, type_casts_to_out_type
from . import tokens
from ...backend.layerplan import stream_cost

#: inputs of one hls_lib ``qfx::concat`` call (hls_lib/qfx_concat.h)
MAX_HLS_INPUTS = 4


def shape(node, in_shapes):
    ranks = {len(s) for s in in_shapes}
    if ranks not in ({1}, {3}):
        raise OpError(f"node {node.name!r} (concat): inputs must all be (C, H, W) maps or all vectors, got "
                      f"{[tuple(s) for s in in_shapes]}")
    if len({tuple(s[1:]) for s in in_shapes}) != 1:
        raise OpError(f"node {node.name!r} (concat): inputs {[tuple(s) for s in in_shapes]} differ in size "
                      f"(only the channel axis may differ)")
    return (sum(int(s[0]) for s in in_shapes),) + tuple(in_shapes[0][1:])


def run(node, inputs):
    t = out_type(node)
    parts = []
    for x, tx in inputs:
        cast_check(node, tx)
        parts.append(requantize_raw(x, tx.frac_bits, t))
    if any(p.dtype == object for p in parts):
        parts = [as_wide(p) for p in parts]
    return np.concatenate(parts, axis=1)


# ---- HLS plan
def hls(ctx):
    """``qfx::concat``: per pixel, each input's channels in turn (one element per cycle), each cast."""
    n = len(ctx.inputs)
    if n > MAX_HLS_INPUTS:
        raise ctx.error(f"a concatenation of {n} tensors; the kernel takes 2 to {MAX_HLS_INPUTS} (concatenate "
                        f"in stages of at most {MAX_HLS_INPUTS})")
    if n == 1:  # a single input: a cast
        return ctx.layer("cast", stream_cost(ctx.output.count), types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp())],
                         sizes=[("n", ctx.output.count)])
    chw = [ctx.chw(t) for t in ctx.inputs]
    types = [(f"in{k}_t", t.type.cpp()) for k, t in enumerate(ctx.inputs)] + [("out_t", ctx.y.cpp())]
    sizes = [("n_pixels", chw[0][1] * chw[0][2])] + [(f"n_chan{k}", c[0]) for k, c in enumerate(chw)]
    return ctx.layer("concat", stream_cost(ctx.output.count), types=types, sizes=sizes)


def token_rule(node, in_shapes, out_shape):
    """qfx::concat: per pixel, each input's channels in turn (one input: qfx::cast, one per element)."""
    sources = [k for k, s in enumerate(in_shapes) for _ in range(int(s[0]))]
    return tokens.interleave(int(np.prod(out_shape[1:])), sources)


OP = OpDef("concat", __doc__, attrs={"out_type": "FixedType", "axis": "1 (channels)"}, params={}, n_inputs=None,
           shape=shape, type=type_casts_to_out_type, run=run, casts=True, hls=hls, tokens=token_rule)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import INT as _INT, onnx_import  # noqa: E402


@onnx_import("Concat", max_inputs=None)
def import_concat(r, out):
    """``Concat`` on the channel axis of typed tensors: a ``concat`` to their common type (exact); more than
    ``MAX_HLS_INPUTS`` tensors are concatenated in stages."""
    n = len(r.cur.input)
    if n < 1 or any(not i for i in r.cur.input):
        raise r.err("Concat needs one or more named inputs")
    xs = [r.typed_act(i) for i in range(n)]
    rank = len(xs[0].shape) + 1
    axis = r.attr("axis", _INT, required=True)
    if axis < 0:
        axis += rank
    if axis != 1:
        raise r.err(f"only a concatenation on the channel axis (axis 1) is supported, got axis "
                    f"{r.attr('axis', _INT)} of a rank-{rank} tensor")
    names, types = [x.name for x in xs], [x.type for x in xs]
    while len(names) > MAX_HLS_INPUTS:  # staged: concat(concat(x1..x4), x5, ...) keeps the channel order
        mid = out + "/part"
        while mid in r.tensors or mid in r.vals or mid in r.file_names:
            mid += "_"
        t = _common(types[:MAX_HLS_INPUTS])
        r.set_act(r.emit("concat", names[:MAX_HLS_INPUTS], mid, {"out_type": t, "axis": 1}), mid)
        names, types = [mid] + names[MAX_HLS_INPUTS:], [t] + types[MAX_HLS_INPUTS:]
    r.set_act(r.emit("concat", names, out, {"out_type": _common(types), "axis": 1}), out)


def _common(types):
    """The type of a concatenation: the inputs' type when they agree, else their common type (exact)."""
    return types[0] if all(t == types[0] for t in types) else common_type(types)
