"""K-hot weights as shift-add code: terms, a shared adder graph, straight-line C++.

A K-hot weight mantissa is a sum of at most K signed powers of two, so every
product ``x * w`` is a sum of shifted copies of ``x`` (wiring, no multiplier).
The layer's integer matrix becomes ONE adder graph (:mod:`.addergraph`): sums
that several outputs (or several digits) need are built once, then each output
sums what is left. Every intermediate is declared with the SMALLEST type that
holds its exact value for every input of the input type (its interval follows
from its integer coefficients on the inputs), so no partial sum can round or
overflow, and the single cast to ``out_t`` at the end is the layer's one
documented cast.

Layers up to :data:`STRAIGHT_LINE_MAX_TERMS` nonzero digits get a graph; the
estimator (``estimate.straight_line_fits``) then keeps the straight-line code
when its LUTs fit (:func:`straight_line`), else hls_lib's ``dense_shiftadd`` / ``conv2d_shiftadd`` run
on (sign, shift) tables (:func:`sign_shift_tables`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..fixed.digits import digits_of
from ..fixed.types import FixedType
from . import addergraph, estimate

#: Layers with more terms (nonzero CSD digits of all weights) get no graph (compile time): table kernel.
STRAIGHT_LINE_MAX_TERMS = 20000
#: Greedy tries (differently ordered ties) for layers up to this many terms; larger layers get one.
MULTI_TRY_TERMS = 3000
TRIES = 4


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


def layer_graph(terms: list[list[Term]], x_t: FixedType, n_in: int | None = None, *, share: bool = True,
                max_depth: int | None = None, tries: int | None = None):
    """(graph, base) of a layer: output ``j`` is ``graph.outputs[j] * 2**base[j]`` in units of x's LSB.

    Each row's terms are shifted so that its lowest exponent is 0 (``base[j]``, may be negative:
    per-channel binary points); the graph is the integer product on the input mantissas.
    """
    n = max([t.index + 1 for r in terms for t in r] + [n_in or 0, 1])
    base = [min((t.exp for t in r), default=0) for r in terms]
    rows = [[(t.index, t.exp - b, t.sign) for t in r] for r, b in zip(terms, base)]
    n_terms = sum(len(r) for r in rows)
    if tries is None:
        tries = TRIES if n_terms <= MULTI_TRY_TERMS else 1
    g = addergraph.optimize(rows, [x_t.raw_min] * n, [x_t.raw_max] * n, share=share, max_depth=max_depth,
                            tries=tries)
    return g, base


# ------------------------------------------------------------ C++ text
def _int_t(t: FixedType) -> str:
    return f"ap_{'int' if t.signed else 'uint'}<{t.width}>"


def _fixed_t(t: FixedType) -> str:
    return f"{'ap_fixed' if t.signed else 'ap_ufixed'}<{t.width}, {t.int_bits}>"


def _aligned(expr: str, t: FixedType, shift: int) -> str:
    """``expr`` (a mantissa) converted to the result's integer type and moved ``shift`` places left."""
    cast = f"{_int_t(t)}({expr})"
    return f"({cast} << {shift})" if shift else cast


def _sum_text(coef: dict, leaf, limit: int = 6) -> str:
    """What a signal sums, in input mantissas: ``m3 + 4*m7 - m9`` (or a count when long)."""
    items = sorted(coef.items())
    if len(items) > limit:
        return f"a sum over {len(items)} inputs"
    out = ""
    for i, c in items:
        mag = f"{abs(c)}*" if abs(c) != 1 else ""
        out += (" - " if c < 0 else " + ") if out else ("-" if c < 0 else "")
        out += f"{mag}{leaf(i)}"
    return out


@dataclasses.dataclass
class Declared:
    """An intermediate the code declares: its name, type, and exact value as input coefficients."""
    name: str
    type: FixedType
    coef: dict     # input index -> integer coefficient of m_x at frac f (value = (sum coef*m_x + const) * 2**-f)
    const: int     # constant mantissa added (the bias), at frac f
    f: int
    lo: int
    hi: int


@dataclasses.dataclass
class LayerCode:
    body: list[str]         # lines inside apply()
    terms: int
    adders: int             # graph adders + one per output that adds its bias or negates
    adder_bits: int         # carry-chain bits of all adders (the LUT-relevant size)
    widest: FixedType | None
    depth: int
    declared: list[Declared]
    graph: addergraph.Graph
    base: list[int]
    names: list[str]        # C++ name of every graph signal (inputs first)
    tree_adders: int        # adders of per-output trees without sharing (the baseline)


def signal_type(g: addergraph.Graph, sig: int, x_t: FixedType) -> FixedType:
    """Smallest exact type of a graph signal: its mantissa is the integer, on x's grid."""
    return FixedType.for_raw_range(g.lo[sig], g.hi[sig], x_t.frac_bits)


def layer_code(terms: list[list[Term]], x_t: FixedType, bias_raw: list[int], b_t: FixedType,
               leaf, element, *, n_in: int | None = None, max_depth: int | None = None,
               tries: int | None = None) -> LayerCode:
    """All outputs of a layer as straight-line code over one shared adder graph.

    ``leaf(i)`` names input i's mantissa variable, ``element(i)`` the input. Each graph signal
    ``v`` is declared as the integer mantissa (``ap_int<W>`` / ``ap_uint<W>``) of its smallest
    exact type ``ap_[u]fixed<W, W-F>`` (named in a comment with what it sums): the value is
    ``v * 2^-F``. An adder ``A + (B << s)`` aligns B with a constant left shift (wiring); its
    arithmetic is modulo ``2^W``, exact because the result's interval fits ``W`` bits. Output
    j adds its bias (or negates) in one more line, then ``y[j] = qfx::convert<out_t>(acc)``: the cast to out_t.
    """
    g, base = layer_graph(terms, x_t, n_in, max_depth=max_depth, tries=tries)
    g0_adders = sum(max(0, len(r) - 1) for r in terms)
    body: list[str] = []
    declared: list[Declared] = []
    names: list[str] = [leaf(i) for i in range(g.n_in)]
    body.append(f"// input mantissas ({_int_t(x_t)}: x = m * 2^-{x_t.frac_bits})")
    for i in g.used_inputs():
        body.append(f"const {_int_t(x_t)} {leaf(i)} = qfx::raw_of({element(i)});")
    if g.adders:
        body.append(f"// shared adder graph: {g.n_adders} adders (per-output trees would take {g0_adders})")
    taken = set(names)
    bits = 0
    for k, a in enumerate(g.adders):
        t = signal_type(g, a.id, x_t)
        pa, pb = names[a.a], names[a.b]
        name = f"{pa}_{'m' if a.sub else 'p'}_{pb}" + (f"x{1 << a.shift}" if a.shift else "")
        if len(name) > 24 or name in taken:
            name = f"t{k}"
        names.append(name)
        taken.add(name)
        op = "-" if a.sub else "+"
        body.append(f"const {_int_t(t)} {name} = {_aligned(pa, t, 0)} {op} {_aligned(pb, t, a.shift)};  "
                    f"// {_fixed_t(t)} = {_sum_text(g.coef[a.id], leaf)}")
        declared.append(Declared(name, t, dict(g.coef[a.id]), 0, x_t.frac_bits, g.lo[a.id], g.hi[a.id]))
        bits += a.cost
    adders = g.n_adders
    widest = None
    depth = g.max_depth
    for j, o in enumerate(g.outputs):
        y = f"y[{j}]"
        braw = int(bias_raw[j])
        if o.signal is None:
            body.append(f"{y} = qfx::convert<C::out_t>(qfx::from_raw<C::b_t>(b[{j}]));  "
                        f"// output {j}: no nonzero weight, the bias alone")
            continue
        v = names[o.signal]
        f_r = x_t.frac_bits - base[j] - o.shift          # the signal's mantissa is y's at frac f_r
        vt = signal_type(g, o.signal, x_t)
        if braw == 0 and not o.neg:
            acc_t, acc = FixedType(vt.width, vt.width - f_r, vt.signed), v
        else:
            f = max(f_r, b_t.frac_bits)
            bv = braw << (f - b_t.frac_bits)
            sg = -1 if o.neg else 1
            coef = {i: sg * (c << (f - f_r)) for i, c in g.coef[o.signal].items()}
            lo = bv + sg * (g.lo[o.signal] if sg > 0 else g.hi[o.signal]) * (1 << (f - f_r))
            hi = bv + sg * (g.hi[o.signal] if sg > 0 else g.lo[o.signal]) * (1 << (f - f_r))
            acc_t = FixedType.for_raw_range(lo, hi, f)
            acc = f"a{j}"
            if braw == 0:
                expr = f"-{_aligned(v, acc_t, f - f_r)}"
            else:
                expr = f"{_aligned(f'b[{j}]', acc_t, f - b_t.frac_bits)} {'-' if o.neg else '+'} " \
                       f"{_aligned(v, acc_t, f - f_r)}"
            what = ("bias minus" if braw else "minus") if o.neg else "bias plus"
            body.append(f"const {_int_t(acc_t)} {acc} = {expr};  // {_fixed_t(acc_t)}: output {j}, {what} {v}")
            declared.append(Declared(acc, acc_t, coef, bv, f, lo, hi))
            adders += 1
            bits += acc_t.width
            depth = max(depth, g.depth[o.signal] + 1)
        # qfx::convert, not an assignment: the headers' cast reads the rounding bit beyond the MSB of an
        # accumulator whose LSB lies far below out_t's (ap_ufixed<607,-8> -> ap_fixed<8,2>)
        body.append(f"{y} = qfx::convert<C::out_t>(qfx::from_raw<{_fixed_t(acc_t)} >({acc}));  "
                    f"// output {j}: the one cast to out_t")
        if widest is None or acc_t.width > widest.width:
            widest = acc_t
    return LayerCode(body, sum(len(r) for r in terms), adders, bits, widest, depth, declared, g, base, names,
                     g0_adders)


def straight_line(terms: list[list[Term]], x_t: FixedType, bias_raw: list[int], b_t: FixedType, leaf, element,
                  **kw) -> LayerCode | None:
    """:func:`layer_code` where the estimator prefers it (``estimate.straight_line_fits``), else None
    (the table kernel); layers over :data:`STRAIGHT_LINE_MAX_TERMS` terms get no graph at all."""
    if sum(len(r) for r in terms) > STRAIGHT_LINE_MAX_TERMS:
        return None
    code = layer_code(terms, x_t, bias_raw, b_t, leaf, element, **kw)
    return code if estimate.straight_line_fits(code.adder_bits, code.adders) else None
