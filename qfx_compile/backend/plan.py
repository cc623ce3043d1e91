"""From a typed IR graph to the design's plan: every layer's kernel call, streams and estimates.

Each op's plan lives in its IR module (``OpDef.hls``, see :mod:`.layerplan`);
this module lowers the graph to stream order (:mod:`.lower`), asks every node's
op for its :class:`~.layerplan.LayerPlan`, chooses the parallelism with the
estimator (:mod:`.estimate`, the one place of the cost rules) and wires the
streams. Every name from the model goes through :mod:`.names`; the templates
never see an original name except as ``*_comment`` text.

Kernel calls follow hls_lib/README.md (config structs with typedefs, sizes as
``static const unsigned``, constants as plain-integer mantissa arrays).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..fixed.types import FixedType
from ..ir.graph import Graph
from ..ir.ops import get as get_op
from ..targets import Target, estimate_memory
from . import fifo, names
from .config import load_layer_config
from .estimate import (DSP_PORTS, DSP_SHARE, DesignEstimate, FitError, LayerShape, Roofline, choose_reuse,
                       estimate_layer, packed_shape, roofline, table_shape)
from .layerplan import BackendError, LayerContext, LayerOptions, LayerPlan, TensorPlan
from .lower import OUTPUT_HWC, LowerError, chw_to_stream, lower

#: Fixed identifiers of the generated code; no derived identifier can equal them.
TOP = "qfx_top"
RESERVED = ("qfx_top", "qfx", "in", "out", "main", "hls")


def axis_width(t: FixedType) -> int:
    return max(8, 8 * math.ceil(t.width / 8))


# ------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class PlanOptions:
    target: Target
    part: str
    clock_ns: float
    config_path: str | None = None


@dataclasses.dataclass(frozen=True)
class StreamPlan:
    var: str
    typedef: str
    depth: int
    comment: str
    count: int


@dataclasses.dataclass(frozen=True)
class Fanout:
    """``qfx::fanout2``: copies stream ``src`` into ``a`` and ``b``."""
    src: str
    a: str
    b: str
    typedef: str
    count: int
    comment: str


@dataclasses.dataclass(frozen=True)
class Port(TensorPlan):
    """The top function's input or output: a tensor streamed as AXI words of ``axis_w`` bits."""
    axis_w: int = 8

    @classmethod
    def of(cls, t: TensorPlan) -> "Port":
        return cls(**{f.name: getattr(t, f.name) for f in dataclasses.fields(t)}, axis_w=axis_width(t.type))

    @property
    def width(self) -> int:
        return self.type.width

    @property
    def frac(self) -> int:
        return self.type.frac_bits

    @property
    def signed(self) -> bool:
        return self.type.signed


@dataclasses.dataclass(frozen=True)
class DesignPlan:
    """Everything the templates print for one design."""
    top: str
    model_comment: str
    target: Target
    part: str
    clock_ns: float
    input: Port
    output: Port
    tensors: tuple[TensorPlan, ...]
    layers: tuple[LayerPlan, ...]
    streams: tuple[StreamPlan, ...]
    input_fanouts: tuple[Fanout, ...]
    in_stream: str
    out_stream: str
    memory: object
    design: DesignEstimate
    graph: Graph


def _prepare(graph: Graph) -> Graph:
    try:
        g = lower(graph)
    except LowerError as e:
        raise BackendError(str(e)) from None
    # the input quantizer of a float input is done by the host: the stream carries its mantissas
    inp = g.inputs[0]
    t = g.tensors[inp]
    if t.type is None:
        first = g.consumers(inp)
        if len(first) == 1 and first[0].op == "quant":
            q = first[0]
            g.nodes.remove(q)
            g.inputs = [q.outputs[0]]
            g.tensors.pop(inp, None)
        else:
            raise BackendError("the model input has no fixed-point type and is not followed by an input quantizer")
    return g


def build_plan(graph: Graph, opts: PlanOptions) -> DesignPlan:
    g, tensors, order, layers = layer_plans(graph, opts)
    layers, design = _choose_parallelism(layers, opts)
    layers, streams, input_fanouts, in_stream, out_stream = _streams(g, tensors, layers)

    mem = estimate_memory((L.name_comment, a.name, a.width, a.depth) for L in layers for a in L.arrays)
    in_t, out_t = tensors[g.inputs[0]], tensors[g.outputs[0]]
    return DesignPlan(
        top=TOP, model_comment=names.comment(graph.name or "model"), target=opts.target, part=opts.part,
        clock_ns=opts.clock_ns, input=Port.of(in_t), output=Port.of(out_t),
        tensors=tuple(tensors[t] for t in order), layers=tuple(layers), streams=tuple(streams),
        input_fanouts=tuple(input_fanouts), in_stream=in_stream, out_stream=out_stream, memory=mem,
        design=design, graph=g)


def layer_plans(graph: Graph, opts: PlanOptions):
    """``(lowered graph, tensors, tensor order, layer plans)``: every node's plan from its op, with its
    options (``--config``), before the design-wide choices (reuse, streams). :mod:`.explore` prices these."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise BackendError(f"the backend supports one input and one output, the model has "
                           f"{len(graph.inputs)} and {len(graph.outputs)}")
    g = _prepare(graph)
    default_opts, per_layer = _layer_config(opts.config_path, graph, g)
    table = names.NameTable(prefix="n", reserved=RESERVED)

    # tensors in a deterministic order: input, then each node's outputs in topological order
    order = [g.inputs[0]] + [o for n in g.nodes for o in n.outputs]
    tensors: dict[str, TensorPlan] = {}
    for tn in order:
        t = g.tensors[tn]
        if t.type is None or t.shape is None:
            raise BackendError(f"tensor {names.comment(tn)!r} has no type or shape after the IR passes")
        tid = table(tn, key="tensor:" + tn)
        tensors[tn] = TensorPlan(tid, names.comment(tn), f"t_{tid}", t.type, tuple(int(v) for v in t.shape),
                                 int(np.prod(t.shape)))

    layers = []
    for n in g.nodes:
        lid = table(n.name, key="node:" + n.name)
        op = get_op(n.op)
        ctx = LayerContext(g, n, lid, tuple(tensors[i] for i in n.inputs), tensors[n.outputs[0]],
                           LayerOptions(**{**default_opts, **per_layer.get(n.name, {})}))
        if op.hls is None:
            raise ctx.error("this op has no HLS kernel in this backend")
        layers.append(op.hls(ctx))
    return g, tensors, order, layers


def _layer_config(path, graph: Graph, lowered: Graph) -> tuple[dict, dict]:
    """``--config`` options (config.load_layer_config) by the names of the model's layers and of the layers
    the lowering adds: a layer with mixed rows is set through its parts (lower.split_mixed_rows)."""
    own = {n.name for n in graph.nodes}
    known = dataclasses.replace(graph, nodes=graph.nodes + [n for n in lowered.nodes if n.name not in own])
    default_opts, per_layer = load_layer_config(path, known)
    split = sorted(n.name for n in graph.nodes if n.name in per_layer and get_op(n.op).weighted
                   and n.params["weight"].mixed_rows())
    if split:
        nm = names.comment(split[0])
        raise BackendError(f"config: layer {nm!r} has mixed rows and compiles as two cores and a merge; set "
                           f"its options on {nm + '/dsp_rows'!r} (the multiplier core: reuse, mul_impl) and "
                           f"{nm + '/khot_rows'!r} (the shift-add core: shiftadd, reuse of its table kernel), "
                           f"not on {nm!r}")
    return default_opts, per_layer


def _folded_table(L: LayerPlan, r: int) -> LayerShape:
    """Cost of a shift-add table kernel folded to reuse ``r`` (its ``TableFold``; estimate.table_shape)."""
    f = L.fold
    return table_shape(f.products, f.k, f.read, f.outputs, f.writes, f.width, r)


def _choose_parallelism(layers: list[LayerPlan], opts: PlanOptions) -> tuple[list[LayerPlan], DesignEstimate]:
    """Reuse and mul_impl of every layer (config first, then the estimator's choice), and the estimates."""
    t = opts.target
    shapes, fixed, impl, table_reuse, packs = [], [], [], [], []
    for L in layers:
        s, r = L.cost, int(L.options.reuse)
        s, pack_note = _dsp_pack(L, t.dsp_kind)
        if L.fold is not None:  # a table kernel folds with reuse (default: its natural reuse)
            if r:
                r = min(r, L.fold.products)
            else:
                r = L.fold.natural
            s = _folded_table(L, r)
            table_reuse.append(r)
        else:
            table_reuse.append(None)
        if L.fold is None and r and s.kind != "mul":
            raise BackendError(f"config: layer {L.name_comment!r} ({L.kernel}) has no reuse option "
                               f"(dense / conv2d layers with multipliers and shift-add table kernels do; "
                               f"straight-line shift-add code computes a whole output vector per cycle)")
        if s.kind == "mul" and r > s.max_reuse:
            raise BackendError(f"config: reuse {r} of layer {L.name_comment!r} is more than its "
                               f"{s.max_reuse} {'packed ' if s.packed else ''}products per output; use "
                               f"1..{s.max_reuse}")
        shapes.append(s)
        packs.append(pack_note)
        fixed.append(r if (r and s.kind == "mul") else None)
        impl.append(int(L.options.mul_impl))
    budget = int(t.dsp * DSP_SHARE)
    try:
        reuse = choose_reuse(shapes, fixed, impl, t.dsp_kind, budget)
    except FitError as e:
        need = int(e.args[0])
        per = sorted(((estimate_layer(s, (f or s.max_reuse) if s.kind == "mul" else None, m, t.dsp_kind).dsp,
                       L.name_comment) for L, s, f, m in zip(layers, shapes, fixed, impl)), reverse=True)[:3]
        top = ", ".join(f"{nm} {d}" for d, nm in per if d)
        raise BackendError(
            f"the model needs {need} DSPs even at maximum reuse (one multiplier per layer), more than "
            f"{budget} ({int(DSP_SHARE * 100)}% of the {t.dsp} {t.dsp_kind} of {t.name}); largest: {top}. "
            f"Set mul_impl 2 (LUTs) for some layers in --config, use K-hot weights, or choose a bigger target.")
    out, ests = [], []
    for L, s, r, m, tr, pn in zip(layers, shapes, reuse, impl, table_reuse, packs):
        e = estimate_layer(s, r, m, t.dsp_kind)
        if s.packed:
            L = _packed_layer(L, t.dsp_kind)
        if tr is not None:  # a folded table kernel: its reuse is the one it was priced at
            e = dataclasses.replace(e, reuse=tr)
        ests.append(e)
        sizes = L.sizes + ((("reuse", int(e.reuse)),) if L.has_reuse else ())
        ints = L.ints + ((("mul_impl", m),) if L.has_mul_impl else ())
        out.append(dataclasses.replace(L, cost=s, est=e, sizes=sizes, ints=ints, dsp_pack=pn))
    return out, DesignEstimate(ests, opts.clock_ns, layer_preds(layers), sum(L.macs for L in layers),
                               model_roofline(layers, opts.target, opts.clock_ns))


def layer_preds(layers: list[LayerPlan]) -> tuple[tuple[int, ...], ...]:
    """The dataflow graph's edges: for each layer, the indices of the layers whose outputs it reads."""
    producer = {L.output.id: i for i, L in enumerate(layers)}
    return tuple(tuple(sorted({producer[t.id] for t in L.inputs if t.id in producer})) for L in layers)


def model_roofline(layers: list[LayerPlan], target: Target, clock_ns: float) -> Roofline:
    """The part's roofline for these layers (estimate.roofline; a table kernel by its table unit)."""
    return roofline(target, clock_ns, [(_folded_table(L, L.fold.natural) if L.fold is not None else L.cost, L.macs)
                                       for L in layers])


def _dsp_pack(L: LayerPlan, dsp_kind: str) -> tuple[LayerShape, str]:
    """The layer's cost shape, packed when its ``dsp_pack`` option asks and the widths allow it
    (estimate.packed_shape), and the report's note: packed and how, or why not."""
    s = L.cost
    if s.kind != "mul" or L.fold is not None:
        return s, ""
    ps, how = packed_shape(s, dsp_kind, int(L.options.mul_impl))
    if ps is None:
        return s, f"not packed: {how}"
    if not L.options.dsp_pack:
        return s, f"not packed (dsp_pack 0; would be legal: {how})"
    return ps, f"packed: {how}"


def _packed_layer(L: LayerPlan, dsp_kind: str) -> LayerPlan:
    """``L`` on its DSP-packed kernel (hls_lib/qfx_dsp_pack.h): the weights in pairs of output rows,
    ``[groups][ceil(rows/2)][per row][2]``, a zero row completing an odd count."""
    s = L.cost
    g = dict(L.sizes).get("n_groups", 1)
    rows, per = s.writes, s.products // s.writes
    arrays = []
    for a in L.arrays:
        if a.role == "weight":
            w = np.array(a.values, dtype=np.int64).reshape(g, rows, per)
            if rows % 2:
                w = np.concatenate([w, np.zeros((g, 1, per), dtype=np.int64)], axis=1)
            w = w.reshape(g, -1, 2, per).transpose(0, 1, 3, 2)
            dims = ("[ceil(n_out/2)][n_in][2]" if L.op == "dense" else
                    "[n_groups][ceil(n_filt/n_groups/2)][kh*kw*n_chan/n_groups][2]")
            a = dataclasses.replace(a, values=tuple(int(v) for v in w.reshape(-1).tolist()), dims=dims)
        arrays.append(a)
    kernel = "dense_packed" if L.op == "dense" else "conv2d_packed"
    return dataclasses.replace(L, kernel=kernel, callee=f"qfx::{kernel}<{L.cfg}>", arrays=tuple(arrays),
                               ints=L.ints + (("dsp_port", DSP_PORTS[dsp_kind][0]),))


def _streams(g: Graph, tensors: dict[str, TensorPlan], layers: list[LayerPlan]):
    """Stream variables: each tensor gets one stream; a tensor read by several consumers
    (a residual fork) is copied by a chain of 2-way fan-outs into one stream per reader.
    Stream names come from their own :class:`names.NameTable`, so they are unique by construction."""
    svars = names.NameTable(prefix="s", reserved=RESERVED)
    streams: list[StreamPlan] = []
    fanouts: list[tuple[str, Fanout]] = []  # (root tensor, fan-out)
    port: dict[tuple, str] = {}
    readers: dict[str, list[tuple]] = {}
    for li, n in enumerate(g.nodes):
        for pi, tn in enumerate(n.inputs):
            readers.setdefault(tn, []).append((li, pi))
    readers.setdefault(g.outputs[0], []).append(("out", 0))
    depth_of = {n.outputs[0]: int(L.options.stream_depth) for n, L in zip(g.nodes, layers)}
    produced: dict[str, str] = {}
    for tn in [g.inputs[0]] + [o for n in g.nodes for o in n.outputs]:
        T = tensors[tn]
        main = svars(f"s_{T.id}", key="main:" + tn)
        streams.append(StreamPlan(main, T.typedef, depth_of.get(tn, 2), T.comment, T.count))
        produced[tn] = main
        rd = readers.get(tn, [])
        if len(rd) <= 1:
            for r in rd:
                port[r] = main
            continue
        # a fork: a chain of fan-outs; the copies' depths are set below (backend.fifo)
        copies = [svars(f"s_{T.id}_c{k}", key=f"copy:{tn}:{k}") for k in range(len(rd))]
        for k, r in enumerate(rd):
            streams.append(StreamPlan(copies[k], T.typedef, 2, f"copy {k} of {T.comment}", T.count))
            port[r] = copies[k]
        src = main
        for k in range(len(rd) - 1):
            if k == len(rd) - 2:
                b = copies[k + 1]
            else:
                b = svars(f"s_{T.id}_r{k}", key=f"rest:{tn}:{k}")
                streams.append(StreamPlan(b, T.typedef, 2, f"rest of {T.comment}", T.count))
            fanouts.append((tn, Fanout(src, copies[k], b, T.typedef, T.count, T.comment)))
            src = b
    # fan-outs placed right after their producer (or after the input read)
    producer_of = {n.outputs[0]: li for li, n in enumerate(g.nodes)}
    after: dict[int, list[Fanout]] = {}
    input_fanouts = []
    for tn, f in fanouts:
        if tn in producer_of:
            after.setdefault(producer_of[tn], []).append(f)
        else:
            input_fanouts.append(f)
    out = []
    for li, (n, L) in enumerate(zip(g.nodes, layers)):
        out.append(dataclasses.replace(L, in_streams=tuple(port[(li, pi)] for pi in range(len(n.inputs))),
                                       out_stream=produced[n.outputs[0]], fanouts=tuple(after.get(li, ()))))
    # fork copies: the tokens each holds while the join waits on the other branch (never a deadlock)
    need = fifo.fork_depths(fifo.processes(g, out, input_fanouts, produced[g.inputs[0]], port[("out", 0)]),
                            {s.var: s.depth for s in streams})
    streams = [dataclasses.replace(s, depth=need[s.var].depth, comment=f"{s.comment}; {need[s.var].why}")
               if s.var in need else s for s in streams]
    return out, streams, input_fanouts, produced[g.inputs[0]], port[("out", 0)]


def vectors_for_files(graph: Graph, n_max: int | None, lowered: Graph | None = None) -> tuple[list[str], list[str], int]:
    """Input and expected output mantissas in stream order, one line per vector.

    ``lowered`` (the plan's graph) tells when the flat output is a flattened map streamed in HWC order.
    """
    v = graph.vectors
    ins = chw_to_stream(np.asarray(v.input_raw))
    out_raw = np.asarray(v.output_raw)
    hwc = (lowered.metadata.get(OUTPUT_HWC) if lowered is not None else None)
    if hwc:
        out_raw = out_raw.reshape((out_raw.shape[0],) + tuple(int(d) for d in hwc.split(",")))
    outs = chw_to_stream(out_raw)
    n = ins.shape[0] if n_max is None else min(n_max, ins.shape[0])
    lines_in = [" ".join(str(int(x)) for x in row.tolist()) for row in ins[:n]]
    lines_out = [" ".join(str(int(x)) for x in row.tolist()) for row in outs[:n]]
    return lines_in, lines_out, n
