"""``maxpool``: max over each window, no cast; attrs ``kernel``, ``stride``, ``pads`` (padding never wins)."""
from __future__ import annotations

from .base import OpDef, int_pair, pads4, window_out, type_keeps_input
from . import tokens
from .conv2d import patches
from ...backend.layerplan import stream_cost


def geometry(node):
    k = int_pair(node, "kernel")
    return k, int_pair(node, "stride", k), pads4(node)


def shape(node, in_shapes):
    k, s, p = geometry(node)
    ho, wo = window_out(node, in_shapes[0], k, s, p)
    return (in_shapes[0][0], ho, wo)


def run(node, inputs):
    (x, tx), = inputs
    k, s, p = geometry(node)
    win = patches(x, k, s, p, fill=tx.raw_min - 1 if any(p) else 0)
    return win.max(axis=(2, 3))


# ---- HLS plan
def window_sizes(ctx, k, s, p):
    """Config sizes of a pooling window over the input (shared with ``avgpool``)."""
    c, h, w = ctx.chw()
    _, oh, ow = ctx.chw(ctx.output)
    pt, pl, pb, pr = p
    return [("in_height", h), ("in_width", w), ("n_chan", c), ("pool_height", k[0]), ("pool_width", k[1]),
            ("stride_height", s[0]), ("stride_width", s[1]), ("pad_top", pt), ("pad_left", pl),
            ("pad_bottom", pb), ("pad_right", pr), ("out_height", oh), ("out_width", ow)]


def hls(ctx):
    """``qfx::maxpool2d``: a line-buffered window, one input element per cycle."""
    k, s, p = geometry(ctx.node)
    return ctx.layer("maxpool2d", stream_cost(ctx.inputs[0].count),
                     types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp())], sizes=window_sizes(ctx, k, s, p))


def token_rule(node, in_shapes, out_shape):
    """qfx::pool_windows (shared with avgpool): ``n_chan`` writes per window."""
    kernel, stride, pads = geometry(node)
    return tokens.window(in_shapes[0], kernel, stride, pads, writes=in_shapes[0][0])


OP = OpDef("maxpool", __doc__, attrs={"kernel": "(kh, kw)", "stride": "(sh, sw)",
                                      "pads": "(top, left, bottom, right)"},
           params={}, n_inputs=1, shape=shape, type=type_keeps_input, run=run, hls=hls,
           tokens=token_rule)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import INT as _INT, onnx_import  # noqa: E402


@onnx_import("MaxPool", max_inputs=1, outputs=2)
def import_maxpool(r, out):
    """``MaxPool``: on a typed tensor, or on the codes of an exact real whose chain is non-decreasing."""
    if r.attr("storage_order", _INT, 0) != 0 or len(r.cur.output) > 1 and r.cur.output[1]:
        raise r.err("MaxPool indices output is not supported")
    k, s, p = r.window_attrs()
    if max(p[0], p[2]) >= k[0] or max(p[1], p[3]) >= k[1]:
        raise r.err(f"MaxPool pads {list(p)} must be smaller than the kernel {list(k)} (a window of padding "
                    f"only has no maximum); use smaller pads")
    attrs = {"kernel": k, "stride": s, "pads": p}
    xr = r.real_input(0)
    if xr is not None:
        return r.real_map(out, xr, "maxpool", attrs)
    x = r.typed_act(0)
    r.set_act(r.emit("maxpool", [x.name], out, attrs), out)
