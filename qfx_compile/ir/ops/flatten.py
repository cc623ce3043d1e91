"""``flatten``: ``(C, H, W) -> (C*H*W,)`` in PyTorch (row-major) order, no arithmetic."""
from __future__ import annotations

import math

from .base import OpDef, type_keeps_input


def shape(node, in_shapes):
    return (math.prod(in_shapes[0]),)


def run(node, inputs):
    (x, tx), = inputs
    return x.reshape(x.shape[0], -1)


OP = OpDef("flatten", __doc__, attrs={}, params={}, n_inputs=1, shape=shape, type=type_keeps_input, run=run)
