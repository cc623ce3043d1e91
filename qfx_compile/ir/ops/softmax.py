"""``softmax`` over a vector ``(N,)``: ``d_i = x_i - max x`` (mantissas), ``e_i = E[d_i + span]``,
``S = sum e_i`` (exact), ``y_i = cast(e_i / S, out_type)`` (the exact quotient, rounded once).

Param ``exp_table`` (Const, ``2**W`` entries, unsigned type ``exp_t``): ``E[k] = cast(exp((k - span) *
2**-F_in), exp_t)``, ``span = raw_max - raw_min`` of the input type (rule and proof: ``fixed/tables.py``;
the IR takes the table as given). Attr ``out_type``. ``S`` has the exact type :func:`sum_type`.
"""
from __future__ import annotations

import numpy as np

from ...fixed.tables import MAX_TABLE_BITS, div_cast, div_shift
from ...fixed.types import FixedType
from ..graph import Const
from .base import OpDef, OpError, out_type, type_casts_to_out_type
from . import tokens
from ...backend.estimate import LayerShape


def _exp_table(node) -> Const:
    t = node.params.get("exp_table")
    if not isinstance(t, Const) or t.raw.ndim != 1 or t.int_bits is not None or t.type.signed:
        raise OpError(f"node {node.name!r} (softmax): param 'exp_table' must be a 1-D unsigned Const with one "
                      f"binary point")
    raw = np.asarray(t.raw)
    if raw.size == 0 or int(raw[-1]) <= 0 or int(raw.min()) < 0 or int(raw.max()) > t.type.raw_max:
        raise OpError(f"node {node.name!r} (softmax): exp_table entries must lie in {t.type} and exp(0) "
                      f"(the last entry) must be > 0")
    return t


def shape(node, in_shapes):
    s = tuple(in_shapes[0])
    if len(s) != 1:
        raise OpError(f"node {node.name!r} (softmax) needs a vector (N,) input (softmax over the last axis of "
                      f"(batch, N)), got shape {s}")
    _exp_table(node)
    return s


def type_rule(node, in_types):
    tx = in_types[0]
    t = type_casts_to_out_type(node, in_types)
    e = _exp_table(node)
    if tx.width > MAX_TABLE_BITS or e.raw.shape[0] != 1 << tx.width:
        raise OpError(f"node {node.name!r} (softmax): exp_table has {e.raw.shape[0]} entries, the input type "
                      f"{tx} needs {1 << tx.width} (one per mantissa difference, W <= {MAX_TABLE_BITS})")
    return t


def sum_type(exp_t: FixedType, n: int) -> FixedType:
    """The exact type of ``S``: ``n`` entries of ``exp_t``."""
    return FixedType.for_raw_range(0, exp_t.raw_max * n, exp_t.frac_bits, signed=False)


def run(node, inputs):
    (x, tx), = inputs
    e_tab = np.asarray(_exp_table(node).raw, dtype=np.int64)
    span = tx.raw_max - tx.raw_min
    x = np.asarray(x, dtype=np.int64)
    e = e_tab[x - x.max(axis=1, keepdims=True) + span]
    s = e.astype(object).sum(axis=1, keepdims=True)
    return np.asarray(div_cast(e, np.broadcast_to(s, e.shape), out_type(node)))


# ---- HLS plan
def hls(ctx):
    """``qfx::softmax``: buffer the vector, max, exp lookups, exact sum, one exact division per output."""
    e = _exp_table(ctx.node)
    n = ctx.inputs[0].count
    acc = sum_type(e.type, n)
    k = div_shift(ctx.y)
    num_bits = e.type.width + k
    if num_bits > 64 or acc.width > 64:
        raise ctx.error(f"the division e * 2^{k} / S needs {num_bits} bits (at most 64): use fewer "
                        f"fractional bits in the exp type {e.type} or the output type {ctx.y}")
    entries = 1 << ctx.x.width
    # cost: read n, then n outputs (each a table read and a pipelined division)
    cost = LayerShape("stream", fixed_cycles=3 * n)
    arr = ctx.const("exp table", "exp_table", e, f"[{entries}]")
    return ctx.layer("softmax", cost,
                     types=[("in_t", ctx.x.cpp()), ("exp_t", e.type.cpp()), ("sum_t", acc.cpp()),
                            ("out_t", ctx.y.cpp()), ("exp_raw_t", arr.ctype)],
                     sizes=[("n", n), ("entries", entries), ("div_shift", k), ("num_bits", num_bits)],
                     arrays=[arr], acc=acc,
                     n_params=entries, params_bits=entries * e.type.width)


OP = OpDef("softmax", __doc__, attrs={"out_type": "FixedType"},
           params={"exp_table": "(2**W_in,)"}, n_inputs=1, shape=shape, type=type_rule, run=run, casts=True,
           hls=hls, reads_codes=True, order_free=True, tokens=tokens.all_first)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import INT, onnx_import  # noqa: E402


@onnx_import("Softmax", domain="qfx", max_inputs=2, label="qfx.Softmax")
def import_softmax(r, out):
    """``qfx.Softmax(X, FixedPoint(E)) -> FixedPoint(out)``: a pending ``softmax`` that the cast completes."""
    x = r.typed_act(0)
    axis = r.attr("axis", INT, -1)
    if axis not in (-1, len(x.shape)):
        raise r.err(f"qfx.Softmax axis {axis}: only the last axis (-1) of a (batch, N) tensor is supported")
    if len(x.shape) != 1:
        raise r.err(f"qfx.Softmax needs a (batch, N) input, got (batch, {', '.join(map(str, x.shape))}); "
                    f"flatten first")
    c = r.fixed_const(1, "exp table")
    if c.raw.ndim != 1 or x.type.width > MAX_TABLE_BITS or c.raw.shape[0] != 1 << x.type.width:
        raise r.err(f"the exp table has shape {list(c.raw.shape)}; an input of type {x.type} needs "
                    f"{1 << min(x.type.width, 62)} entries (W <= {MAX_TABLE_BITS})")
    if c.signed:
        raise r.err("the exp table must be unsigned (ap_ufixed): exp is positive")
    r.pending(out, "softmax", x, {}, {"exp_table": r.to_const(c, "exp table")})
