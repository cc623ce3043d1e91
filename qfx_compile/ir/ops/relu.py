"""``relu``: ``y = max(x, 0)``, no cast; the output type is the input type."""
from __future__ import annotations

import numpy as np

from .base import OpDef, cast_check


def shape(node, in_shapes):
    return tuple(in_shapes[0])


def type_rule(node, in_types):
    cast_check(node, in_types[0])
    return in_types[0]


def run(node, inputs):
    (x, tx), = inputs
    return np.where(x > 0, x, 0).astype(x.dtype)


OP = OpDef("relu", __doc__, attrs={}, params={}, n_inputs=1, shape=shape, type=type_rule, run=run)
