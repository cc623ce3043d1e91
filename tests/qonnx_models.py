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
    old = intquant.IntQuant.execute_node
    intquant.IntQuant.execute_node = execute_node
    try:
        yield
    finally:
        intquant.IntQuant.execute_node = old


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
