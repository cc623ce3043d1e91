"""``table``: ``y = T[x - raw_min(x's type)]``, a lookup of the input mantissa; no arithmetic.

Param ``table`` (a Const of ``2**W`` entries, ``W`` the input width, one binary point) holds
the output mantissas, its type is the output type. Attr ``fn`` names the function the table
was built from (``sigmoid``, ``tanh``, ``hardsigmoid``, ``hardswish``, ``leaky_relu``,
``hard_sigmoid``; rule and exactness proof: ``fixed/tables.py``); the IR never recomputes a
given table: the table is the semantics. A node read from a standard ONNX float activation
(``Sigmoid``, ``Tanh``, ``HardSigmoid``, ``HardSwish``, ``LeakyRelu``) followed by a
fixed-point cast has no table until that cast gives it ``out_type``: the type rule then builds
``T[j] = cast(f(x_j), out_type)`` from ``fn`` (and attr ``slope``) with the same rule.
"""
from __future__ import annotations

import numpy as np

from ...fixed.tables import MAX_TABLE_BITS, TABLE_FUNCTIONS, table_raw
from ..graph import Const
from .base import OpDef, OpError, attr, cast_check, out_type
from . import tokens
from ...backend.layerplan import stream_cost


def _table(node) -> Const:
    t = node.params.get("table")
    if not isinstance(t, Const) or t.raw.ndim != 1 or t.int_bits is not None:
        raise OpError(f"node {node.name!r} (table): param 'table' must be a 1-D Const with one binary point")
    return t


def shape(node, in_shapes):
    fn = attr(node, "fn", "table")
    if not isinstance(fn, str):
        raise OpError(f"node {node.name!r} (table): fn must be a string, got {fn!r}")
    if "table" in node.params:
        _table(node)
    elif fn not in TABLE_FUNCTIONS:
        raise OpError(f"node {node.name!r} (table): no param 'table' and no known fn to build it from")
    return tuple(in_shapes[0])


def type_rule(node, in_types):
    tx = in_types[0]
    cast_check(node, tx)
    if "table" not in node.params:  # a float activation of the file, made exact once its cast is known
        if tx.width > MAX_TABLE_BITS:
            raise OpError(f"node {node.name!r} (table): the input type {tx} has more than {MAX_TABLE_BITS} bits; "
                          f"a table has 2**W entries: quantize the input to fewer bits first")
        t_out = out_type(node)
        try:
            node.params["table"] = Const(table_raw(attr(node, "fn"), tx, t_out, node.attrs.get("slope")), t_out)
        except ValueError as e:
            raise OpError(f"node {node.name!r} (table): {e}") from None
    t = _table(node)
    if tx.width > MAX_TABLE_BITS or t.raw.shape[0] != 1 << tx.width:
        raise OpError(f"node {node.name!r} (table): the table has {t.raw.shape[0]} entries, the input type {tx} "
                      f"has {1 << tx.width} codes (a table is indexed by every code of its input type, "
                      f"W <= {MAX_TABLE_BITS})")
    raw = np.asarray(t.raw)
    if raw.size and (int(raw.min()) < t.type.raw_min or int(raw.max()) > t.type.raw_max):
        raise OpError(f"node {node.name!r} (table): an entry lies outside its type {t.type}")
    return t.type


def run(node, inputs):
    (x, tx), = inputs
    t = _table(node)
    return np.asarray(t.raw, dtype=np.int64)[np.asarray(x, dtype=np.int64) - tx.raw_min]


# ---- HLS plan
def hls(ctx):
    """``qfx::table_lookup``: one ROM read per element (``table`` indexed by the input's code)."""
    t = _table(ctx.node)
    n = 1 << ctx.x.width
    arr = ctx.const(f"table ({ctx.node.attrs.get('fn', 'table')})", "table", t, f"[{n}]")
    return ctx.layer("table_lookup", stream_cost(ctx.inputs[0].count),
                     types=[("in_t", ctx.x.cpp()), ("out_t", ctx.y.cpp()), ("table_raw_t", arr.ctype)],
                     sizes=[("n", ctx.inputs[0].count), ("entries", n)], arrays=[arr],
                     n_params=n, params_bits=n * t.type.width)


OP = OpDef("table", __doc__, attrs={"fn": "str?", "out_type": "FixedType? (table built from fn)",
                                    "slope": "Fraction or (alpha, beta)?"}, params={"table": "(2**W_in,)?"}, n_inputs=1,
           shape=shape, type=type_rule, run=run, hls=hls, reads_codes=True, order_free=True,
           tokens=tokens.per_element)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import FLOAT, STRING, onnx_import  # noqa: E402


@onnx_import("Table", domain="qfx", max_inputs=2, label="qfx.Table")
def import_table(r, out):
    """``qfx.Table(X, FixedPoint(T))``: the table's values and type come from the file (docs/semantics.md)."""
    from ...fixed.tables import TABLE_FUNCTIONS
    x = r.typed_act(0)
    fn = r.attr("function", STRING, "table")
    if fn not in TABLE_FUNCTIONS + ("table",):
        raise r.err(f"qfx.Table function {fn[:40]!r} is unknown; known: {', '.join(TABLE_FUNCTIONS)}")
    c = r.fixed_const(1, "table")
    if c.raw.ndim != 1 or c.raw.shape[0] != 1 << x.type.width or x.type.width > MAX_TABLE_BITS:
        raise r.err(f"the table has shape {list(c.raw.shape)}; a table over the input type {x.type} needs "
                    f"{1 << min(x.type.width, 62)} entries (one per code, W <= {MAX_TABLE_BITS})")
    table = r.to_const(c, "table")
    if table.int_bits is not None:
        raise r.err("the table must have one binary point")
    r.set_act(r.emit("table", [x.name], out, {"fn": fn}, {"table": table}), out)


#: standard ONNX float activations -> table function names
_STD = {"Sigmoid": "sigmoid", "Tanh": "tanh", "HardSigmoid": "hard_sigmoid", "HardSwish": "hardswish",
        "LeakyRelu": "leaky_relu"}


@onnx_import(*_STD, max_inputs=1)
def import_float_activation(r, out):
    """A standard float activation of a fixed-point input: exact once the next cast (FixedPoint, or a
    power-of-two Quant) gives its output type: a pending ``table`` built from the exact function values.
    ``HardSigmoid``'s ``alpha``/``beta`` and ``LeakyRelu``'s ``alpha`` are taken at their exact (float32)
    values; ``HardSwish`` is ``x * HardSigmoid(x)`` with ``alpha = 1/6``, ``beta = 1/2`` exactly (ONNX spec)."""
    from fractions import Fraction
    op = r.cur.op_type
    x = r.typed_act(0)
    if op == "LeakyRelu" and x.type.width > MAX_TABLE_BITS:  # wide input: a multiplier, not a table
        from .leaky_relu import slope_const
        try:
            a = slope_const(Fraction(r.attr("alpha", FLOAT, 0.01)))
        except (ValueError, OverflowError) as e:
            raise r.err(f"LeakyRelu alpha: {e}") from None
        return r.pending(out, "leaky_relu", x, {}, {"slope": a})
    if x.type.width > MAX_TABLE_BITS:
        raise r.err(f"{op} of a {x.type} input: an exact activation is a table of 2**W entries, W <= "
                    f"{MAX_TABLE_BITS}; quantize its input to fewer bits")
    fn, slope = _STD[op], None
    try:
        if op == "LeakyRelu":
            slope = Fraction(r.attr("alpha", FLOAT, 0.01))
        elif op == "HardSigmoid":
            slope = (Fraction(r.attr("alpha", FLOAT, 0.2)), Fraction(r.attr("beta", FLOAT, 0.5)))
    except (ValueError, OverflowError):
        raise r.err(f"{op}: alpha/beta must be finite numbers") from None
    attrs = {"fn": fn} if slope is None else {"fn": fn, "slope": slope}
    r.pending(out, "table", x, attrs, {})
