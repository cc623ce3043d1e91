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


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import INT as _INT, onnx_import  # noqa: E402


@onnx_import("Flatten", max_inputs=1)
def import_flatten(r, out):
    """``Flatten(axis=1)``: a ``flatten`` (of a typed tensor or of an exact real's codes)."""
    if r.attr("axis", _INT, 1) != 1:
        raise r.err("only Flatten(axis=1) is supported")
    r.flatten(out)
