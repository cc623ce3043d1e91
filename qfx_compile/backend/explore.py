"""Design-space search (``qfx-compile --explore``): every layer's options under the part's budgets.

The search prices, with :mod:`.estimate` only (the one place of the cost rules),
each layer's alternatives:

* dense / conv2d with multipliers: reuse (cycles per output vector/pixel: ``ceil(P/R)``
  multipliers) x multiplier binding (``mul_impl`` 1 DSP48, 2 fabric LUTs, or ``dsp_pack`` 1: two
  products per DSP where the widths allow it, estimate.packed_shape);
* K-hot layers: the shift-add form: straight-line code (a whole output per cycle, where the
  plan could build it) or the table kernel at natural reuse or folded further
  (``shiftadd`` 1 and ``reuse``);
* batchnorm / average pooling (one multiplier): DSP or LUTs;
* FIFOs: a chain stream at II=1 needs depth 2 (the rule the plan uses); a fork copy of a
  residual branch holds what its join needs it to (:mod:`.fifo`: the deadlock analysis over the
  kernels' token order). Both are priced (:func:`estimate.fifo_cost`) and counted in the BRAM /
  LUT totals; they do not depend on the layer options (token order, not cycles), so not varied.

Objective, in this order: the largest throughput (the smallest interval: the slowest layer's
cycles under DATAFLOW), then the smallest latency (the cycles along the graph's longest path,
estimate.DesignEstimate.latency_cycles), then the
fewest resources (DSP, LUT, BRAM shares of the budgets, summed). Budgets: a share of
the part's DSP, LUT, FF and BRAM18 (default :data:`DEFAULT_BUDGET`).

Method: for a candidate interval T (binary search over the cycle counts the layers can
take) every layer takes, among its alternatives with cycles <= T, the one of least
weighted resource use; the weights sweep the exchange rate between DSPs and LUTs
(and BRAM), so designs that trade DSPs for LUTs are all tried; a T is feasible when
some weighting fits every budget. At the best T the spare budget then buys latency
(greedy: the layer change with the most cycles saved per budget share, while 1% of latency costs at most
1% of the budget, :data:`LATENCY_RATE`). Every
design evaluated is a sample of the Pareto front (samples/s against DSP and LUT).

The chosen options reach the compiler as a per-layer options file, the same path as
``--config`` (:func:`options_config`), so the compiled design is the one priced here
(``explore.json`` records both; tests check they agree).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from ..targets import Target, estimate_array
from . import estimate as E
from .layerplan import BackendError

#: Default share of each resource of the part the design may use.
DEFAULT_BUDGET = {"dsp": 0.8, "lut": 0.8, "ff": 0.8, "bram": 0.8}
#: Multiplier counts tried per layer: at most this many (divisors of P and a geometric ladder).
MAX_CANDIDATES = 48
#: Exchange rates (LUT share per DSP share) swept at each interval.
WEIGHTS = (0.0, 0.05, 0.15, 0.35, 0.7, 1.0, 1.5, 3.0, 7.0, 20.0, 1e9)
#: Latency is bought with resources at most at this rate: budget shares (DSP + LUT + BRAM18) per share of latency.
LATENCY_RATE = 1.0


class ExploreError(BackendError):
    """No design fits the budgets (a user error: exit 2)."""


def parse_budget(text: str | None) -> dict[str, float]:
    """``"dsp=0.7,lut=0.6,bram=0.8"`` -> shares (others stay at the default 0.8)."""
    out = dict(DEFAULT_BUDGET)
    if not text:
        return out
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in out:
            raise ValueError(f"--budget: expected items like dsp=0.7,lut=0.6,ff=0.8,bram=0.8 (resources: "
                             f"{', '.join(DEFAULT_BUDGET)}), got {part[:40]!r}")
        try:
            v = float(val)
        except ValueError:
            raise ValueError(f"--budget: {key}={val[:20]!r} is not a number (a share of the part, 0 < x <= 1)") \
                from None
        if not (0.0 < v <= 1.0):
            raise ValueError(f"--budget: {key}={v} must be a share of the part in (0, 1]")
        out[key] = v
    return out


@dataclasses.dataclass(frozen=True)
class Cand:
    """One alternative of one layer: its options and its cost."""
    options: tuple          # (("reuse", r), ("mul_impl", m), ("shiftadd", s)) as written to the options file
    form: str               # "dsp", "lut", "straight", "table", "fixed"
    est: E.LayerEstimate
    bram18: int             # constant arrays of this form
    rom_lut: int            # LUTs of small constant arrays (distributed ROM)

    @property
    def cycles(self) -> int:
        return self.est.cycles

    @property
    def lut(self) -> int:
        return self.est.lut + self.rom_lut


@dataclasses.dataclass
class Design:
    picks: list[int]
    dsp: int
    lut: int
    ff: int
    bram18: int
    interval: int
    latency: int
    samples_per_s: float
    macs_per_s: float = 0.0       # MACs per sample x samples/s
    roofline_share: float = 0.0   # of the part's peak (estimate.Roofline)

    def as_dict(self) -> dict:
        return {"dsp": self.dsp, "lut": self.lut, "ff": self.ff, "bram18": self.bram18,
                "interval_cycles": self.interval, "latency_cycles": self.latency,
                "samples_per_s": round(self.samples_per_s, 1), "macs_per_s": round(self.macs_per_s),
                "roofline_share": round(self.roofline_share, 6)}


@dataclasses.dataclass
class ExploreResult:
    target: Target
    clock_ns: float
    budget: dict
    limits: dict
    layers: list            # layer plans (default options)
    names: list[str]        # IR node names (the options file's keys)
    cands: list[list[Cand]]
    chosen: Design
    default: Design | None
    default_error: str | None
    samples: list[Design]
    fifo: tuple[int, int]
    seconds: float
    roofline: E.Roofline | None = None

    def options_config(self) -> dict:
        """The chosen per-layer options as a ``--config`` file body."""
        layers = {}
        for name, cs, p in zip(self.names, self.cands, self.chosen.picks):
            o = dict(cs[p].options)
            if o:
                layers[name] = o
        return {"layers": layers}

    def pareto(self) -> list[Design]:
        """Samples no other sample beats on samples/s, DSP and LUT at once."""
        pts = sorted({(d.samples_per_s, d.dsp, d.lut): d for d in self.samples}.values(),
                     key=lambda d: (-d.samples_per_s, d.dsp, d.lut))
        front = []
        for d in pts:
            if not any(o.samples_per_s >= d.samples_per_s and o.dsp <= d.dsp and o.lut <= d.lut and
                       (o.samples_per_s, o.dsp, o.lut) != (d.samples_per_s, d.dsp, d.lut) for o in pts):
                front.append(d)
        return front

    def as_dict(self) -> dict:
        layers = []
        for L, name, cs, p in zip(self.layers, self.names, self.cands, self.chosen.picks):
            c = cs[p]
            layers.append({"name": L.name_comment, "op": L.op, "form": c.form, "options": dict(c.options),
                           "alternatives": len(cs), "dsp": c.est.dsp, "lut": c.lut, "bram18": c.bram18,
                           "cycles": c.cycles, "multipliers": c.est.multipliers, "reuse": c.est.reuse})
        return {
            "target": self.target.name, "part": self.target.part, "clock_ns": self.clock_ns,
            "budget_share": self.budget, "budget": self.limits,
            "objective": "max samples/s, then min latency, then min resource shares (estimate.py)",
            "chosen": self.chosen.as_dict(),
            "default": self.default.as_dict() if self.default else None,
            "default_error": self.default_error,
            "roofline": self.roofline.as_dict() if self.roofline else None,
            "fifo": {"bram18": self.fifo[0], "lut": self.fifo[1],
                     "rule": "chain streams depth 2 (II=1); fork copies as deep as the deadlock analysis "
                             "needs (backend/fifo.py)"},
            "layers": layers,
            "pareto": [d.as_dict() for d in self.pareto()],
            "samples": len(self.samples),
            "search_s": round(self.seconds, 3),
        }


# ------------------------------------------------------------------ alternatives
def _reuse_ladder(products: int, lo: int) -> list[int]:
    """Canonical reuses (= folds of ``m`` multipliers) from ``products`` (one multiplier) down to ``lo``."""
    ms = set()
    for m in range(1, math.isqrt(products) + 1):
        if products % m == 0:
            ms.add(m)
            ms.add(products // m)
    x = 1.0
    while x <= products:
        ms.add(int(x))
        x *= 1.25
    rs = sorted({math.ceil(products / math.ceil(products / min(m, products))) for m in ms if m >= 1})
    rs = [r for r in rs if r >= lo] or [max(1, lo)]
    if len(rs) > MAX_CANDIDATES:  # keep both ends and an even spread in log scale
        idx = sorted({round(i * (len(rs) - 1) / (MAX_CANDIDATES - 1)) for i in range(MAX_CANDIDATES)})
        rs = [rs[i] for i in idx]
    return rs


def _arrays_cost(arrays) -> tuple[int, int]:
    b = lut = 0
    for name, width, depth in arrays:
        a = estimate_array("", name, width, depth)
        b += a.bram18
        lut += a.lut
    return b, lut


def layer_candidates(L, node, dsp_kind: str) -> list[Cand]:
    """Every alternative of layer plan ``L`` (its default options as given by a config are kept fixed)."""
    s = L.cost
    o = L.options
    base_arrays = [(a.name, a.width, a.depth) for a in L.arrays]
    out = []
    if s.kind == "mul":
        b, rl = _arrays_cost(base_arrays)
        impls = [int(o.mul_impl)] if o.mul_impl else [E.MUL_DSP, E.MUL_FABRIC]
        reuses = [int(o.reuse)] if o.reuse else _reuse_ladder(s.products, 1)
        ps, _why = E.packed_shape(s, dsp_kind, int(o.mul_impl))
        if o.mul_impl and not o.dsp_pack:  # a binding fixed in --config stays
            ps = None
        for m in ([] if o.dsp_pack and ps is not None else impls):
            for r in reuses:
                e = E.estimate_layer(s, r, m, dsp_kind)
                out.append(Cand((("reuse", int(e.reuse)), ("mul_impl", m)), "dsp" if e.dsp else "lut", e, b, rl))
        if ps is not None:  # DSP packing: the weights in row pairs (a zero row completes an odd count)
            pb, prl = _arrays_cost([(a.name, a.width, 2 * ps.products * (a.depth // s.products) if a.role == "weight"
                                     else a.depth) for a in L.arrays])
            for r in ([min(int(o.reuse), ps.products)] if o.reuse else _reuse_ladder(ps.products, 1)):
                e = E.estimate_layer(ps, r, E.MUL_DSP, dsp_kind)
                out.append(Cand((("reuse", int(e.reuse)), ("mul_impl", E.MUL_DSP), ("dsp_pack", 1)), "dsp_pack", e,
                                pb, prl))
        return out
    if s.kind == "fixed_mul" and L.has_mul_impl:
        b, rl = _arrays_cost(base_arrays)
        impls = [int(o.mul_impl)] if o.mul_impl else [E.MUL_DSP, E.MUL_FABRIC]
        for m in impls:
            e = E.estimate_layer(s, None, m, dsp_kind)
            out.append(Cand((("mul_impl", m),), "dsp" if e.dsp else "lut", e, b, rl))
        return out
    if s.kind == "shiftadd" and (L.fold is not None or L.straight is not None):
        if L.fold is not None:   # the table kernel already
            f = L.fold
            b, rl = _arrays_cost(base_arrays)
            reuses = [min(int(o.reuse), f.products)] if o.reuse else _reuse_ladder(f.products, 1)
            for r in reuses:
                ts = E.table_shape(f.products, f.k, f.read, f.outputs, f.writes, f.width, r)
                e = dataclasses.replace(E.estimate_layer(ts, None, int(o.mul_impl), dsp_kind), reuse=r)
                out.append(Cand((("reuse", r), ("shiftadd", 1)), "table", e, b, rl))
            return out
        # straight-line code as planned, or its table form (sign and shift tables of k terms per weight)
        b, rl = _arrays_cost(base_arrays)
        e = E.estimate_layer(s, None, int(o.mul_impl), dsp_kind)
        out.append(Cand((), "straight", e, b, rl))
        if s.k and s.products and not o.reuse:
            n_w = int(math.prod(node.params["weight"].shape))
            tb, tl = _arrays_cost(base_arrays + [("wsign", 8, n_w * s.k), ("wshift", 8, n_w * s.k)])
            for r in _reuse_ladder(s.products, 1):
                ts = E.table_shape(s.products, s.k, s.read_cycles, s.outputs, s.writes, s.acc_bits, r)
                e = dataclasses.replace(E.estimate_layer(ts, None, int(o.mul_impl), dsp_kind), reuse=r)
                out.append(Cand((("reuse", r), ("shiftadd", 1)), "table", e, tb, tl))
        return out
    b, rl = _arrays_cost(base_arrays)
    e = E.estimate_layer(s, None, int(o.mul_impl), dsp_kind)
    return [Cand((), "fixed", e, b, rl)]


def _prune(cands: list[Cand]) -> list[int]:
    """Indices of the alternatives no other one beats on cycles, DSP, LUT and BRAM at once."""
    keep = []
    order = sorted(range(len(cands)), key=lambda i: (cands[i].cycles, cands[i].est.dsp, cands[i].lut,
                                                     cands[i].bram18))
    for i in order:
        c = cands[i]
        if any(cands[j].cycles <= c.cycles and cands[j].est.dsp <= c.est.dsp and cands[j].lut <= c.lut and
               cands[j].bram18 <= c.bram18 for j in keep):
            continue
        keep.append(i)
    return keep


# ------------------------------------------------------------------ the search
def explore(graph, target: Target, *, part: str | None = None, clock_ns: float | None = None,
            config: str | None = None, budget: dict | None = None) -> ExploreResult:
    """Search the design space of a typed IR graph for ``target``; see the module doc."""
    from .plan import PlanOptions, _choose_parallelism, _streams, layer_plans, layer_preds, model_roofline

    t0 = time.perf_counter()
    clock = float(clock_ns if clock_ns is not None else target.clock_ns)
    share = dict(DEFAULT_BUDGET, **(budget or {}))
    limits = {"dsp": int(target.dsp * share["dsp"]), "lut": int(target.lut * share["lut"]),
              "ff": int(target.ff * share["ff"]), "bram18": int(target.bram18 * share["bram"])}
    opts = PlanOptions(target=target, part=part or target.part, clock_ns=clock, config_path=config)
    g, tensors, _order, layers = layer_plans(graph, opts)
    kind = target.dsp_kind
    cands = [layer_candidates(L, n, kind) for L, n in zip(layers, g.nodes)]
    kept = [_prune(cs) for cs in cands]

    # FIFOs: independent of the layer options
    _l, streams, _f, _i, _o = _streams(g, tensors, layers)
    width_of = {T.typedef: T.type.width for T in tensors.values()}
    fb, fl = E.fifos_cost((width_of.get(st.typedef, 32), st.depth) for st in streams)

    preds = layer_preds(layers)
    macs = sum(L.macs for L in layers)
    roof = model_roofline(layers, target, clock)

    def design(picks: list[int]) -> Design:
        cs = [cands[i][p] for i, p in enumerate(picks)]
        de = E.DesignEstimate([c.est for c in cs], clock, preds, macs, roof)
        lut = de.lut + sum(c.rom_lut for c in cs) + fl
        return Design(list(picks), de.dsp, lut, E.ff_estimate(lut), sum(c.bram18 for c in cs) + fb,
                      de.interval_cycles, de.latency_cycles, de.samples_per_s, de.macs_per_s, de.roofline_share)

    def fits(d: Design) -> bool:
        return d.dsp <= limits["dsp"] and d.lut <= limits["lut"] and d.ff <= limits["ff"] and \
            d.bram18 <= limits["bram18"]

    def load(d: Design) -> float:
        return sum(getattr(d, k) / max(1, limits[k if k != "bram18" else "bram18"])
                   for k in ("dsp", "lut", "bram18"))

    samples: list[Design] = []

    memo: dict[int, Design | None] = {}

    def at(T: int) -> Design | None:
        """The least-loaded fitting design with every layer at most T cycles (None if none fits)."""
        if T not in memo:
            memo[T] = _at(T)
        return memo[T]

    def _at(T: int) -> Design | None:
        best = None
        for w in WEIGHTS:
            picks = []
            for i, cs in enumerate(cands):
                ok = [j for j in kept[i] if cs[j].cycles <= T]
                if not ok:
                    return None
                picks.append(min(ok, key=lambda j: (cs[j].est.dsp / max(1, limits["dsp"]) * w +
                                                    cs[j].lut / max(1, limits["lut"]) +
                                                    cs[j].bram18 / max(1, limits["bram18"]), cs[j].cycles)))
            d = design(picks)
            samples.append(d)
            if not fits(d):
                d = repair(d, T)
                if d is None:
                    continue
                samples.append(d)
            if best is None or (d.latency, load(d)) < (best.latency, load(best)):
                best = d
        return best

    keys = ("dsp", "lut", "bram18")

    # every kept alternative as one row: layer, index, (dsp, lut, bram18), cycles (the repair is vectorized)
    rows = [(i, j) for i in range(len(cands)) for j in kept[i]]
    r_layer = np.array([i for i, _ in rows], dtype=np.int64)
    r_index = np.array([j for _, j in rows], dtype=np.int64)
    r_res = np.array([[cands[i][j].est.dsp, cands[i][j].lut, cands[i][j].bram18] for i, j in rows],
                     dtype=np.float64).reshape(-1, 3)
    r_cyc = np.array([cands[i][j].cycles for i, j in rows], dtype=np.int64)
    lim = np.array([max(1, limits[k]) for k in keys], dtype=np.float64)
    hard = np.array([limits[k] for k in keys], dtype=np.float64)

    def repair(d: Design, T: int) -> Design | None:
        """Greedy: while a budget is exceeded, move the layer whose alternative (at most T cycles) gives back
        the most of the exceeded resources per share of the others' slack it takes; a move never pushes
        another resource over its budget (no oscillation)."""
        picks = list(d.picks)
        tot = np.array([getattr(d, k) for k in keys], dtype=np.float64)
        cur = np.array([[cands[i][p].est.dsp, cands[i][p].lut, cands[i][p].bram18] for i, p in enumerate(picks)],
                       dtype=np.float64).reshape(-1, 3)
        ok_t = r_cyc <= T
        for _ in range(4 * len(cands) + 16):
            over = tot > hard
            if not over.any():
                if E.ff_estimate(int(tot[1])) <= limits["ff"]:
                    return design(picks)
                over = np.array([False, True, False])  # only the FFs: they follow the LUTs
            delta = r_res - cur[r_layer]
            gain = (np.maximum(0.0, -delta[:, over]) / lim[over]).sum(axis=1)
            viol = ((tot + delta > hard) & ~over).any(axis=1)
            slack = np.maximum(hard - tot, 0.0)
            take = np.where(slack > 0, np.maximum(0.0, delta) / np.maximum(slack, 1.0),
                            1e3 * np.maximum(0.0, delta) / lim).sum(axis=1)
            valid = ok_t & (gain > 0) & ~viol & (r_index != np.asarray(picks)[r_layer])
            if not valid.any():
                return None
            score = np.where(valid, gain / (take + 1e-9), -1.0)
            k = int(np.argmax(score))
            i, j = int(r_layer[k]), int(r_index[k])
            picks[i] = j
            tot += delta[k]
            cur[i] = r_res[k]
        return None

    levels = sorted({cands[i][j].cycles for i in range(len(cands)) for j in kept[i]})
    floor_t = max(min(cands[i][j].cycles for j in kept[i]) for i in range(len(cands))) if cands else 1
    levels = [v for v in levels if v >= floor_t] or [floor_t]
    lo, hi = 0, len(levels) - 1
    if at(levels[hi]) is None:
        slow = design([min(kept[i], key=lambda j: (cands[i][j].est.dsp, cands[i][j].lut)) for i in range(len(cands))])
        over = [f"{k} {getattr(slow, k)} > {limits[k]}" + (f" (constants {slow.bram18 - fb}, FIFOs {fb}: the "
                                                            f"residual fork copies)"
                                                            if k == "bram18" and fb else "")
                for k in ("dsp", "lut", "ff", "bram18") if getattr(slow, k) > limits[k]]
        raise ExploreError(f"no design fits {target.name} within the budget ({', '.join(over)} even at the "
                           f"slowest, leanest options); raise --budget, choose a bigger target, or use narrower "
                           f"or K-hot weights")
    while lo < hi:
        mid = (lo + hi) // 2
        if at(levels[mid]) is not None:
            hi = mid
        else:
            lo = mid + 1
    best = at(levels[hi])
    best = _spend_on_latency(best, cands, kept, limits, design, samples, lambda cyc: E.longest_path(cyc, preds))

    # the compiler's default design (reuse for 80% of the DSPs), for comparison
    default = default_error = None
    try:
        dl, _de = _choose_parallelism(list(layers), opts)
        picks = []
        for i, (L, cs) in enumerate(zip(dl, cands)):
            e = L.est
            j = next((j for j, c in enumerate(cs) if c.est == e), None)
            if j is None:  # the default binding (mul_impl auto) is not one of ours: price it as is
                cs.append(Cand((), "default", e, cs[0].bram18, cs[0].rom_lut))
                j = len(cs) - 1
            picks.append(j)
        default = design(picks)
    except BackendError as e:
        default_error = str(e)
    return ExploreResult(target, clock, share, limits, layers, [n.name for n in g.nodes], cands, best, default,
                         default_error, samples, (fb, fl), time.perf_counter() - t0, roof)


def _spend_on_latency(best: Design, cands, kept, limits, design, samples, latency_of) -> Design:
    """Greedy: while some layer can get faster within the budgets, take the change that saves the most latency
    per added budget share, as long as it costs at most :data:`LATENCY_RATE` budget shares (DSP + LUT + BRAM18)
    per share of latency saved (``latency_of(cycles per layer)``: a layer off the longest path saves nothing).
    A layer only gets faster, so the interval never grows."""
    cur = best
    while True:
        step = None
        cycles = [cs[p].cycles for cs, p in zip(cands, cur.picks)]
        for i, cs in enumerate(cands):
            c0 = cs[cur.picks[i]]
            for j in kept[i]:
                c = cs[j]
                if c.cycles >= c0.cycles:
                    continue
                dd, dl, db = c.est.dsp - c0.est.dsp, c.lut - c0.lut, c.bram18 - c0.bram18
                lut = cur.lut + dl
                if cur.dsp + dd > limits["dsp"] or lut > limits["lut"] or E.ff_estimate(lut) > limits["ff"] or \
                        cur.bram18 + db > limits["bram18"]:
                    continue
                gain = (c0.cycles - c.cycles) / max(1, cur.latency)  # at most this: the layer's own saving
                cost = dd / max(1, limits["dsp"]) + dl / max(1, limits["lut"]) + db / max(1, limits["bram18"])
                if cost > LATENCY_RATE * gain:
                    continue
                gain = (cur.latency - latency_of(cycles[:i] + [c.cycles] + cycles[i + 1:])) / max(1, cur.latency)
                if gain <= 0 or cost > LATENCY_RATE * gain:
                    continue
                score = gain / cost if cost > 0 else float("inf")
                if step is None or score > step[0]:
                    step = (score, i, j)
        if step is None:
            return cur
        picks = list(cur.picks)
        picks[step[1]] = step[2]
        cur = design(picks)
        samples.append(cur)


# ------------------------------------------------------------------ outputs
def write_outputs(res: ExploreResult, outdir: str | Path) -> list[str]:
    """``explore.json``, ``explore_config.json`` (the chosen options, a --config file) and ``explore.png``
    (when matplotlib is installed: the examples extra). Returns notes for the user."""
    out = Path(outdir)
    notes = []
    (out / "explore.json").write_text(json.dumps(res.as_dict(), indent=1) + "\n")
    (out / "explore_config.json").write_text(json.dumps(res.options_config(), indent=1) + "\n")
    try:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            notes.append("matplotlib is not installed (pip install 'qfx-compile[examples]'): explore.png not "
                         "written, explore.json has the Pareto front")
            return notes
        _plot(res, out, plt)
    finally:
        _add_to_manifest(out, ["explore.json", "explore_config.json", "explore.png"])
    return notes


def _add_to_manifest(out: Path, rels: list[str]) -> None:
    """List the files written after the project in OUTDIR's manifest (the caller holds the OUTDIR lock), so
    that the next run recognizes them as qfx-compile's own and replaces them."""
    import hashlib

    from .outdir import MARKER, read_manifest

    known = read_manifest(out)
    if known is None:
        return
    lines = []
    for rel in rels:
        p = out / rel
        if p.is_file() and rel not in known:
            lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {rel}\n")
    if lines:
        with open(out / MARKER, "a", encoding="ascii", newline="\n") as f:
            f.write("".join(lines))


def _plot(res: ExploreResult, out: Path, plt) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, part in ((axes[0], "dsp", res.target.dsp), (axes[1], "lut", res.target.lut)):
        ax.scatter([getattr(d, key) for d in res.samples], [d.samples_per_s for d in res.samples], s=6,
                   color="0.75", label="designs evaluated")
        # the front in this plane: the most samples/s for at most this much of the resource, among the designs
        # that fit the other budgets
        others = [k for k in ("dsp", "lut", "bram18") if k != key]
        fit = [d for d in res.samples if all(getattr(d, k) <= res.limits[k] for k in others)]
        f, top = [], -1.0
        for d in sorted(fit, key=lambda d: (getattr(d, key), -d.samples_per_s)):
            if d.samples_per_s > top:
                f.append(d)
                top = d.samples_per_s
        ax.step([getattr(d, key) for d in f], [d.samples_per_s for d in f], "o-", where="post", ms=3,
                color="tab:blue", label="Pareto front (other budgets met)")
        if res.default is not None:
            ax.scatter([getattr(res.default, key)], [res.default.samples_per_s], marker="s", s=50,
                       color="tab:orange", label="default design", zorder=3)
        ax.scatter([getattr(res.chosen, key)], [res.chosen.samples_per_s], marker="*", s=160, color="tab:red",
                   label="chosen", zorder=4)
        ax.axvline(res.limits[key], color="tab:red", ls="--", lw=0.8, label="budget")
        ax.set_xlabel(f"{key.upper()} (part: {part:,})")
        ax.set_ylabel("samples/s (estimate)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"qfx-compile --explore, {res.target.name} at {res.clock_ns} ns")
    fig.tight_layout()
    fig.savefig(out / "explore.png", dpi=110)
    plt.close(fig)
