"""``pad``: zero padding of a ``(C, H, W)`` map, no arithmetic; attr ``pads`` (top, left, bottom, right).

The output is ``(C, top + H + bottom, left + W + right)`` with the input at (top, left); the
output type is the input type (0 is a value of every type). The padding order is the one rule of
``fixed.window`` (ONNX ``Pad`` pads are read with ``pads_from_onnx``).
"""
from __future__ import annotations

import numpy as np

from ...fixed.window import pads_from_onnx
from .base import OpDef, OpError, pads4, type_keeps_input
from . import tokens
from ...backend.layerplan import stream_cost


def shape(node, in_shapes):
    s = in_shapes[0]
    if len(s) != 3:
        raise OpError(f"node {node.name!r} (pad) needs a (C, H, W) input, got shape {tuple(s)}")
    t, l, b, r = pads4(node)
    return (s[0], s[1] + t + b, s[2] + l + r)


def run(node, inputs):
    (x, tx), = inputs
    t, l, b, r = pads4(node)
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))


# ---- HLS plan
def hls(ctx):
    """``qfx::zeropad2d``: one output element per cycle, inputs read once."""
    t, l, b, r = pads4(ctx.node)
    c, h, w = ctx.chw()
    return ctx.layer("zeropad2d", stream_cost(ctx.output.count),
                     types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp())],
                     sizes=[("in_height", h), ("in_width", w), ("n_chan", c), ("pad_top", t), ("pad_left", l),
                            ("pad_bottom", b), ("pad_right", r)])


OP = OpDef("pad", __doc__, attrs={"pads": "(top, left, bottom, right)"}, params={}, n_inputs=1,
           shape=shape, type=type_keeps_input, run=run, hls=hls,
           tokens=lambda node, ins, out: tokens.padded(ins[0], pads4(node)))


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import STRING as _STRING, onnx_import  # noqa: E402


@onnx_import("Pad", max_inputs=3)
def import_pad(r, out):
    """``Pad`` (mode constant, value 0) of the H and W axes of a typed (N, C, H, W) tensor: a ``pad``."""
    if r.attr("mode", _STRING, "constant") != "constant":
        raise r.err(f"only constant (zero) padding is supported, got mode {r.attr('mode', _STRING)!r}")
    x = r.typed_act(0)
    if len(r.cur.input) < 2 or not r.cur.input[1]:
        raise r.err("Pad needs its pads input (a constant)")
    pads = [int(v) for v in np.asarray(r.const(r.cur.input[1], "pads")).reshape(-1).tolist()]
    if len(r.cur.input) > 2 and r.cur.input[2]:
        v = np.asarray(r.const(r.cur.input[2], "constant_value")).reshape(-1)
        if v.size and float(v[0]) != 0.0:
            raise r.err(f"only zero padding is supported, got constant_value {float(v[0])!r}")
    if len(x.shape) != 3:
        raise r.err(f"Pad of a tensor of shape {x.shape}: only (N, C, H, W) maps are supported")
    try:
        (n0, n1), (c0, c1), (t, b), (left, right) = pads_from_onnx(pads, 4)
    except ValueError as e:
        raise r.err(f"{e} (negative pads crop; only padding is supported)") from None
    if n0 or n1 or c0 or c1:
        raise r.err(f"only the H and W axes may be padded, got pads {pads}")
    r.set_act(r.emit("pad", [x.name], out, {"pads": (t, left, b, right)}), out)
