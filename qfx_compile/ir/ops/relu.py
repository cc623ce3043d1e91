"""``relu``: ``y = max(x, 0)``, no cast; the output type is the input type."""
from __future__ import annotations

import numpy as np

from .base import OpDef, type_keeps_input, shape_keeps_input


def run(node, inputs):
    (x, tx), = inputs
    return np.where(x > 0, x, 0).astype(x.dtype)


OP = OpDef("relu", __doc__, attrs={}, params={}, n_inputs=1, shape=shape_keeps_input, type=type_keeps_input, run=run)
