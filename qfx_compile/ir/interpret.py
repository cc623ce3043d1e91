"""Run an IR graph on integer mantissas, exactly as docs/semantics.md states.

Every value is a pair ``(raw, type)``: ``raw`` has a leading batch axis and
holds mantissas (int64, or Python ints in an object array where a bound
exceeds 62 bits); every cast goes through ``qfx.requantize_raw``. The graph's
input is given either as mantissas of the input quantizer's type (``x_raw``)
or as floats (``x_float``), which the input quantizer casts exactly.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..fixed.cast import float_to_raw  # noqa: F401  (re-exported: the interpreter's input cast)
from ..fixed.types import FixedType
from .graph import Graph
from .ops import get
from .passes.shapes import infer_shapes


def input_quant(graph: Graph):
    """The node that casts the float graph input (``quant``), or None when the input is typed."""
    name = graph.inputs[0]
    if graph.tensors[name].type is not None:
        return None
    cons = graph.consumers(name)
    if len(cons) != 1 or cons[0].op != "quant":
        raise ValueError(f"graph {graph.name!r}: the float input {name!r} must feed exactly one quant node")
    return cons[0]


def input_type(graph: Graph) -> FixedType:
    """The type whose mantissas the compiled design receives."""
    q = input_quant(graph)
    return graph.tensors[graph.inputs[0]].type if q is None else q.attrs["out_type"]


def float_input_raw(graph: Graph, x_float) -> np.ndarray:
    """Mantissas of :func:`input_type` for float inputs, exactly as the model's input boundary computes them:
    the input quantizer's cast, or a QONNX boundary (``attrs["input_map"]``: float pre-processing and a
    quantizer with a float scale, zero point, any rounding mode), or the typed input's own cast."""
    q = input_quant(graph)
    if q is None:
        return float_to_raw(x_float, graph.tensors[graph.inputs[0]].type)
    imap = q.attrs.get("input_map")
    return imap.codes(x_float) if imap is not None else float_to_raw(x_float, q.attrs["out_type"])


def input_codes(graph: Graph) -> tuple[int, int, int]:
    """``(lo, hi, step)``: the input mantissas the model can receive, ``lo, lo + step, ..., hi``.

    The input type's range, except: AP_SAT_SYM never produces ``-2**(W-1)``; a QONNX boundary quantizer
    (``input_map``) records its own codes (a narrow range, bipolar -1/+1) in ``attrs["input_codes"]``, a
    typed input with a FINN BIPOLAR annotation in ``metadata["qfx.input_codes"]``.
    """
    from ..fixed.types import sat_sym_raw_min
    q = input_quant(graph)
    if q is not None and "input_codes" in q.attrs:
        lo, hi, step = q.attrs["input_codes"]
        return int(lo), int(hi), int(step)
    if q is None and graph.metadata.get("qfx.input_codes"):  # a typed input with its own codes (FINN BIPOLAR)
        lo, hi, step = (int(v) for v in graph.metadata["qfx.input_codes"].split(","))
        return lo, hi, step
    t = input_type(graph)
    lo = sat_sym_raw_min(t.width, t.signed) if t.overflow == "AP_SAT_SYM" else t.raw_min
    return lo, t.raw_max, 1


def as_input_shape(x, shape) -> np.ndarray:
    """A batch of 1-D maps (N, C, L) as the IR's (N, C, 1, L) when the input is a 1-D map; else ``x``."""
    x = np.asarray(x)
    if shape is not None and len(shape) == 3 and shape[1] == 1 and x.ndim == 3 and \
            tuple(x.shape[1:]) == (shape[0], shape[2]):
        return x.reshape((x.shape[0],) + tuple(shape))
    return x


def run_all(graph: Graph, x_raw=None, *, x_float=None) -> dict[str, tuple[np.ndarray, FixedType]]:
    """Every tensor's ``(raw, type)`` for a batch of inputs (first axis = batch)."""
    if graph.nodes and any(graph.tensors[o].type is None for n in graph.nodes for o in n.outputs):
        graph = infer_shapes(graph)
    name = graph.inputs[0]
    shape = graph.tensors[name].shape
    q = input_quant(graph)
    env: dict[str, tuple[np.ndarray, FixedType]] = {}
    if (x_raw is None) == (x_float is None):
        raise ValueError("give exactly one of x_raw (mantissas of the input type) or x_float")
    x_raw, x_float = (None if v is None else as_input_shape(v, shape) for v in (x_raw, x_float))
    skip = None
    if x_raw is not None:
        t = input_type(graph)
        raw = np.asarray(x_raw)
        if raw.dtype != object and raw.dtype.kind not in "iu":
            raise ValueError(f"x_raw must hold integer mantissas, got dtype {raw.dtype}")
        if tuple(raw.shape[1:]) != tuple(shape):
            raise ValueError(f"x_raw has shape {raw.shape}; expected (N, {', '.join(map(str, shape))})")
        if raw.size and (raw.min() < t.raw_min or raw.max() > t.raw_max):
            raise ValueError(f"x_raw holds mantissas outside {t}")
        if q is None:
            env[name] = (raw, t)
        else:
            env[q.outputs[0]] = (raw, t)
            skip = q
    else:
        xf = np.asarray(x_float)
        if tuple(xf.shape[1:]) != tuple(shape):
            raise ValueError(f"x_float has shape {xf.shape}; expected (N, {', '.join(map(str, shape))})")
        if q is None:
            env[name] = (float_to_raw(xf, graph.tensors[name].type), graph.tensors[name].type)
        else:
            t = q.attrs["out_type"]
            imap = q.attrs.get("input_map")  # a QONNX quantizer boundary (ir.exact_real.InputMap), exact
            env[q.outputs[0]] = (imap.codes(xf) if imap is not None else float_to_raw(xf, t), t)
            skip = q
    for node in graph.nodes:
        if node is skip:
            continue
        op = get(node.op)
        ins = [env[i] for i in node.inputs]
        out = op.run(node, ins)
        env[node.outputs[0]] = (out, graph.tensors[node.outputs[0]].type)
    return env


def run(graph: Graph, x_raw=None, *, x_float=None) -> np.ndarray:
    """Output mantissas (of the output tensor's type) for a batch of inputs."""
    return run_all(graph, x_raw, x_float=x_float)[graph.outputs[0]][0]


def output_type(graph: Graph) -> FixedType:
    return graph.tensors[graph.outputs[0]].type


def to_fractions(raw, t: FixedType) -> np.ndarray:
    """Exact values ``raw * 2**-F`` as an object array of ``Fraction``."""
    raw = np.asarray(raw)
    scale = Fraction(2) ** -t.frac_bits
    return np.array([Fraction(int(v)) * scale for v in raw.ravel()], dtype=object).reshape(raw.shape)


def to_float64(raw, t: FixedType) -> np.ndarray:
    """Values as float64; raises when they are not exactly representable."""
    fr = to_fractions(raw, t)
    out = np.array([float(v) for v in fr.ravel()], dtype=np.float64).reshape(fr.shape)
    if any(Fraction(o) != v for o, v in zip(out.ravel(), fr.ravel())):
        raise ValueError(f"values of {t} are not exact in float64")
    return out
