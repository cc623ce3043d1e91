"""The one place of the resource and speed estimates (DSP, LUT, cycles) and of the reuse choice.

Rules (figures per layer, for the kernels' real parallelism, hls_lib/README.md):

* ``reuse`` R (>= 1): the cycles over which a kernel spreads the P products of one
  output vector (dense, ``P = n_in*n_out``) or output pixel (conv2d,
  ``P = kh*kw*n_chan*n_filt``): ``multipliers = ceil(P / R)``,
  ``folds = ceil(P / multipliers)`` cycles of the fold loop.
* cycles per sample (the kernels' loops at II=1, hls_lib/README.md "Folding"):
  dense ``n_in + folds + n_out``; conv2d ``Hp*Wp*n_chan + out_h*out_w*(folds + n_filt)``
  (the padded image is read one value per cycle; each output pixel takes its folds,
  then writes its n_filt values); shift-add kernels as dense/conv2d;
  straight-line shift-add: folds = 1; batchnorm one per element; avgpool2d
  ``in + out`` elements; global_avgpool ``in + n_chan``; the others one per
  element read. The default reuse is never below the natural point
  ``n_out`` / ``n_filt`` (the write loop dominates there: less buys little).
* DSPs per product from the operand widths (a signed multiplier: an unsigned
  operand needs one more bit): DSP48E2 multiplies 27x18, DSP48E1 25x18, so a
  product takes ``ceil(a/27)*ceil(b/18)`` DSP48E2 (``a >= b``, 25 for E1).
  ``mul_impl`` 0 (auto): products whose narrower operand has at most
  :data:`LUT_MUL_BITS` bits go to LUTs (what Vitis does with small multiplies);
  1 forces DSPs, 2 forces fabric LUTs (``BIND_OP impl=fabric``).
* LUTs and DSPs from yosys measurements (``cost_tables.json``, written by
  bench/calibrate_yosys.py with the yosys version): a fabric multiplier and the DSP48E2
  count of a product from the measured a x b grid (rounded up to the next grid widths;
  outside it, ``a*b/2 + a`` LUTs and the port rule below); a shift-add layer
  ``lut_per_bit * carry bits + lut_per_adder * adders``, fitted on whole adder graphs
  synthesized flat (without the table: one LUT per carry bit).
* DSP packing (``dsp_pack``, hls_lib/qfx_dsp_pack.h, Xilinx WP486): output rows 2q and 2q+1
  share each input's multiply, ``a*2^S + b`` in the 27-bit port (DSP48E1: 25), where
  :func:`dsp_pack_rule` allows it. A packed layer has ``P' = (P / rows) * ceil(rows / 2)``
  products per output vector/pixel (``rows`` = n_out / n_filt per group), each one DSP, plus
  ``S + 1`` LUTs per DSP for the correction (``+ 2^(S-1)`` as a carry chain over the high
  field, the cost when the DSP's post-adder does not absorb it).
* Throughput: under DATAFLOW the slowest layer sets the interval:
  ``samples/s = 1e9 / (clock_ns * max cycles)``. Latency: the cycles summed along the longest path
  of the dataflow graph (input to output, each layer's cycles once; parallel branches, a residual
  bypass or a mixed-row layer's two cores, overlap), as if each layer waited for its inputs' last
  value: streaming overlap makes the real figure lower; stalls on full FIFOs and the fan-out copies
  are not modelled.
* Roofline (:func:`roofline`): the part's peak multiply-accumulate rate for a model,
  ``(DSPs * p + floor(LUTs / l)) / clock_ns`` products per ns: ``p`` = 2 products per DSP when
  DSP packing (:func:`packed_shape`, :func:`dsp_pack_rule`) is legal for at least one multiplier
  layer of the model, else 1 (the peak is what the best layer could get out of a DSP);
  ``l`` = the fewest LUTs that compute one of the model's products per cycle: a K-hot layer's
  shift-add unit (:func:`shiftadd_product_luts` at its K and accumulator width), a multiplier
  layer's fabric multiplier (:func:`fabric_mul_luts`, the ``mul_impl`` 2 binding). A design's
  achieved rate is its MACs per sample (the layers' ``macs``) x samples/s; its share of the
  roofline = ``macs / (interval * (DSPs * p + floor(LUTs / l)))`` (the clock cancels).

Default reuse: the largest common cycle budget T (binary search) is sought such
that, with every multiplier layer at the largest reuse that keeps its cycles
<= T, the design's DSPs fit :data:`DSP_SHARE` of the part. Layers therefore
get equal latencies where they can, and no layer is made faster than the
slowest one needs. A per-layer ``reuse`` from ``--config`` is kept as given.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

from ..fixed.types import raw_range

#: Share of the part's DSPs the default reuse choice may use.
DSP_SHARE = 0.8
#: mul_impl auto: a product whose narrower operand has at most this many bits goes to LUTs.
LUT_MUL_BITS = 4
MUL_AUTO, MUL_DSP, MUL_FABRIC = 0, 1, 2

DSP_PORTS = {"DSP48E2": (27, 18), "DSP48E1": (25, 18)}


#: K-hot layers become straight-line shift-add code (a whole output vector per cycle) while the
#: adders' LUT estimate stays at most this (what the former rule, 2,000 digits in per-digit trees,
#: took at about 8 carry bits per adder with 8-bit inputs: a shared adder graph, about half the
#: adders, now lets layers of some 4,000 digits in); above it, the folded table kernel (hls_lib
#: dense_shiftadd / conv2d_shiftadd, n_out times fewer adders, about twice the cycles).
STRAIGHT_LINE_MAX_LUT = 16_000


@functools.lru_cache(maxsize=None)
def cost_tables() -> dict:
    """The measured tables (``cost_tables.json`` next to this module); {} when absent."""
    try:
        return json.loads(Path(__file__).with_name("cost_tables.json").read_text())
    except (OSError, ValueError):
        return {}


def _grid_lookup(table: dict, a: int, b: int) -> int | None:
    """``table["AxB"]`` (A >= B) at the smallest measured widths >= (a, b); None outside the grid."""
    hi, lo = max(a, b), min(a, b)
    ws = sorted({int(k.split("x")[0]) for k in table})
    ga = next((w for w in ws if w >= hi), None)
    gb = next((w for w in ws if w >= lo), None)
    if ga is None or gb is None:
        return None
    return table.get(f"{max(ga, gb)}x{min(ga, gb)}")


def shiftadd_luts(adder_bits: int, adders: int = 0) -> int:
    """LUTs of ``adders`` shift-add adders whose carry chains total ``adder_bits`` bits."""
    g = cost_tables().get("graph")
    if not g:
        return int(adder_bits)
    return max(0, round(g["lut_per_bit"] * adder_bits + g["lut_per_adder"] * adders))


def straight_line_fits(adder_bits: int, adders: int = 0) -> bool:
    """Whether a straight-line shift-add layer of that size is chosen over the table kernel."""
    return shiftadd_luts(adder_bits, adders) <= STRAIGHT_LINE_MAX_LUT


def table_shape(products: int, k: int, read: int, outputs: int, writes: int, acc_bits: int,
                reuse: int) -> "LayerShape":
    """Cost of a shift-add table kernel (hls_lib dense_shiftadd / conv2d_shiftadd) folded to ``reuse``:
    ``ceil(P / reuse)`` term units of ``k`` adders of ``acc_bits`` bits; each output vector/pixel takes
    ``ceil(P / units)`` cycles of its fold loop, then writes its ``writes`` values."""
    units = math.ceil(products / max(1, min(int(reuse), products)))
    return LayerShape("shiftadd", adders=units * k, adder_bits=units * k * acc_bits,
                      fixed_cycles=read + outputs * (math.ceil(products / units) + writes), k=int(k),
                      acc_bits=int(acc_bits))


def shiftadd_product_luts(k: int, acc_bits: int) -> int:
    """LUTs that compute one K-hot product per cycle: one term unit of the table kernel (:func:`table_shape`,
    ``k`` adders of ``acc_bits`` bits). The LUT price of a K-hot row in qfx's ``lut_rows="auto"``."""
    return shiftadd_luts(int(k) * int(acc_bits), int(k))


#: A FIFO of at most this many bits is a shift register in LUTs (SRL32: 32 bits deep per LUT per bit).
FIFO_SRL_BITS = 1024


def fifo_cost(width: int, depth: int) -> tuple[int, int]:
    """(BRAM18, LUT) of a stream FIFO of ``depth`` words of ``width`` bits: small ones are SRLs
    (``width * ceil(depth / 32)`` LUTs), bigger ones BRAM18 blocks counted as weight ROMs (targets.bram18_for)."""
    from ..targets import bram18_for
    if width * depth <= FIFO_SRL_BITS:
        return 0, int(width) * math.ceil(depth / 32)
    return bram18_for(width, depth), 0


def fifos_cost(fifos) -> tuple[int, int]:
    """(BRAM18, LUT) of stream FIFOs given as ``(width, depth)`` pairs, each by :func:`fifo_cost` (the depths:
    2 for a chain stream, the deadlock analysis of ``backend/fifo.py`` for a fork copy)."""
    bram = lut = 0
    for w, d in fifos:
        b, n = fifo_cost(w, d)
        bram, lut = bram + b, lut + n
    return bram, lut


def ff_estimate(lut: int) -> int:
    """Flip-flops of a datapath pipelined at II=1: one register per LUT output (DSP48s register inside).
    A coarse rule until measured; the parts have two FFs per LUT, so FFs bind after LUTs."""
    return int(lut)


class FitError(ValueError):
    """The model cannot fit the part's DSPs even at maximum reuse."""


def dsp_per_product(a_bits: int, b_bits: int, dsp_kind: str) -> int:
    """DSP slices for one a x b signed product (operand widths already include a sign bit)."""
    if dsp_kind == "DSP48E2":
        measured = _grid_lookup(cost_tables().get("dsp", {}), a_bits, b_bits)
        if measured:   # 0: yosys built that product in LUTs; a DSP still takes one
            return measured
    pa, pb = DSP_PORTS.get(dsp_kind, DSP_PORTS["DSP48E2"])
    hi, lo = max(a_bits, b_bits), min(a_bits, b_bits)
    return math.ceil(hi / pa) * math.ceil(lo / pb)


def signed_bits(width: int, signed: bool) -> int:
    return width if signed else width + 1


def fabric_mul_luts(a_bits: int, b_bits: int) -> int:
    measured = _grid_lookup(cost_tables().get("fabric_mul", {}), a_bits, b_bits)
    if measured is not None:
        return measured
    return math.ceil(a_bits * b_bits / 2) + max(a_bits, b_bits)


def product_cost(a_bits: int, b_bits: int, dsp_kind: str, mul_impl: int) -> tuple[int, int, bool]:
    """(DSPs, LUTs, went_to_luts) of one multiplier."""
    to_luts = mul_impl == MUL_FABRIC or (mul_impl == MUL_AUTO and min(a_bits, b_bits) <= LUT_MUL_BITS)
    if to_luts:
        return 0, fabric_mul_luts(a_bits, b_bits), True
    return dsp_per_product(a_bits, b_bits, dsp_kind), 0, False


@dataclasses.dataclass
class LayerShape:
    """What the estimate needs of one layer (filled by the plan)."""
    kind: str            # "mul" (dense/conv2d with multipliers), "fixed_mul" (batchnorm/avgpool: 1 multiplier),
                         # "shiftadd" (K-hot straight-line or table kernel), "stream" (everything else)
    products: int = 0    # products per output vector/pixel (mul) ; per element (fixed_mul: 1)
    read_cycles: int = 0     # cycles to stream the input in
    outputs: int = 1         # output vectors/pixels per sample (folds + writes cycles each)
    writes: int = 0          # values written per output vector/pixel (n_out / n_filt)
    max_reuse: int = 1
    natural_reuse: int = 1   # reuse of the kernel's default schedule (one output/filter per cycle)
    a_bits: int = 0          # operand widths (signed) of the products
    b_bits: int = 0
    adders: int = 0          # shift-add: adders in the hardware
    adder_bits: int = 0      # shift-add: sum of adder widths
    fixed_cycles: int | None = None  # stream/shiftadd/fixed_mul: cycles per sample
    k: int = 0               # shift-add: terms per weight of the table kernel (its alternative form, explore)
    acc_bits: int = 0        # shift-add: accumulator width of the table kernel's adders
    x_type: tuple = ()       # mul: (width, signed) of the input and weight mantissas (DSP packing's rule)
    w_type: tuple = ()
    packed: bool = False     # mul: DSP packing (packed_shape): products are packed pairs, one DSP each
    pack_lut: int = 0        # mul, packed: LUTs per DSP for the correction


def _signed_bits_for(lo: int, hi: int) -> int:
    """The fewest signed bits holding every integer of [lo, hi]."""
    return max(lo.bit_length() if lo >= 0 else (-lo - 1).bit_length(), hi.bit_length() if hi >= 0 else
               (-hi - 1).bit_length()) + 1


def dsp_pack_rule(x_type: tuple, w_type: tuple, dsp_kind: str) -> tuple[int, str]:
    """``(S, "")`` when two products ``a*c``, ``b*c`` (a, b of ``w_type``, c of ``x_type``, each ``(width,
    signed)``) share one multiply of ``dsp_kind`` (hls_lib/qfx_dsp_pack.h: ``S`` = the signed bits of every
    b*c, ``a*2^S + b`` within the 27-bit port (DSP48E1: 25), c within the 18-bit port); else ``(0, why)``."""
    port, b_port = DSP_PORTS.get(dsp_kind, DSP_PORTS["DSP48E2"])
    (xw, xs), (ww, ws) = x_type, w_type
    x_lo, x_hi = raw_range(xw, xs)
    w_lo, w_hi = raw_range(ww, ws)
    what = f"{ww}-bit {'signed' if ws else 'unsigned'} weights x {xw}-bit {'signed' if xs else 'unsigned'} inputs"
    if _signed_bits_for(x_lo, x_hi) > b_port:
        return 0, f"{what}: the inputs do not fit the {b_port}-bit port"
    corners = [w * x for w in (w_lo, w_hi) for x in (x_lo, x_hi)]
    shift = _signed_bits_for(min(corners), max(corners))
    need = _signed_bits_for(w_lo * 2 ** shift + w_lo, w_hi * 2 ** shift + w_hi)
    if need > port:
        return 0, (f"{what}: products of {shift} bits, so a*2^{shift} + b needs {need} bits, more than the "
                   f"{port}-bit port of the {dsp_kind}")
    return shift, ""


def packed_shape(s: LayerShape, dsp_kind: str, mul_impl: int = MUL_AUTO) -> tuple[LayerShape | None, str]:
    """``(the packed shape, how)`` of a multiplier layer where DSP packing is legal, else ``(None, why not)``."""
    if s.kind != "mul" or not s.x_type or not s.w_type:
        return None, "no multipliers"
    if mul_impl == MUL_FABRIC:
        return None, "mul_impl 2 puts its multipliers in LUTs (packing shares a DSP)"
    rows = max(1, s.writes)
    if rows < 2:
        return None, "one output per group: no pair of rows to share a multiply"
    shift, why = dsp_pack_rule(s.x_type, s.w_type, dsp_kind)
    if not shift:
        return None, why
    pp = s.products // rows * math.ceil(rows / 2)
    return (dataclasses.replace(s, products=pp, max_reuse=pp, packed=True, pack_lut=shift + 1),
            f"two products per {dsp_kind} (a*2^{shift} + b)")


@dataclasses.dataclass
class LayerEstimate:
    reuse: int | None
    mul_impl: int
    multipliers: int
    dsp: int
    lut: int
    adders: int
    cycles: int
    to_luts: bool
    packed: bool = False


def multipliers(products: int, reuse: int) -> int:
    return math.ceil(products / max(1, min(int(reuse), products)))


def folds(products: int, reuse: int) -> int:
    return math.ceil(products / multipliers(products, reuse))


def layer_cycles(s: LayerShape, reuse: int | None) -> int:
    if s.kind == "mul":
        return s.read_cycles + s.outputs * (folds(s.products, reuse) + s.writes)
    return int(s.fixed_cycles or 0)


def estimate_layer(s: LayerShape, reuse: int | None, mul_impl: int, dsp_kind: str) -> LayerEstimate:
    if s.kind == "mul":
        r = max(1, min(int(reuse), s.max_reuse))
        m = multipliers(s.products, r)
        if s.packed:
            return LayerEstimate(r, mul_impl, m, m, m * s.pack_lut, 0, layer_cycles(s, r), False, True)
        d, lut, small = product_cost(s.a_bits, s.b_bits, dsp_kind, mul_impl)
        return LayerEstimate(r, mul_impl, m, m * d, m * lut, 0, layer_cycles(s, r), small)
    if s.kind == "fixed_mul":
        d, lut, small = product_cost(s.a_bits, s.b_bits, dsp_kind, mul_impl)
        return LayerEstimate(None, mul_impl, 1, d, lut, 0, layer_cycles(s, None), small)
    if s.kind == "shiftadd":
        return LayerEstimate(None, mul_impl, 0, 0, shiftadd_luts(s.adder_bits, s.adders), s.adders, layer_cycles(s, None),
                             False)
    return LayerEstimate(None, mul_impl, 0, 0, 0, 0, layer_cycles(s, None), False)


def largest_reuse_within(s: LayerShape, t: int) -> int:
    """The largest reuse (at least the natural one) whose cycles stay <= t."""
    max_folds = (t - s.read_cycles) // max(1, s.outputs) - s.writes
    if max_folds < 1:
        return max(1, min(s.natural_reuse, s.max_reuse))
    m = math.ceil(s.products / min(max_folds, s.products))  # fewest multipliers that keep up
    r = math.ceil(s.products / m)                             # = its folds: the canonical reuse
    return max(1, min(s.max_reuse, max(r, s.natural_reuse)))


def choose_reuse(shapes: list[LayerShape], fixed: list[int | None], mul_impl: list[int], dsp_kind: str,
                 dsp_budget: int) -> list[int | None]:
    """Reuse per layer (None for layers without a reuse); raises :class:`FitError` when nothing fits."""

    def total(reuses):
        return sum(estimate_layer(s, r, m, dsp_kind).dsp for s, r, m in zip(shapes, reuses, mul_impl))

    def at(t):
        return [(fixed[i] if fixed[i] is not None else largest_reuse_within(s, t)) if s.kind == "mul" else None
                for i, s in enumerate(shapes)]

    # the fastest schedule the streaming layers allow: no multiplier layer needs to be faster
    floor_t = max([layer_cycles(s, s.natural_reuse) if s.kind == "mul" and fixed[i] is None else
                   layer_cycles(s, fixed[i] if s.kind == "mul" else None) for i, s in enumerate(shapes)] + [1])
    lo_t = floor_t
    best = at(lo_t)
    if total(best) <= dsp_budget:
        return best
    worst = [(fixed[i] if fixed[i] is not None else s.max_reuse) if s.kind == "mul" else None
             for i, s in enumerate(shapes)]
    need = total(worst)
    if need > dsp_budget:
        raise FitError(need)
    hi_t = max(layer_cycles(s, r) for s, r in zip(shapes, worst))
    while lo_t < hi_t:
        mid = (lo_t + hi_t) // 2
        if total(at(mid)) <= dsp_budget:
            hi_t = mid
        else:
            lo_t = mid + 1
    return at(hi_t)


@dataclasses.dataclass(frozen=True)
class Roofline:
    """A part's peak multiply-accumulate rate for one model (module doc, "Roofline")."""
    dsp: int                 # the part's DSPs
    products_per_dsp: int    # p: 2 where DSP packing is legal for one of the model's multiplier layers, else 1
    lut: int                 # the part's LUTs
    luts_per_product: int    # l: the fewest LUTs computing one of the model's products per cycle (0: no products)
    lut_form: str            # which product that is
    clock_ns: float

    @property
    def products_per_cycle(self) -> int:
        """``DSPs * p + floor(LUTs / l)``: the peak, in products per clock cycle."""
        return self.dsp * self.products_per_dsp + (self.lut // self.luts_per_product if self.luts_per_product else 0)

    def share(self, macs: int, interval_cycles: int) -> float:
        """Achieved / peak for a design doing ``macs`` products per sample, one sample per ``interval_cycles``."""
        peak = self.products_per_cycle
        return macs / (max(1, interval_cycles) * peak) if peak else 0.0

    def as_dict(self) -> dict:
        f = 1e9 / self.clock_ns
        lut_rate = self.lut // self.luts_per_product if self.luts_per_product else 0
        return {"part_dsp": self.dsp, "products_per_dsp": self.products_per_dsp, "part_lut": self.lut,
                "luts_per_product": self.luts_per_product, "lut_product": self.lut_form,
                "dsp_macs_per_s": round(self.dsp * self.products_per_dsp * f),
                "lut_macs_per_s": round(lut_rate * f), "peak_macs_per_s": round(self.products_per_cycle * f)}


def roofline(target, clock_ns: float, layers) -> Roofline:
    """The roofline of ``target`` (``dsp``, ``lut``, ``dsp_kind``: targets.Target) for a model given as
    ``(LayerShape, macs per sample)`` pairs (module doc, "Roofline"); only layers with MACs count."""
    kind = target.dsp_kind
    work = [s for s, macs in layers if macs > 0]
    p = 2 if any(packed_shape(s, kind)[0] is not None for s in work) else 1
    forms = []
    for s in work:
        if s.kind == "shiftadd" and s.k and s.acc_bits:
            forms.append((shiftadd_product_luts(s.k, s.acc_bits), f"shift-add unit (K={s.k}, {s.acc_bits}-bit adders)"))
        elif s.kind in ("mul", "fixed_mul") and s.a_bits and s.b_bits:
            hi, lo = max(s.a_bits, s.b_bits), min(s.a_bits, s.b_bits)
            forms.append((fabric_mul_luts(s.a_bits, s.b_bits), f"fabric multiplier ({hi} x {lo} bits)"))
    l, form = min(forms, default=(0, "none (no layer multiplies)"))
    return Roofline(int(target.dsp), p, int(target.lut), max(1, l) if forms else 0, form, float(clock_ns))


def longest_path(cycles: list[int], preds) -> int:
    """The most cycles summed along a path of the dataflow graph: layer ``i`` (topological order) reads the
    outputs of the layers ``preds[i]`` (indices below ``i``; none: it reads the design's input)."""
    finish: list[int] = []
    for i, (c, ps) in enumerate(zip(cycles, preds)):
        if any(not 0 <= j < i for j in ps):
            raise ValueError(f"layer {i} reads layers {sorted(ps)}: not in topological order")
        finish.append(int(c) + max((finish[j] for j in ps), default=0))
    return max(finish, default=0)


@dataclasses.dataclass
class DesignEstimate:
    """A whole design: its layers' estimates (in the plan's order), the graph's edges (``preds[i]``: the
    layers whose outputs layer ``i`` reads; None: a chain), MACs per sample, and the part's roofline."""
    layers: list[LayerEstimate]
    clock_ns: float
    preds: tuple | None = None
    macs: int = 0
    roofline: Roofline | None = None

    @property
    def dsp(self) -> int:
        return sum(e.dsp for e in self.layers)

    @property
    def lut(self) -> int:
        return sum(e.lut for e in self.layers)

    @property
    def adders(self) -> int:
        return sum(e.adders for e in self.layers)

    @property
    def interval_cycles(self) -> int:
        return max([e.cycles for e in self.layers] + [1])

    @property
    def latency_cycles(self) -> int:
        """Cycles along the longest path through the graph (:func:`longest_path`; without ``preds`` the layers
        form a chain: the sum), each layer counted whole (module doc, "Throughput")."""
        cycles = [e.cycles for e in self.layers]
        if self.preds is None:
            return sum(cycles)
        return longest_path(cycles, self.preds)

    @property
    def samples_per_s(self) -> float:
        return 1e9 / (self.clock_ns * self.interval_cycles)

    @property
    def macs_per_s(self) -> float:
        """The achieved rate: MACs per sample x samples/s."""
        return self.macs * self.samples_per_s

    @property
    def roofline_share(self) -> float | None:
        """Achieved rate / the part's peak (:class:`Roofline`); None without a roofline."""
        return None if self.roofline is None else self.roofline.share(self.macs, self.interval_cycles)
