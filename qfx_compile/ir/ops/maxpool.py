"""``maxpool``: max over each window, no cast; attrs ``kernel``, ``stride``, ``pads`` (padding never wins)."""
from __future__ import annotations

from .base import OpDef, int_pair, pads4, window_out, type_keeps_input
from .conv2d import patches


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


OP = OpDef("maxpool", __doc__, attrs={"kernel": "(kh, kw)", "stride": "(sh, sw)",
                                      "pads": "(top, left, bottom, right)"},
           params={}, n_inputs=1, shape=shape, type=type_keeps_input, run=run)
