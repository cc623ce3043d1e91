"""``relu``: ``y = max(x, 0)``, no cast; the output type is the input type."""
from __future__ import annotations

import numpy as np

from .base import OpDef, type_keeps_input, shape_keeps_input
from . import tokens
from ...backend.layerplan import stream_cost


def run(node, inputs):
    (x, tx), = inputs
    return np.where(x > 0, x, 0).astype(x.dtype)


# ---- HLS plan
def hls(ctx):
    """``qfx::relu``: one element per cycle."""
    return ctx.layer("relu", stream_cost(ctx.inputs[0].count),
                     types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp())], sizes=[("n", ctx.inputs[0].count)])


OP = OpDef("relu", __doc__, attrs={}, params={}, n_inputs=1, shape=shape_keeps_input, type=type_keeps_input, run=run, hls=hls, order_free=True,
           tokens=tokens.per_element)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import onnx_import  # noqa: E402


@onnx_import("Relu", max_inputs=1)
def import_relu(r, out):
    """``Relu``: a ``relu`` node; on a pending exact result, moved after its cast; on an exact real, in its chain."""
    if r.lazy_relu(out):  # a pending exact result (moved after its cast) or an exact real (in its chain)
        return
    x = r.typed_act(0)
    r.set_act(r.emit("relu", [x.name], out), out)
