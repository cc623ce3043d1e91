"""Brevitas models of the kinds users bring (TFC/KWS/CNV-like), exported with ``export_qonnx``, and the
QONNX reference executor as the independent oracle (used by tests/test_qonnx_models.py and bench/qonnx_peers.py).

The executor computes in float32. Where our exact result differs from it, the difference must be a
float32 rounding of the reference: the same executor, run on a float64 copy of the model (its own
``int_quant`` on float64 inputs; qonnx's Quant node otherwise casts its output to float32), then
agrees with our exact result. ``compare`` counts those cases; any other difference is an error.
"""
from __future__ import annotations

import contextlib
import copy
import types

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper

import brevitas.export.onnx.manager as _mgr
import brevitas.nn as qnn
from brevitas.export import export_qonnx

if _mgr.opt is None:  # see tests/test_brevitas_import.py: torch's TorchScript exporter path, no onnxoptimizer
    _mgr.opt = types.ModuleType("onnxoptimizer_stub")
    _mgr.opt.optimize = lambda model, passes=None: model
if _mgr.onnx is None:
    _mgr.onnx = onnx


def export(m: torch.nn.Module, shape, path, calib=None, seed=0):
    torch.manual_seed(seed)
    m.train()
    for _ in range(4):
        m(calib() if calib else torch.randn(32, *shape))
    m.eval()
    export_qonnx(m, torch.zeros(1, *shape), str(path), dynamo=False)
    return str(path)


def _wrapper(path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model
    return cleanup_model(ModelWrapper(str(path)))


def _run(mw, x, dtype):
    from qonnx.core.onnx_exec import execute_onnx
    i, o = mw.graph.input[0].name, mw.graph.output[0].name
    return np.concatenate([np.asarray(execute_onnx(mw, {i: x[k:k + 1].astype(dtype)})[o]) for k in range(len(x))])


def reference(path, x) -> np.ndarray:
    """The QONNX executor's float32 output."""
    return _run(_wrapper(path), np.asarray(x, dtype=np.float32), np.float32)


@contextlib.contextmanager
def _float64_quant():
    from qonnx.custom_op.general import intquant

    def execute_node(self, context, graph):
        n = self.onnx_node
        context[n.output[0]] = np.asarray(intquant.int_quant(
            *(context[n.input[k]] for k in range(4)), self.get_nodeattr("signed"), self.get_nodeattr("narrow"),
            self.get_nodeattr("rounding_mode")))
    from qonnx.core import onnx_exec
    old_node = onnx_exec.execute_node

    def execute_any(node, context, graph, *a, **k):
        if node.op_type != "Conv" or node.domain:
            return old_node(node, context, graph, *a, **k)
        context[node.output[0]] = _conv64(node, *(context[i] if i else None for i in node.input))

    old = intquant.IntQuant.execute_node
    intquant.IntQuant.execute_node = execute_node
    onnx_exec.execute_node = execute_any
    try:
        yield
    finally:
        intquant.IntQuant.execute_node = old
        onnx_exec.execute_node = old_node


def _conv64(node, x, w, b=None):
    """ONNX Conv (group 1, dilation 1) in float64 with numpy: onnxruntime has no double Conv kernel."""
    at = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert at.get("group", 1) == 1 and list(at.get("dilations", [1, 1])) == [1, 1]
    pt, pl, pb, pr = at.get("pads", [0, 0, 0, 0])
    sh, sw = at.get("strides", [1, 1])
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]
    y = np.einsum("nchwij,ocij->nohw", win, w)
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def reference64(path, x) -> np.ndarray:
    """The same executor on a float64 copy of the model (initializers, tensors and Casts in double)."""
    mw = _wrapper(path)
    m2 = copy.deepcopy(mw.model)
    for t in m2.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in list(m2.graph.input) + list(m2.graph.output) + list(m2.graph.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for n in m2.graph.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
    from qonnx.core.modelwrapper import ModelWrapper
    with _float64_quant():
        return _run(ModelWrapper(m2), np.asarray(x, dtype=np.float64), np.float64)


def compare(ours: np.ndarray, ref32: np.ndarray, ref64: np.ndarray, argmax=False) -> dict:
    """Rows where float32(ours) differs from the float32 reference, and whether float32 explains each.

    ``ours`` are exact values (float64 holds them); a row is a float32 case when the float64 run of the
    same executor equals ours (as float32 values) there; ``unexplained`` rows must be 0.
    """
    o = ours.reshape(ref32.shape)
    if argmax:
        a, b, c = o.argmax(axis=1), ref32.argmax(axis=1), ref64.reshape(ref32.shape).argmax(axis=1)
        diff, ok64 = a != b, a == c
    else:
        o32 = o.astype(np.float32)
        diff = (o32 != ref32).reshape(len(o), -1).any(axis=1)
        ok64 = (o32 == ref64.reshape(ref32.shape).astype(np.float32)).reshape(len(o), -1).all(axis=1)
    return {"rows": len(o), "exact": int((~diff).sum()), "float32_cases": int((diff & ok64).sum()),
            "unexplained": int((~ok64).sum())}


# ----------------------------------------------------------------------------- the models
def _binary_w():
    from brevitas.quant import SignedBinaryWeightPerTensorConst
    return dict(weight_quant=SignedBinaryWeightPerTensorConst)


class TFC(torch.nn.Module):
    """TFC-like MLP (FINN's bnn_pynq): ``2x - 1`` pre-processing, an 8-bit input quantizer, hidden layers
    MatMul -> float BatchNorm -> activation quantizer (1 bit: BipolarQuant), a last layer with a float bias
    and a float output."""

    def __init__(self, wb=1, ab=1, n_in=64, hid=32, n_out=10):
        super().__init__()
        from brevitas.quant import SignedBinaryActPerTensorConst
        wq = _binary_w() if wb == 1 else dict(weight_bit_width=wb)
        self.inp = qnn.QuantIdentity(bit_width=8)
        layers, d = [], n_in
        for _ in range(2):
            layers += [qnn.QuantLinear(d, hid, bias=False, **wq), torch.nn.BatchNorm1d(hid),
                       qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst) if ab == 1
                       else qnn.QuantIdentity(bit_width=ab)]
            d = hid
        layers += [qnn.QuantLinear(d, n_out, bias=True, **wq)]
        self.body = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.body(self.inp(2.0 * x - 1.0))


class KWS(torch.nn.Module):
    """KWS-like MLP: 3-bit weights with per-channel float scales, float (non-power-of-two) activation scales,
    float biases, float BatchNorm, a 3-bit ReLU, and an 8-bit float-scaled quantized output."""

    def __init__(self, n_in=40, hid=24, n_out=12):
        super().__init__()
        w3 = dict(weight_bit_width=3, weight_scaling_per_output_channel=True)
        self.net = torch.nn.Sequential(
            qnn.QuantIdentity(bit_width=8),
            qnn.QuantLinear(n_in, hid, bias=True, **w3), torch.nn.BatchNorm1d(hid), qnn.QuantReLU(bit_width=3),
            qnn.QuantLinear(hid, hid, bias=True, **w3), torch.nn.BatchNorm1d(hid), qnn.QuantReLU(bit_width=3),
            qnn.QuantLinear(hid, n_out, bias=True, **w3), qnn.QuantIdentity(bit_width=8))

    def forward(self, x):
        return self.net(x)


class CNV(torch.nn.Module):
    """CNV-like CNN: binary-weight convolutions, float BatchNorm, 2-bit activations, max pooling, a
    binary-weight classifier with a float bias and a float output."""

    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(bit_width=8)
        self.c1 = qnn.QuantConv2d(3, 8, 3, bias=False, **_binary_w())
        self.b1 = torch.nn.BatchNorm2d(8)
        self.a1 = qnn.QuantIdentity(bit_width=2)
        self.p1 = torch.nn.MaxPool2d(2)
        self.c2 = qnn.QuantConv2d(8, 8, 3, bias=False, **_binary_w())
        self.b2 = torch.nn.BatchNorm2d(8)
        self.a2 = qnn.QuantIdentity(bit_width=2)
        self.fc = qnn.QuantLinear(8 * 2 * 2, 10, bias=True, **_binary_w())

    def forward(self, x):
        x = self.p1(self.a1(self.b1(self.c1(self.inp(2.0 * x - 1.0)))))
        return self.fc(torch.flatten(self.a2(self.b2(self.c2(x))), 1))


def _pixels(shape):
    return lambda n, rng: (rng.integers(0, 256, (n, *shape)) / 255).astype(np.float32)


def _normal(shape):
    return lambda n, rng: rng.standard_normal((n, *shape)).astype(np.float32)


#: name -> (builder, input shape, calibration inputs, test inputs (n, rng) -> float32, --input-type)
MODELS = {
    "tfc_w1a1": (lambda: TFC(1, 1), (64,), _pixels((64,)), None),
    "tfc_w1a2": (lambda: TFC(1, 2), (64,), _pixels((64,)), None),
    "tfc_w2a2": (lambda: TFC(2, 2), (64,), lambda n, rng: (rng.integers(0, 256, (n, 64)) / 256).astype(np.float32),
                 "ap_ufixed<8,0>"),
    "kws_w3a3": (lambda: KWS(), (40,), _normal((40,)), None),
    "cnv_w1a2": (lambda: CNV(), (3, 10, 10), _pixels((3, 10, 10)), None),
}


def build(name, path):
    make, shape, inputs, input_type = MODELS[name]
    torch.manual_seed(0)  # the weights: the same model in every run, whatever ran before
    calib = (lambda: torch.from_numpy(inputs(32, np.random.default_rng(5)))) if inputs else None
    return export(make(), shape, path, calib=calib), inputs, input_type


def preimage(graph, raw):
    """Float inputs whose input codes are ``raw`` (the inverse of the input boundary; checked exactly)."""
    from fractions import Fraction
    from qfx_compile.ir.exact_real import compose_affine
    from qfx_compile.ir.interpret import input_quant, to_float64
    q = input_quant(graph)
    if q is None or "input_map" not in q.attrs:
        t = graph.tensors[q.outputs[0]].type if q is not None else graph.tensors[graph.inputs[0]].type
        return to_float64(raw, t).astype(np.float32)
    im = q.attrs["input_map"]
    A, B = compose_affine(im.chain) if im.chain else ([None], [None])
    qz = im.quantizer
    val = lambda c: (Fraction(int(c)) - qz.zeropt[0]) * qz.scale[0]  # noqa: E731
    u, inv = np.unique(raw, return_inverse=True)
    xs = np.array([float(val(c) if A[0] is None else (val(c) - B[0].p) / A[0].p) for c in u], dtype=np.float32)
    x = xs[inv].reshape(raw.shape)
    assert np.array_equal(im.codes(x), raw), "preimage does not reproduce the input codes"
    return x
