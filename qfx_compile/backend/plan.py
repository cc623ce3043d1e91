"""From a typed IR graph to a *plan*: everything the templates print, already made safe.

The plan is plain data (dicts, lists, strings, ints) built in a deterministic
order. Every name from the model goes through :mod:`.names` here; the templates
never see an original name except as ``*_comment`` text made by
:func:`names.comment`.

Kernel calls follow hls_lib/README.md (config structs with typedefs, sizes as
``static const unsigned``, constants as plain-integer mantissa arrays).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.graph import Const, Graph, Node
from ..fixed.types import FixedType, raw_range
from ..targets import Target, estimate_memory
from . import names, shiftadd
from .config import LAYER_DEFAULTS, OPTION_RANGES, ConfigError, load_layer_config  # noqa: F401
from .estimate import DSP_SHARE, DesignEstimate, FitError, LayerShape, choose_reuse, estimate_layer, signed_bits
from .lower import chw_to_stream, lower


class BackendError(ValueError):
    """The model or the options cannot be compiled (a user error: exit 2)."""


#: Fixed identifiers of the generated code; no derived identifier can equal them.
TOP = "qfx_top"
RESERVED = ("qfx_top", "qfx", "in", "out", "main", "hls")



# --------------------------------------------------------------------- helpers
def raw_ctype(lo: int, hi: int) -> str:
    for bits in (8, 16, 32, 64):
        lo_c, hi_c = raw_range(bits, True)
        if lo_c <= lo and hi <= hi_c:
            return f"int{bits}_t"
    raise BackendError(f"a constant mantissa in [{lo}, {hi}] does not fit 64 bits")


def _pair(v: Any, default: int) -> tuple[int, int]:
    if v is None:
        return default, default
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = [int(x) for x in v]
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _pads(v: Any) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, (ph, pw) or ONNX (top, left, bottom, right)."""
    if v is None:
        return 0, 0, 0, 0
    if isinstance(v, (int, np.integer)):
        return (int(v),) * 4
    v = [int(x) for x in v]
    if len(v) == 2:
        return v[0], v[0], v[1], v[1]
    if len(v) == 4:
        return v[0], v[2], v[1], v[3]
    raise BackendError(f"cannot read padding {v!r}")


def const_mantissas(c: Const, where: str) -> tuple[np.ndarray, FixedType]:
    """Mantissas and type of a constant; its binary point must already be unified (ir.passes.unify_consts)."""
    if c.int_bits is not None:
        raise BackendError(f"{where}: per-channel binary points reach the backend; run "
                           f"qfx_compile.ir.passes.run_default_passes (unify_consts) first")
    raw = np.asarray(c.raw)
    return (raw.astype(object) if raw.dtype == object else raw.astype(np.int64)), c.type


def required_acc_type(n: Node, where: str) -> FixedType:
    """The accumulator type from ir.passes.accumulators: the backend never sizes one itself."""
    acc = n.attrs.get("acc_type")
    if acc is None:
        raise BackendError(f"{where}: no accumulator type; run qfx_compile.ir.passes.run_default_passes "
                           f"(type_accumulators) first")
    return acc


def fmt_array(values: np.ndarray, per_line: int = 24) -> list[str]:
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1).tolist()]
    return [", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]


def axis_width(t: FixedType) -> int:
    return max(8, 8 * math.ceil(t.width / 8))


# ------------------------------------------------------------------- the plan
@dataclasses.dataclass
class PlanOptions:
    target: Target
    part: str
    clock_ns: float
    config_path: str | None = None


def _prepare(graph: Graph) -> Graph:
    # the IR's per-weight "terms" lists (millions of tuples for a ResNet) are not needed here: the
    # backend derives shift-add terms from the lowered weights. Leave them out of lower()'s deep copies.
    light = dataclasses.replace(graph, nodes=[dataclasses.replace(n, attrs={k: v for k, v in n.attrs.items()
                                                                            if k != "terms"})
                                              for n in graph.nodes])
    g = lower(light)
    # the input quantizer of a float input is done by the host: the stream carries its mantissas
    inp = g.inputs[0]
    t = g.tensors[inp]
    if t.type is None:
        first = g.consumers(inp)
        if len(first) == 1 and first[0].op == "quant":
            q = first[0]
            g.nodes.remove(q)
            new_in = q.outputs[0]
            g.inputs = [new_in]
            g.tensors.pop(inp, None)
        else:
            raise BackendError("the model input has no fixed-point type and is not followed by an input quantizer")
    return g


def build_plan(graph: Graph, opts: PlanOptions) -> dict:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise BackendError(f"the backend supports one input and one output, the model has "
                           f"{len(graph.inputs)} and {len(graph.outputs)}")
    g = _prepare(graph)
    default_opts, per_layer = load_layer_config(opts.config_path, graph)
    table = names.NameTable(prefix="n", reserved=RESERVED)

    # tensors in a deterministic order: input, then each node's outputs in topological order
    order = [g.inputs[0]] + [o for n in g.nodes for o in n.outputs]
    tensors: dict[str, dict] = {}
    for tn in order:
        t = g.tensors[tn]
        if t.type is None or t.shape is None:
            raise BackendError(f"tensor {names.comment(tn)!r} has no type or shape after the IR passes")
        tid = table(tn, key="tensor:" + tn)
        count = int(np.prod(t.shape))
        tensors[tn] = {
            "id": tid, "comment": names.comment(tn), "ctype": t.type.cpp(), "typedef": f"t_{tid}",
            "count": count, "shape": list(t.shape), "type": t.type,
            "hwc": "x".join(str(s) for s in ([t.shape[1], t.shape[2], t.shape[0]] if len(t.shape) == 3
                                             else list(t.shape))),
        }

    layers = []
    for n in g.nodes:
        lid = table(n.name, key="node:" + n.name)
        layers.append(_layer_plan(g, n, lid, tensors, {**default_opts, **per_layer.get(n.name, {})}))
    design = _choose_parallelism(layers, opts)

    # streams: one per consumer edge; fan-out when a tensor has several consumers
    streams, fanouts, in_stream, out_stream = _streams(g, tensors, layers)

    in_t = tensors[g.inputs[0]]
    out_t = tensors[g.outputs[0]]
    mem = estimate_memory((L["name_comment"], a["name"], a["width"], a["depth"])
                          for L in layers for a in L["arrays"])
    plan = {
        "top": TOP,
        "model_comment": names.comment(graph.name or "model"),
        "target": dataclasses.asdict(opts.target), "part": opts.part, "clock_ns": opts.clock_ns,
        "input": {**in_t, "axis_w": axis_width(in_t["type"]), "width": in_t["type"].width,
                  "frac": in_t["type"].frac_bits, "signed": in_t["type"].signed},
        "output": {**out_t, "axis_w": axis_width(out_t["type"]), "width": out_t["type"].width,
                   "frac": out_t["type"].frac_bits, "signed": out_t["type"].signed},
        "tensors": [tensors[t] for t in order],
        "layers": layers, "streams": streams, "fanouts": fanouts,
        "in_stream": in_stream, "out_stream": out_stream,
        "memory": mem, "graph": g, "design": design,
    }
    return plan


def _const_array(L: dict, role: str, prefix: str, c: Const, dims: str) -> dict:
    raw, t = const_mantissas(c, f"layer {L['name_comment']!r} {role}")
    flat = np.asarray(raw).reshape(-1)
    lo = int(min(flat.tolist())) if flat.size else 0
    hi = int(max(flat.tolist())) if flat.size else 0
    return {"role": role, "name": f"{prefix}_{L['id']}", "ctype": raw_ctype(lo, hi), "type": t,
            "depth": int(flat.size), "width": t.width, "lines": fmt_array(flat), "dims": dims,
            "min": lo, "max": hi}


def _layer_plan(g: Graph, n: Node, lid: str, tensors: dict, lopts: dict) -> dict:
    ins = [tensors[i] for i in n.inputs]
    out = tensors[n.outputs[0]]
    x_t: FixedType = ins[0]["type"]
    y_t: FixedType = out["type"]
    L: dict[str, Any] = {"id": lid, "op": n.op, "name_comment": names.comment(n.name),
                         "func": f"layer_{lid}", "cfg": f"cfg_{lid}", "inputs": ins, "output": out,
                         "arrays": [], "types": [], "sizes": [], "opts": lopts, "acc": None,
                         "params_bits": 0, "macs": 0, "n_params": 0}
    ty, sz = L["types"], L["sizes"]

    def shape3(t):
        s = t["shape"]
        if len(s) == 3:
            return s
        if len(s) == 1:
            return [s[0], 1, 1]
        raise BackendError(f"layer {L['name_comment']!r}: unsupported tensor shape {s}")

    if n.op in ("dense", "conv2d"):
        _matmul_plan(L, n, ins, out, x_t, y_t, shape3)
    elif n.op == "batchnorm":
        sa = _const_array(L, "scale", "scale", n.params["scale"], "[n_chan]")
        ha = _const_array(L, "shift", "shift", n.params["shift"], "[n_chan]")
        c, h, wd = shape3(ins[0])
        L["arrays"] = [sa, ha]
        ty += [("in_t", x_t.cpp()), ("scale_t", sa["type"].cpp()), ("shift_t", ha["type"].cpp()),
               ("out_t", y_t.cpp()), ("scale_raw_t", sa["ctype"]), ("shift_raw_t", ha["ctype"])]
        sz += [("n_chan", c), ("n_pixels", h * wd)]
        L["params_bits"] = sa["depth"] * sa["width"] + ha["depth"] * ha["width"]
        L["n_params"] = sa["depth"] + ha["depth"]
        L["macs"] = c * h * wd
        L["kernel"] = "batchnorm"
        L["shape"] = LayerShape("fixed_mul", a_bits=signed_bits(x_t.width, x_t.signed),
                                b_bits=signed_bits(sa["type"].width, sa["type"].signed), fixed_cycles=c * h * wd)
    elif n.op in ("relu", "clip", "quant"):
        ty += [("in_t", x_t.cpp()), ("out_t", y_t.cpp())]
        sz += [("n", ins[0]["count"])]
        L["kernel"] = {"relu": "relu", "clip": "clip", "quant": "cast"}[n.op]
        if n.op == "clip":
            L["longs"] = [("lo_raw", int(n.attrs["lo"])), ("hi_raw", int(n.attrs["hi"]))]
        if n.op != "quant" and x_t != y_t:
            raise BackendError(f"layer {L['name_comment']!r} ({n.op}) must keep its input type")
    elif n.op == "add":
        if len(ins) != 2:
            raise BackendError(f"add layer {L['name_comment']!r} needs two inputs, has {len(ins)}")
        ty += [("in_a_t", x_t.cpp()), ("in_b_t", ins[1]["type"].cpp()), ("out_t", y_t.cpp())]
        sz += [("n", out["count"])]
        L["kernel"] = "add"
    elif n.op in ("maxpool", "avgpool"):
        c, h, wd = shape3(ins[0])
        ph, pw = _pair(n.attrs.get("kernel"), 2)
        sh, sw = _pair(n.attrs.get("stride"), ph)
        if any(_pads(n.attrs.get("pads"))):
            raise BackendError(f"pooling layer {L['name_comment']!r}: padding is not supported")
        oh, ow = (h - ph) // sh + 1, (wd - pw) // sw + 1
        if [c, oh, ow] != shape3(out):
            raise BackendError(f"pooling layer {L['name_comment']!r}: output shape {out['shape']} does not agree")
        sz += [("in_height", h), ("in_width", wd), ("n_chan", c), ("pool_height", ph), ("pool_width", pw),
               ("stride_height", sh), ("stride_width", sw), ("out_height", oh), ("out_width", ow)]
        if n.op == "maxpool":
            ty += [("in_t", x_t.cpp()), ("out_t", y_t.cpp())]
            L["kernel"] = "maxpool2d"
        else:
            _avg_types(L, n, x_t, y_t, ph * pw)
            L["kernel"] = "avgpool2d"
        L["stream_cycles"] = c * h * wd + (c * oh * ow if n.op == "avgpool" else 0)
    elif n.op == "global_avgpool":
        c, h, wd = shape3(ins[0])
        sz += [("in_height", h), ("in_width", wd), ("n_chan", c)]
        _avg_types(L, n, x_t, y_t, h * wd)
        L["kernel"] = "global_avgpool"
        L["stream_cycles"] = c * h * wd + c
    else:
        raise BackendError(f"layer {L['name_comment']!r}: op {n.op!r} has no HLS kernel in this backend")
    L.setdefault("longs", [])
    L.setdefault("ints", [])
    L.setdefault("callee", f"qfx::{L['kernel']}<{L['cfg']}>")
    L.setdefault("straight", None)
    if "shape" not in L:
        L["shape"] = LayerShape("stream")
    if L["shape"].kind != "mul" and not L["shape"].fixed_cycles:
        L["shape"].fixed_cycles = int(L.get("stream_cycles", max(i["count"] for i in ins)))
    L["args_in"] = len(ins)
    return L


def _choose_parallelism(layers: list[dict], opts: PlanOptions) -> DesignEstimate:
    """Reuse and mul_impl of every layer (config first, then the default choice), and the estimates."""
    t = opts.target
    shapes = [L["shape"] for L in layers]
    impl = [int(L["opts"].get("mul_impl", 0)) for L in layers]
    fixed = []
    for L, s in zip(layers, shapes):
        r = int(L["opts"].get("reuse", 0))
        if r and s.kind != "mul":
            if not L.get("has_reuse"):
                raise BackendError(f"config: layer {L['name_comment']!r} ({L['kernel']}) has no reuse option "
                                   f"(dense / conv2d layers with multipliers and shift-add table kernels do; "
                                   f"straight-line shift-add code computes a whole output vector per cycle)")
            products, k, read, outputs, writes, width = L["sa_table"]
            r = min(r, products)
            units = math.ceil(products / r)
            L["fixed_reuse"] = r
            L["shape"] = s = LayerShape("shiftadd", adders=units * k, adder_bits=units * k * width,
                                        fixed_cycles=read + outputs * (math.ceil(products / units) + writes))
            shapes[len(fixed)] = s
        if r > s.max_reuse and s.kind == "mul":
            raise BackendError(f"config: reuse {r} of layer {L['name_comment']!r} is more than its "
                               f"{s.max_reuse} products per output; use 1..{s.max_reuse}")
        fixed.append(r if (r and s.kind == "mul") else None)
    budget = int(t.dsp * DSP_SHARE)
    try:
        reuse = choose_reuse(shapes, fixed, impl, t.dsp_kind, budget)
    except FitError as e:
        need = int(e.args[0])
        per = sorted(((estimate_layer(s, (f or s.max_reuse) if s.kind == "mul" else None, m, t.dsp_kind).dsp,
                       L["name_comment"]) for L, s, f, m in zip(layers, shapes, fixed, impl)), reverse=True)[:3]
        top = ", ".join(f"{nm} {d}" for d, nm in per if d)
        raise BackendError(
            f"the model needs {need} DSPs even at maximum reuse (one multiplier per layer), more than "
            f"{budget} ({int(DSP_SHARE * 100)}% of the {t.dsp} {t.dsp_kind} of {t.name}); largest: {top}. "
            f"Set mul_impl 2 (LUTs) for some layers in --config, use K-hot weights, or choose a bigger target.")
    ests = []
    for L, s, r, m in zip(layers, shapes, reuse, impl):
        e = estimate_layer(s, r, m, t.dsp_kind)
        if L.get("fixed_reuse"):
            e.reuse = L["fixed_reuse"]
        ests.append(e)
        L["est"] = e
        if L.get("has_reuse"):
            L["sizes"].append(("reuse", int(e.reuse)))
        if s.kind in ("mul", "fixed_mul") or L.get("has_reuse"):
            L["ints"] = [("mul_impl", m)]
    return DesignEstimate(ests, opts.clock_ns)


def _matmul_plan(L: dict, n: Node, ins: list, out: dict, x_t: FixedType, y_t: FixedType, shape3) -> None:
    """dense / conv2d: multiplier kernels, or shift-add (straight-line code or table kernels) for K-hot weights."""
    w, b = n.params["weight"], n.params.get("bias")
    ty, sz = L["types"], L["sizes"]
    conv = n.op == "conv2d"
    if b is None:
        b = Const(raw=np.zeros(w.raw.shape[0], dtype=np.int64), type=FixedType(1, 1, True))
    wa = _const_array(L, "weight", "w", w, "[n_filt][kh][kw][n_chan]" if conv else "[n_out][n_in]")
    ba = _const_array(L, "bias", "b", b, "[n_filt]" if conv else "[n_out]")
    w_raw_u = const_mantissas(w, f"layer {L['name_comment']!r} weight")[0]
    b_raw_u = const_mantissas(b, f"layer {L['name_comment']!r} bias")[0]
    acc = required_acc_type(n, f"layer {L['name_comment']!r}")
    L["acc"] = acc
    L["params_bits"] = wa["depth"] * wa["width"] + ba["depth"] * ba["width"]
    L["n_params"] = wa["depth"] + (ba["depth"] if n.params.get("bias") is not None else 0)
    if not conv:
        n_out, n_in = int(w.raw.shape[0]), int(np.prod(w.raw.shape[1:]))
        if n_in != ins[0]["count"] or n_out != out["count"]:
            raise BackendError(f"layer {L['name_comment']!r}: weight shape {w.raw.shape} does not match "
                               f"input {ins[0]['count']} / output {out['count']}")
        sz += [("n_in", n_in), ("n_out", n_out)]
        L["macs"] = n_in * n_out
        products, read, outputs, natural = n_in * n_out, n_in, 1, n_out
        writes = n_out
    else:
        c, h, wd = shape3(ins[0])
        f, kh, kw, cc = (int(s) for s in w.raw.shape)
        kh2, kw2 = _pair(n.attrs.get("kernel"), kh)
        sh, sw = _pair(n.attrs.get("stride"), 1)
        pt, pb, pl, pr = _pads(n.attrs.get("pads"))
        oh = (h + pt + pb - kh) // sh + 1
        ow = (wd + pl + pr - kw) // sw + 1
        if cc != c or (kh2, kw2) != (kh, kw) or [f, oh, ow] != shape3(out):
            raise BackendError(f"conv layer {L['name_comment']!r}: shapes do not agree "
                               f"(input {ins[0]['shape']}, weight {tuple(w.raw.shape)}, output {out['shape']})")
        sz += [("in_height", h), ("in_width", wd), ("n_chan", c), ("n_filt", f), ("filt_height", kh),
               ("filt_width", kw), ("stride_height", sh), ("stride_width", sw), ("pad_top", pt),
               ("pad_bottom", pb), ("pad_left", pl), ("pad_right", pr), ("out_height", oh), ("out_width", ow)]
        L["macs"] = f * kh * kw * c * oh * ow
        products, read, outputs, natural = f * kh * kw * c, (h + pt + pb) * (wd + pl + pr) * c, oh * ow, f
        writes = f
    L["kernel"] = n.op
    if w.k_hot is None:
        L["arrays"] = [wa, ba]
        ty += [("in_t", x_t.cpp()), ("w_t", wa["type"].cpp()), ("b_t", ba["type"].cpp()), ("acc_t", acc.cpp()),
               ("out_t", y_t.cpp()), ("w_raw_t", wa["ctype"]), ("b_raw_t", ba["ctype"])]
        L["shape"] = LayerShape("mul", products=products, read_cycles=read, outputs=outputs, max_reuse=products,
                                natural_reuse=natural, writes=writes, a_bits=signed_bits(x_t.width, x_t.signed),
                                b_bits=signed_bits(wa["type"].width, wa["type"].signed))
        L["has_reuse"] = True
        return
    # ---- K-hot: shift-add, no multiplier
    terms = shiftadd.layer_terms(np.asarray(w.raw), np.asarray(w.frac_bits()))
    n_terms = sum(len(t) for t in terms)
    if n_terms <= shiftadd.STRAIGHT_LINE_MAX_TERMS:
        if conv:
            def pos(i, _c=c, _kw=kw):
                return i // (_c * _kw), (i // _c) % _kw, i % _c

            def leaf(i):
                return "m_{}_{}_{}".format(*pos(i))

            def element(i):
                return "x[{}][{}][{}]".format(*pos(i))
        else:
            def leaf(i):
                return f"m{i}"

            def element(i):
                return f"x[{i}]"
        code = shiftadd.layer_code(terms, x_t, [int(v) for v in b_raw_u.reshape(-1).tolist()], ba["type"], leaf,
                                   element)
        L["arrays"] = [ba]
        L["acc"] = code.widest or acc
        ty += [("in_t", x_t.cpp()), ("b_t", ba["type"].cpp()), ("out_t", y_t.cpp()), ("b_raw_t", ba["ctype"])]
        L["straight"] = {"name": f"sa_{L['id']}", "body": code.body, "terms": code.terms, "adders": code.adders,
                         "depth": code.depth,
                         "x_dims": f"[{kh}][{kw}][{c}]" if conv else f"[{n_in}]",
                         "n_out": f if conv else n_out}
        L["callee"] = f"qfx_gen::{'conv2d' if conv else 'dense'}_straight<{L['cfg']}, {L['straight']['name']}>"
        L["kernel"] = f"{n.op} shift-add"
        L["shape"] = LayerShape("shiftadd", adders=code.adders, adder_bits=code.adder_bits,
                                fixed_cycles=read + outputs * (1 + writes))
        return
    sign, shift, k = shiftadd.sign_shift_tables(w_raw_u)
    mk = dict(type=FixedType(8, 8, True), ctype="int8_t", width=8, depth=int(sign.size),
              dims=("[n_filt][kh][kw][n_chan]" if conv else "[n_out][n_in]") + "[n_terms]")
    sa = {"role": "sign", "name": f"wsign_{L['id']}", "lines": fmt_array(sign), "min": int(sign.min()),
          "max": int(sign.max()), **mk}
    sha = {"role": "shift", "name": f"wshift_{L['id']}", "lines": fmt_array(shift), "min": int(shift.min()),
           "max": int(shift.max()), **mk}
    L["arrays"] = [sa, sha, ba]
    ty += [("in_t", x_t.cpp()), ("w_t", wa["type"].cpp()), ("b_t", ba["type"].cpp()), ("acc_t", acc.cpp()),
           ("out_t", y_t.cpp()), ("w_raw_t", wa["ctype"]), ("b_raw_t", ba["ctype"])]
    sz.append(("n_terms", k))
    L["kernel"] = f"{n.op}_shiftadd"
    # the table kernel at reuse n_out / n_filt: ceil(P / reuse) term units of n_terms shift-adds each
    units = math.ceil(products / natural)
    L["shape"] = LayerShape("shiftadd", adders=units * k, adder_bits=units * k * acc.width,
                            fixed_cycles=read + outputs * (math.ceil(products / units) + writes))
    L["sa_table"] = (products, k, read, outputs, writes, acc.width)
    L["has_reuse"] = True
    L["fixed_reuse"] = natural


def _avg_types(L: dict, n: Node, x_t: FixedType, y_t: FixedType, count: int) -> None:
    acc = required_acc_type(n, f"layer {L['name_comment']!r}")
    recip = n.attrs["recip"].type  # set by ir.passes.infer_shapes (rule: qfx.types.reciprocal_type)
    rb = recip.width
    L["acc"] = acc
    L["types"] += [("in_t", x_t.cpp()), ("acc_t", acc.cpp()), ("recip_t", recip.cpp()), ("out_t", y_t.cpp())]
    # one multiplier S * r per output (a shift when N is a power of two)
    L["shape"] = LayerShape("stream" if count & (count - 1) == 0 else "fixed_mul",
                            a_bits=signed_bits(acc.width, acc.signed), b_bits=rb + 1, fixed_cycles=0)
    L["ints"] = [("mul_impl", int(L["opts"].get("mul_impl", 0)))]


def _streams(g: Graph, tensors: dict, layers: list[dict]):
    """Stream variables: each tensor gets one stream; a tensor read by several consumers
    (a residual fork) is copied by a chain of 2-way fan-outs into one stream per reader."""
    streams: list[dict] = []
    fanouts: list[dict] = []
    port: dict[tuple, str] = {}
    readers: dict[str, list[tuple]] = {}
    for li, n in enumerate(g.nodes):
        for pi, tn in enumerate(n.inputs):
            readers.setdefault(tn, []).append((li, pi))
    out_name = g.outputs[0]
    readers.setdefault(out_name, []).append(("out", 0))
    produced: dict[str, str] = {}
    for tn in [g.inputs[0]] + [o for n in g.nodes for o in n.outputs]:
        T = tensors[tn]
        prod = g.producer(tn)
        depth = int(layers[g.nodes.index(prod)]["opts"]["stream_depth"]) if prod is not None else 2
        main = f"s_{T['id']}"
        streams.append({"var": main, "typedef": T["typedef"], "depth": depth, "comment": T["comment"],
                        "count": T["count"]})
        produced[tn] = main
        rd = readers.get(tn, [])
        if len(rd) <= 1:
            for r in rd:
                port[r] = main
            continue
        # a fork: every copy may have to hold the whole map while the other branch works
        deep = max(2, int(T["count"]))
        src = main
        for k, r in enumerate(rd):
            var = f"s_{T['id']}_c{k}"
            streams.append({"var": var, "typedef": T["typedef"], "depth": deep,
                            "comment": f"copy {k} of {T['comment']}", "count": T["count"]})
            port[r] = var
        for k in range(len(rd) - 1):
            a = f"s_{T['id']}_c{k}"
            if k == len(rd) - 2:
                b = f"s_{T['id']}_c{k + 1}"
            else:
                b = f"s_{T['id']}_r{k}"
                streams.append({"var": b, "typedef": T["typedef"], "depth": 2,
                                "comment": f"rest of {T['comment']}", "count": T["count"]})
            fanouts.append({"src": src, "a": a, "b": b, "typedef": T["typedef"], "count": T["count"],
                            "comment": T["comment"]})
            src = b
    for li, L in enumerate(layers):
        n = g.nodes[li]
        L["in_streams"] = [port[(li, pi)] for pi in range(len(n.inputs))]
        L["out_stream"] = produced[n.outputs[0]]
    return streams, fanouts, produced[g.inputs[0]], port[("out", 0)]


def vectors_for_files(graph: Graph, n_max: int | None) -> tuple[list[str], list[str], int]:
    """Input and expected output mantissas in stream order, one line per vector."""
    v = graph.vectors
    ins = chw_to_stream(np.asarray(v.input_raw))
    outs = chw_to_stream(np.asarray(v.output_raw))
    n = ins.shape[0] if n_max is None else min(n_max, ins.shape[0])
    lines_in = [" ".join(str(int(x)) for x in row.tolist()) for row in ins[:n]]
    lines_out = [" ".join(str(int(x)) for x in row.tolist()) for row in outs[:n]]
    return lines_in, lines_out, n
