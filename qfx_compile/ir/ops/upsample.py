"""``upsample``: nearest-neighbour upsampling of a ``(C, H, W)`` map by integer factors, no arithmetic.

Attr ``scale`` (sh, sw): ``y[c][i][j] = x[c][i // sh][j // sw]``, output ``(C, H*sh, W*sw)``; the
output type is the input type.
"""
from __future__ import annotations

import numpy as np

from .base import OpDef, OpError, int_pair, type_keeps_input
from . import tokens
from ...backend.layerplan import stream_cost


def scale(node) -> tuple[int, int]:
    s = int_pair(node, "scale")
    if min(s) < 1:
        raise OpError(f"node {node.name!r} (upsample): scale factors must be >= 1, got {s}")
    return s


def shape(node, in_shapes):
    s = in_shapes[0]
    if len(s) != 3:
        raise OpError(f"node {node.name!r} (upsample) needs a (C, H, W) input, got shape {tuple(s)}")
    sh, sw = scale(node)
    return (s[0], s[1] * sh, s[2] * sw)


def run(node, inputs):
    (x, tx), = inputs
    sh, sw = scale(node)
    return np.repeat(np.repeat(x, sh, axis=2), sw, axis=3)


# ---- HLS plan
def hls(ctx):
    """``qfx::upsample2d``: one input row buffered, one output element per cycle."""
    sh, sw = scale(ctx.node)
    c, h, w = ctx.chw()
    return ctx.layer("upsample2d", stream_cost(ctx.output.count),
                     types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp())],
                     sizes=[("in_height", h), ("in_width", w), ("n_chan", c), ("scale_height", sh),
                            ("scale_width", sw)])


OP = OpDef("upsample", __doc__, attrs={"scale": "(sh, sw)"}, params={}, n_inputs=1,
           shape=shape, type=type_keeps_input, run=run, hls=hls,
           tokens=lambda node, ins, out: tokens.repeated(ins[0], scale(node)))


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import INTS as _INTS, STRING as _STRING, onnx_import  # noqa: E402

#: (coordinate_transformation_mode, nearest_mode) pairs that are ``x[i // s]`` for every integer scale s
_EXACT_NEAREST = {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                  ("half_pixel", "round_prefer_ceil")}


@onnx_import("Upsample", domain="qfx", max_inputs=1, label="qfx.Upsample")
def import_qfx_upsample(r, out):
    """``qfx.Upsample(x)`` with ``scales`` (sh, sw): an ``upsample``."""
    s = r.attr("scales", _INTS, required=True)
    if len(s) != 2 or min(s) < 1:
        raise r.err(f"scales must be two ints >= 1, got {s}")
    x = r.typed_act(0)
    r.set_act(r.emit("upsample", [x.name], out, {"scale": (int(s[0]), int(s[1]))}), out)


@onnx_import("Resize", max_inputs=4)
def import_resize(r, out):
    """``Resize`` (mode nearest, integer scales on H and W): an ``upsample``."""
    mode = r.attr("mode", _STRING, "nearest")
    ctm = r.attr("coordinate_transformation_mode", _STRING, "half_pixel")
    nm = r.attr("nearest_mode", _STRING, "round_prefer_floor")
    if mode != "nearest" or (ctm, nm) not in _EXACT_NEAREST:
        raise r.err(f"only nearest-neighbour resizing that repeats pixels (mode nearest with "
                    f"coordinate_transformation_mode/nearest_mode one of {sorted(_EXACT_NEAREST)}) is supported, "
                    f"got {mode}/{ctm}/{nm}")
    x = r.typed_act(0)
    if len(x.shape) != 3:
        raise r.err(f"Resize of a tensor of shape {x.shape}: only (N, C, H, W) maps are supported")
    ins = list(r.cur.input) + [""] * 4
    if ins[3]:
        sizes = [int(v) for v in np.asarray(r.const(ins[3], "sizes")).reshape(-1).tolist()]
        full = [1, *x.shape]
        if len(sizes) != 4 or sizes[:2] != full[:2] or any(o % i for o, i in zip(sizes[2:], full[2:])):
            raise r.err(f"sizes {sizes} are not integer multiples of the H and W of {full}")
        s = (sizes[2] // full[2], sizes[3] // full[3])
    elif ins[2]:
        sc = [float(v) for v in np.asarray(r.const(ins[2], "scales")).reshape(-1).tolist()]
        if len(sc) != 4 or sc[:2] != [1.0, 1.0] or any(v != int(v) or v < 1 for v in sc[2:]):
            raise r.err(f"scales {sc} must be [1, 1, sh, sw] with integer sh, sw >= 1")
        s = (int(sc[2]), int(sc[3]))
    else:
        raise r.err("Resize needs constant scales or sizes")
    r.set_act(r.emit("upsample", [x.name], out, {"scale": s}), out)
