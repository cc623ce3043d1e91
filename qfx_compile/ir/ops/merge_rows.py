"""``merge_rows``: ``y[c] = x_{parts[c]}[k]``, ``k`` the number of ``c' < c`` with ``parts[c'] = parts[c]``; no cast.

Interleaves the channels of its inputs (feature maps ``(C_i, H, W)`` of one ``H, W``, or vectors
``(C_i,)``) into one tensor of ``len(parts)`` channels: output channel ``c`` is the next channel, in
order, of input ``parts[c]``. The inputs and the output have one type. The backend writes it where it
splits a layer with mixed rows (Mix and Match: fixed-point rows on multipliers, K-hot rows in shift-add)
into two cores (``backend.lower.split_mixed_rows``): it puts their rows back in the layer's order.
"""
from __future__ import annotations

import numpy as np

from .base import OpDef, OpError, attr, cast_check
from . import tokens
from ...backend.layerplan import stream_cost

#: inputs of one hls_lib ``qfx::merge_rows`` call (hls_lib/qfx_merge_rows.h)
N_INPUTS = 2


def parts(node) -> tuple[int, ...]:
    p = attr(node, "parts")
    if (not isinstance(p, (tuple, list)) or not p
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < N_INPUTS
                       for v in p)):
        raise OpError(f"node {node.name!r} (merge_rows): parts must be a non-empty tuple of input indices "
                      f"0..{N_INPUTS - 1}, one per output channel")
    return tuple(int(v) for v in p)


def shape(node, in_shapes):
    p = parts(node)
    ranks = {len(s) for s in in_shapes}
    if ranks not in ({1}, {3}) or len({tuple(s[1:]) for s in in_shapes}) != 1:
        raise OpError(f"node {node.name!r} (merge_rows): inputs must be (C, H, W) maps of one size or vectors, "
                      f"got {[tuple(s) for s in in_shapes]}")
    counts = [p.count(k) for k in range(len(in_shapes))]
    if counts != [int(s[0]) for s in in_shapes]:
        raise OpError(f"node {node.name!r} (merge_rows): parts takes {counts} channels of the inputs, which "
                      f"have {[int(s[0]) for s in in_shapes]}")
    return (len(p),) + tuple(in_shapes[0][1:])


def type_rule(node, in_types):
    for t in in_types:
        cast_check(node, t)
    if any(t != in_types[0] for t in in_types):
        raise OpError(f"node {node.name!r} (merge_rows): the inputs must have one type, got "
                      f"{', '.join(str(t) for t in in_types)}")
    return in_types[0]


def source_index(p: tuple[int, ...]) -> np.ndarray:
    """Per output channel, its channel in the inputs' concatenation (input 0's channels first)."""
    p = np.asarray(p)
    start = np.concatenate([[0], np.cumsum([np.count_nonzero(p == k) for k in range(N_INPUTS)])])
    rank = np.zeros(len(p), dtype=np.int64)
    for k in range(N_INPUTS):
        rank[p == k] = np.arange(np.count_nonzero(p == k))
    return start[p] + rank


def run(node, inputs):
    xs = [x for x, _ in inputs]
    if any(x.dtype == object for x in xs):
        xs = [x.astype(object) for x in xs]
    return np.concatenate(xs, axis=1)[:, source_index(parts(node))]


# ---- HLS plan
def hls(ctx):
    """``qfx::merge_rows``: per pixel, each output channel read from its input's stream (one per cycle)."""
    p = parts(ctx.node)
    c, h, w = ctx.chw(ctx.output)
    return ctx.layer("merge_rows", stream_cost(ctx.output.count),
                     types=[("in0_t", ctx.inputs[0].type.cpp()), ("in1_t", ctx.inputs[1].type.cpp()),
                            ("out_t", ctx.y.cpp())],
                     sizes=[("n_pixels", h * w), ("n_chan", c)],
                     arrays=[ctx.int_array("parts", "part", p, "[n_chan]")])


OP = OpDef("merge_rows", __doc__, attrs={"parts": "tuple: per output channel, the input it comes from"},
           params={}, n_inputs=N_INPUTS, shape=shape, type=type_rule, run=run, hls=hls,
           tokens=lambda node, ins, out: tokens.interleave(int(np.prod(out[1:])), parts(node)))
