"""``clip``: ``y = min(max(x, lo), hi)``, no cast; ``lo``/``hi`` are int mantissas of the input type."""
from __future__ import annotations

import numpy as np

from .base import OpDef, OpError, attr, type_keeps_input


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


OP = OpDef("clip", __doc__, attrs={"lo": "int", "hi": "int"}, params={}, n_inputs=1,
           shape=shape, type=type_keeps_input, run=run)
