"""K-hot weights as shift-add code: terms, interval-typed adder trees, straight-line C++.

A K-hot weight mantissa is a sum of at most K signed powers of two, so every
product ``x * w`` is a sum of shifted copies of ``x`` (wiring, no multiplier).
For each output channel the backend sums the channel's terms with a balanced
adder tree (da4ml style). Every intermediate is declared with the SMALLEST
type that holds its exact value for every input of the input type: the
interval of each node is computed from the terms (a term ``+-2^e * x`` spans
``[x_min, x_max] * 2^e``), so no partial sum can round or overflow, and the
single cast to ``out_t`` at the end is the layer's one documented cast.

Small layers (at most :data:`STRAIGHT_LINE_MAX_TERMS` terms) are emitted as
straight-line code; larger ones go to hls_lib's ``dense_shiftadd`` /
``conv2d_shiftadd`` with (sign, shift) tables (:func:`sign_shift_tables`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..fixed.digits import digits_of
from ..fixed.types import FixedType

#: Layers with at most this many terms (nonzero CSD digits of all weights) become straight-line code.
STRAIGHT_LINE_MAX_TERMS = 2000


@dataclasses.dataclass(frozen=True)
class Term:
    index: int   # flat input index (dense: n_in; conv: (ky*KW + kx)*C + c)
    sign: int    # +1 or -1
    exp: int     # the term is sign * 2**exp * x[index] (absolute exponent of the value)


def layer_terms(raw: np.ndarray, frac: np.ndarray) -> list[list[Term]]:
    """CSD terms per output channel of weight mantissas ``raw`` ``[out][...]`` with per-channel ``frac``."""
    raw2 = np.asarray(raw).reshape(raw.shape[0], -1)
    fr = np.broadcast_to(np.asarray(frac).reshape(-1), (raw2.shape[0],))
    out = []
    for j in range(raw2.shape[0]):
        f = int(fr[j])
        row = []
        for i, m in enumerate(raw2[j].tolist()):
            for s, e in digits_of(int(m), "csd"):
                row.append(Term(i, int(s), int(e) - f))
        out.append(row)
    return out


def sign_shift_tables(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(sign, shift, n_terms) tables on the mantissas of ONE common weight type (hls_lib layout)."""
    flat = [int(m) for m in np.asarray(raw).reshape(-1).tolist()]
    digs = [digits_of(m, "csd") for m in flat]
    k = max([len(d) for d in digs] + [1])
    sign = np.zeros((len(flat), k), dtype=np.int64)
    shift = np.zeros((len(flat), k), dtype=np.int64)
    for i, d in enumerate(digs):
        for t, (s, e) in enumerate(d):
            sign[i, t], shift[i, t] = s, e
    return sign.reshape(-1), shift.reshape(-1), k


# ------------------------------------------------------------ interval nodes
@dataclasses.dataclass
class Node:
    """One value of the tree: ``expr`` equals ``sum_i coef[i] * m_x[i] * 2**-f`` (m_x: input mantissas).

    ``neg``: the expression holds the NEGATED signed sum of its terms (so that a subtree of
    negative terms needs no negation: the parent subtracts it). The interval [lo, hi] of the
    mantissa at ``f`` is exact and tight: the inputs are independent, so each bound is reached
    by putting every input at its minimum or maximum according to its coefficient's sign.
    """
    expr: str
    coef: dict
    f: int
    neg: bool
    lo: int = 0
    hi: int = 0

    def at(self, f: int) -> dict:
        return {i: c << (f - self.f) for i, c in self.coef.items()}


def _bounds(coef: dict, x_t: FixedType) -> tuple[int, int]:
    lo = sum(c * (x_t.raw_min if c > 0 else x_t.raw_max) for c in coef.values())
    hi = sum(c * (x_t.raw_max if c > 0 else x_t.raw_min) for c in coef.values())
    return lo, hi


def _type_of(lo: int, hi: int, f: int) -> FixedType:
    return FixedType.for_raw_range(lo, hi, f)


def _combine(a: dict, b: dict, sb: int) -> dict:
    out = dict(a)
    for i, c in b.items():
        v = out.get(i, 0) + sb * c
        if v:
            out[i] = v
        else:
            out.pop(i, None)
    return out


@dataclasses.dataclass
class Declared:
    """An intermediate the code declares: its name, type, and exact value as input coefficients."""
    name: str
    type: FixedType
    coef: dict     # input index -> integer coefficient of m_x at frac f (value = sum coef*m_x * 2**-f)
    const: int     # constant mantissa added (the bias), at frac f
    f: int
    lo: int
    hi: int


@dataclasses.dataclass
class Channel:
    lines: list[str]
    adders: int
    adder_bits: int   # sum of the widths of every adder's result (LUT estimate)
    acc: FixedType | None
    depth: int
    declared: list[Declared]


def _int_t(t: FixedType) -> str:
    return f"ap_{'int' if t.signed else 'uint'}<{t.width}>"


def _fixed_t(t: FixedType) -> str:
    return f"{'ap_fixed' if t.signed else 'ap_ufixed'}<{t.width}, {t.int_bits}>"


def _aligned(expr: str, t: FixedType, shift: int) -> str:
    """``expr`` (a mantissa) converted to the result's integer type and moved ``shift`` places left."""
    cast = f"{_int_t(t)}({expr})"
    return f"({cast} << {shift})" if shift else cast


def channel_code(terms: list[Term], x_t: FixedType, leaf, bias_raw: int, b_t: FixedType, var: str,
                 y: str, b_expr: str) -> Channel:
    """Straight-line code for one output: ``y = cast(b + sum terms, out_t)`` through a balanced tree.

    Each intermediate ``v`` is declared as the integer mantissa (``ap_int<W>`` / ``ap_uint<W>``)
    of its smallest exact fixed-point type ``ap_[u]fixed<W, W-F>`` (named in a comment): the
    value is ``v * 2^-F``. A term ``+-2^e * x`` is x's mantissa on the grid ``F_x - e``
    (moving the binary point costs nothing); adding two nodes aligns the one on the coarser
    grid with a constant left shift (wiring). The arithmetic is modulo ``2^W``, which is exact
    because the result's interval fits ``W`` bits (the final value is the same whatever wraps
    on the way). Only the last line leaves the integers: ``y = ap_fixed(acc)``, the cast to out_t.
    ``leaf(index)`` spells the input's mantissa variable; ``var`` prefixes the intermediates.
    """
    nodes = []
    for t in sorted(terms, key=lambda t: (t.exp, t.index)):
        nodes.append(Node(leaf(t.index), {t.index: 1}, x_t.frac_bits - t.exp, t.sign < 0))
    lines: list[str] = []
    declared: list[Declared] = []
    adders = bits = 0
    level = 0

    def declare(name, expr_of, coef, f, const=0):
        lo, hi = _bounds(coef, x_t)
        lo, hi = lo + const, hi + const
        t = _type_of(lo, hi, f)
        lines.append(f"const {_int_t(t)} {name} = {expr_of(t)};  // {_fixed_t(t)}")
        declared.append(Declared(name, t, coef, const, f, lo, hi))
        return t, lo, hi

    while len(nodes) > 1:
        nxt = []
        for k in range(0, len(nodes) - 1, 2):
            a, b = nodes[k], nodes[k + 1]
            f = max(a.f, b.f)
            ca, cb = a.at(f), b.at(f)
            if a.neg == b.neg:          # (+a) + (+b), or -(a + b) kept as a + b
                first, op, second, coef, neg = a, "+", b, _combine(ca, cb, 1), a.neg
            elif b.neg:                 # a - b
                first, op, second, coef, neg = a, "-", b, _combine(ca, cb, -1), False
            else:                       # b - a
                first, op, second, coef, neg = b, "-", a, _combine(cb, ca, -1), False
            name = f"{var}_{level}_{k // 2}"
            t, lo, hi = declare(name, lambda t, p=first, q=second, op=op, f=f:
                                f"{_aligned(p.expr, t, f - p.f)} {op} {_aligned(q.expr, t, f - q.f)}", coef, f)
            adders += 1
            bits += t.width
            nxt.append(Node(name, coef, f, neg, lo, hi))
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
        level += 1
    if not nodes:
        lines.append(f"{y} = {b_expr};  // no nonzero weight: the bias alone")
        return Channel(lines, 0, 0, None, 0, declared)
    r = nodes[0]
    if bias_raw == 0 and not r.neg:
        acc_name, acc_f = r.expr, r.f
        lo, hi = _bounds(r.coef, x_t)
        acc_t = _type_of(lo, hi, r.f)
        if not declared:   # one term, no bias: the input's mantissa on the term's grid
            acc_t = FixedType(x_t.width, x_t.width - r.f, x_t.signed)
    else:
        f = max(r.f, b_t.frac_bits)
        bv = bias_raw << (f - b_t.frac_bits)
        cr = r.at(f)
        coef = {i: -c for i, c in cr.items()} if r.neg else cr
        bm = f"b[{y[y.index('[') + 1:-1]}]"  # the bias mantissa array element
        if r.neg and not bias_raw:
            expr_of = lambda t: f"-{_aligned(r.expr, t, f - r.f)}"  # noqa: E731
        else:
            op = "-" if r.neg else "+"
            expr_of = lambda t: f"{_aligned(bm, t, f - b_t.frac_bits)} {op} {_aligned(r.expr, t, f - r.f)}"  # noqa
        acc_t, _, _ = declare(var, expr_of, coef, f, bv)
        adders += 1
        bits += acc_t.width
        acc_name, acc_f = var, f
    lines.append(f"{y} = qfx::from_raw<{_fixed_t(acc_t)} >({acc_name});  // the one cast to out_t")
    del acc_f
    return Channel(lines, adders, bits, acc_t, level, declared)


@dataclasses.dataclass
class LayerCode:
    body: list[str]         # lines inside apply()
    terms: int
    adders: int
    adder_bits: int
    widest: FixedType | None
    depth: int


def layer_code(terms: list[list[Term]], x_t: FixedType, bias_raw: list[int], b_t: FixedType,
               leaf, element) -> LayerCode:
    """All outputs of a layer. ``leaf(i)`` names input i's mantissa variable, ``element(i)`` the input."""
    body: list[str] = []
    used = sorted({t.index for row in terms for t in row})
    body.append(f"// input mantissas ({_int_t(x_t)}: x = m * 2^-{x_t.frac_bits})")
    for i in used:
        body.append(f"const {_int_t(x_t)} {leaf(i)} = qfx::raw_of({element(i)});")
    adders = bits = depth = 0
    widest = None
    for j, row in enumerate(terms):
        ch = channel_code(row, x_t, leaf, int(bias_raw[j]), b_t, f"a{j}", f"y[{j}]",
                          f"qfx::from_raw<C::b_t>(b[{j}])")
        body.append(f"// output {j}: {len(row)} terms, {ch.adders} adders")
        body += ch.lines
        adders += ch.adders
        bits += ch.adder_bits
        depth = max(depth, ch.depth)
        if ch.acc is not None and (widest is None or ch.acc.width > widest.width):
            widest = ch.acc
    return LayerCode(body, sum(len(r) for r in terms), adders, bits, widest, depth)
