"""Hardware cost of a QFX model in training: ``qfx.hardware_cost(model, target, example_input)``.

The integers (DSP, LUT, BRAM18, cycles) are the compiler's own estimate of the
current model: the model is exported (:func:`qfx.export_onnx`, no vectors), read by
the frontend, typed by the IR passes and planned by the backend, whose
:mod:`~qfx_compile.backend.estimate` (the one place of the cost rules) prices every
layer at the reuse the compiler would choose. They equal the ``report.json`` of
``qfx-compile`` on the exported file.

The tensors (``dsp_t``, ``lut_t``, ``bram_t``, ``total``) have exactly those values
and the gradient of a smooth surrogate of the estimator's formulas where they depend
on the learned integer bits: with per-channel binary points the compiler aligns a
constant to the finest channel's binary point (``ir.passes.unify_consts``: the mantissas at
``F = W - min_c I_c`` in the smallest type that holds them), so its width grows one bit per
bit that the finest channel's ``I`` goes down; that width is a multiplier operand (DSPs per product
``ceil(a/27) * ceil(b/18)``, fabric LUTs ``a*b/2 + max(a, b)``), the width of the
shift-add adders of K-hot layers, and the width of the constant arrays (BRAM18
``ceil(width/18)`` per 1,024 words, LUTRAM ``bits/64``). ``min_c I_c`` is relaxed to a
log-sum-exp soft minimum at temperature :data:`TEMPERATURE`, and each ``ceil`` to its
argument, so ``d cost / d I_c`` is nonzero (negative) exactly on the channels whose binary
point sets the common width. (Raising the top channel's ``I`` widens nothing: its values
keep their magnitude and lose low bits, checked in tests/test_hardware_cost.py.) Widths that do not depend on ``I`` (a per-tensor type keeps its width
whatever its binary point) get no gradient from ``I``.

Learned word lengths (``QFXConfig(learn_width=True)``, :meth:`Quantizer.learn_width`): a weight
width W moves the constant operand, the adders and the constant arrays one bit per bit as above;
the width of the activation cast that feeds a multiplier or a shift-add layer (through layers
without a cast of their own: ReLU, max pooling, flatten) moves its other operand: fabric LUTs
``m * (b/2 + [a > b])`` per bit, DSPs ``ceil`` of the other operand over the port, relaxed as
above, and the shift-add adders one bit each. Not in the gradient (in the integers): a product
that moves between DSPs and LUTs at 4 bits, the reuse the compiler then picks, FIFOs.

Usage: ``cost = qfx.hardware_cost(model, "ultra96", x[:1]); loss = ce + lam * cost.total``
(``total`` = DSP, LUT and BRAM18 as shares of the part, summed). One call exports and
plans the model (about as long as a compile without the C++), so call it every few steps.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile

import torch

#: Temperature of the smooth max/min of per-channel integer bits (in bits).
TEMPERATURE = 0.5

_ARRAY_QUANTIZER = {"weight": "weight_quantizer", "bias": "bias_quantizer", "scale": "scale_quantizer",
                    "shift": "shift_quantizer"}


@dataclasses.dataclass
class HardwareCost:
    """The compiler's estimate of a QFX model (integers) and its differentiable twins (tensors)."""
    target: str
    dsp: int
    lut: int            # datapath (multipliers, adders) plus LUTRAM of small constant arrays
    bram18: int
    cycles: int         # interval: cycles per sample of the slowest layer (DATAFLOW)
    latency: int        # cycles along the longest path of the dataflow graph (report.json latency_cycles)
    samples_per_s: float
    dsp_t: torch.Tensor
    lut_t: torch.Tensor
    bram_t: torch.Tensor
    total: torch.Tensor  # dsp/part DSPs + lut/part LUTs + bram/part BRAM18
    layers: list

    def as_dict(self) -> dict:
        return {"target": self.target, "dsp": self.dsp, "lut": self.lut, "bram18": self.bram18,
                "cycles": self.cycles, "latency": self.latency, "samples_per_s": self.samples_per_s}


def _spread(q) -> torch.Tensor | None:
    """Smooth ``-min_c I_c`` of a per-channel quantizer: the bits its common type adds below the
    coarsest binary point (None for one binary point per tensor)."""
    if q is None or not getattr(q, "per_channel", False):
        return None
    ib = q.int_bits_param
    if ib.numel() < 2:
        return None
    t = TEMPERATURE
    return t * torch.logsumexp(-ib / t, 0)


def _width_delta(q) -> torch.Tensor | None:
    """A learned word length's change in bits: value 0, gradient 1 (None when W is not learned)."""
    p = getattr(q, "width_param", None)
    return None if p is None or not p.requires_grad else p - p.detach()


def _delta(q) -> torch.Tensor | None:
    """The surrogate's change of a constant's width in bits: value 0, gradient of the smooth spread
    and of a learned width."""
    s = _spread(q)
    parts = [d for d in (None if s is None else s - s.detach(), _width_delta(q)) if d is not None]
    return sum(parts) if parts else None


def _input_quantizers(model) -> dict:
    """Module name -> the quantizer of the cast that feeds its first input (through layers without one)."""
    from torch import fx
    from .quantizer import Quantizer
    if not isinstance(model, fx.GraphModule):
        return {}

    def source(node):
        while isinstance(node, fx.Node) and node.op == "call_module":
            q = getattr(model.get_submodule(node.target), "output_quantizer", None)
            if isinstance(q, Quantizer):
                return q
            ins = [a for a in node.args if isinstance(a, fx.Node)]
            node = ins[0] if len(ins) == 1 else None
        return None
    return {str(n.target): source(n.args[0]) for n in model.graph.nodes
            if n.op == "call_module" and n.args and isinstance(n.args[0], fx.Node)}


def _array_slope(width: int, depth: int) -> tuple[float, float]:
    """(BRAM18, LUT) per added bit of width of a constant array (targets.estimate_array, relaxed)."""
    from ..targets import SMALL_ARRAY_BITS, LUTRAM_BITS_PER_LUT
    if width * depth <= SMALL_ARRAY_BITS:
        return 0.0, depth / LUTRAM_BITS_PER_LUT
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) / 18, 0.0
    return math.ceil(depth / 512) / 36, 0.0


def _module(model, name_comment: str):
    """(qualified name, module) of a plan layer's ``name_comment`` ((name, None) when not found).

    The exporter names nodes ``<module path>/<op>``; the lowering adds ``/<core>`` to the two cores
    and the merge of a layer with mixed rows, so the module path is what precedes the first ``/``.
    """
    name = name_comment.split("/", 1)[0]
    for n in (name, name.replace(".", "_")):
        try:
            return n, model.get_submodule(n)
        except (AttributeError, ValueError):
            pass
    return name, None


def hardware_cost(model, target="ultra96", example_input=None, *, clock_ns: float | None = None,
                  config: str | None = None) -> HardwareCost:
    """Estimated DSP, LUT, BRAM18 and cycles of ``model`` on ``target`` (see the module doc).

    ``example_input``: one input batch (or its shape) to trace the model for export.
    ``config``: a per-layer options file as for ``qfx-compile --config``.
    """
    from ..backend import estimate as E
    from ..backend.plan import PlanOptions, build_plan
    from ..backend.project import resolve_target
    from ..frontend import load_model
    from ..ir.passes import run_default_passes
    from .export import export_onnx

    if example_input is None:
        raise ValueError("hardware_cost needs example_input: one input batch (or its shape, e.g. (1, 1, 28, 28)) "
                         "to trace the model for export")
    if not isinstance(example_input, torch.Tensor):
        example_input = torch.zeros(tuple(int(v) for v in example_input))
    t, part, clock = resolve_target(target, None, clock_ns)
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="qfx_cost_") as d:
            path = export_onnx(model, example_input[:1], os.path.join(d, "model.onnx"), vectors=0)
            graph = run_default_passes(load_model(path))
    finally:
        model.train(was_training)
    plan = build_plan(graph, PlanOptions(target=t, part=part, clock_ns=clock, config_path=config))
    de, mem = plan.design, plan.memory

    ref = next((p for p in model.parameters()), torch.zeros(()))
    zero = torch.zeros((), dtype=torch.float32, device=ref.device)
    dsp_s, lut_s, bram_s = zero, zero, zero
    rows = []
    feeds = _input_quantizers(model)
    for L in plan.layers:
        name, mod = _module(model, L.name_comment)
        e, s = L.est, L.cost
        row = {"layer": L.name_comment, "kind": s.kind, "dsp": e.dsp, "lut": e.lut, "cycles": e.cycles}
        rows.append(row)
        if mod is None:
            continue
        # the multiplier's constant operand (weights, BatchNorm scale) and the K-hot adders
        qname = "weight_quantizer" if hasattr(mod, "weight_quantizer") else "scale_quantizer"
        dw = _delta(getattr(mod, qname, None))
        dx = _width_delta(feeds.get(name))  # the other operand: the input activation's learned width
        if s.kind in ("mul", "fixed_mul") and e.multipliers:
            a, b = s.a_bits, s.b_bits
            pa, pb = E.DSP_PORTS.get(t.dsp_kind, E.DSP_PORTS["DSP48E2"])
            for d, other, top in ((dw, a, b >= a), (dx, b, a > b)):
                if d is None:
                    continue
                if e.to_luts:  # m * (a*b/2 + max(a, b)): this operand grows by d
                    lut_s = lut_s + e.multipliers * (other / 2 + (1.0 if top else 0.0)) * d
                else:
                    slope = (math.ceil(other / pb) / pa) if top else (math.ceil(other / pa) / pb)
                    dsp_s = dsp_s + e.multipliers * slope * d
        elif s.kind == "shiftadd" and e.adders:
            for d in (dw, dx):  # every adder one bit wider per bit of either operand
                if d is not None:
                    lut_s = lut_s + e.adders * d
        for arr in L.arrays:
            q = getattr(mod, _ARRAY_QUANTIZER.get(arr.role, ""), None)
            da = _delta(q)
            if da is None:
                continue
            sb, sl = _array_slope(arr.width, arr.depth)
            bram_s = bram_s + sb * da
            lut_s = lut_s + sl * da
    dsp, lut, bram = de.dsp, de.lut + mem.lut, mem.bram18
    dsp_t = dsp_s + float(dsp)
    lut_t = lut_s + float(lut)
    bram_t = bram_s + float(bram)
    total = dsp_t / t.dsp + lut_t / t.lut + bram_t / t.bram18
    return HardwareCost(t.name, dsp, lut, bram, de.interval_cycles, de.latency_cycles, de.samples_per_s,
                        dsp_t, lut_t, bram_t, total, rows)
