"""``argmax``: ``y = min{i : x_i = max_j x_j}`` over a vector ``(N,)``: the index of the first largest value.

Output shape ``(1,)``, type ``attrs["out_type"]`` (an unsigned integer type that holds ``N - 1``). No
arithmetic: comparisons of values of one type. A final Softmax compiled with ``--softmax argmax``
becomes this op (softmax is strictly increasing, so the first largest logit is the first most probable
class), and so does an ONNX ``ArgMax`` over the features.
"""
from __future__ import annotations

import numpy as np

from ...fixed.types import FixedType
from .base import OpDef, OpError, cast_check, out_type
from . import tokens


def index_type(n: int) -> FixedType:
    """The unsigned integer type of an index into ``n`` values."""
    w = max(1, int(n - 1).bit_length())
    return FixedType(w, w, False)


def shape(node, in_shapes):
    s = tuple(in_shapes[0])
    if len(s) != 1 or s[0] < 1:
        raise OpError(f"node {node.name!r} (argmax) needs a vector (N,) input, got {s}")
    t = out_type(node)
    if t.frac_bits != 0 or t.raw_min > 0 or t.raw_max < s[0] - 1:
        raise OpError(f"node {node.name!r} (argmax): out_type {t} cannot hold the index {s[0] - 1}")
    return (1,)


def type_rule(node, in_types):
    cast_check(node, in_types[0])
    return out_type(node)


def run(node, inputs):
    (x, tx), = inputs
    if x.dtype == object:  # Python ints: first index of the maximum
        return np.array([[max(range(x.shape[1]), key=lambda i, r=row: (r[i], -i))] for row in x], dtype=np.int64)
    return np.argmax(x, axis=1).astype(np.int64).reshape(-1, 1)


# ---- HLS plan
def hls(ctx):
    """``qfx::argmax`` (hls_lib/qfx_argmax.h): one comparison per input value, one index written."""
    from ...backend.layerplan import stream_cost
    n = ctx.inputs[0].count
    return ctx.layer("argmax", stream_cost(n + 1), types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp())],
                     sizes=[("n", n)])


OP = OpDef("argmax", __doc__, attrs={"out_type": "FixedType"}, params={}, n_inputs=1, shape=shape, type=type_rule,
           run=run, **({"hls": hls} if "hls" in OpDef.__dataclass_fields__ else {}),
           tokens=tokens.all_first)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import INT as _INT, onnx_import  # noqa: E402


@onnx_import("ArgMax", max_inputs=1)
def import_argmax(r, out):
    """``ArgMax(axis=1 or -1, select_last_index=0)`` of a feature vector: the ``argmax`` op."""
    if r.attr("axis", _INT, 0) not in (1, -1):
        raise r.err("only an ArgMax over the features (axis 1) of an (N, F) tensor is supported")
    if r.attr("select_last_index", _INT, 0):
        raise r.err("select_last_index=1 is not supported (the first largest value is taken)")
    r.argmax(out)
