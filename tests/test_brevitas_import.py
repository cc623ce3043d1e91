"""A Brevitas model with power-of-two quantizers, exported with export_qonnx, imports and the IR
interpreter equals Brevitas's own output exactly.

Workaround (true for this environment): torch 2.13's default dynamo exporter needs ``onnxscript``
and Brevitas's TorchScript path needs ``onnxoptimizer``, neither installed. We export with
``dynamo=False`` and give Brevitas an identity ``onnxoptimizer.optimize`` (its cleanup passes
only simplify the graph; the frontend reads the unsimplified graph).
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

brevitas = pytest.importorskip("brevitas")
import brevitas.export.onnx.manager as _mgr  # noqa: E402
import brevitas.nn as qnn  # noqa: E402
import onnx  # noqa: E402
from brevitas.export import export_qonnx  # noqa: E402
from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint,  # noqa: E402
                            Uint8ActPerTensorFixedPoint)

from qfx_compile.frontend import ModelError, load_model  # noqa: E402
from qfx_compile.ir.interpret import run, to_float64  # noqa: E402

pytestmark = pytest.mark.xdist_group("ir")

if _mgr.opt is None:
    _mgr.opt = types.ModuleType("onnxoptimizer_stub")
    _mgr.opt.optimize = lambda model, passes=None: model
if _mgr.onnx is None:
    _mgr.onnx = onnx


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.conv = qnn.QuantConv2d(1, 4, 3, padding=1, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                    return_quant_tensor=True)
        self.relu = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = qnn.QuantLinear(64, 5, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                  output_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(self.inp(x)))), 1))


def test_brevitas_fixed_point_model_is_exact(tmp_path):
    torch.manual_seed(0)
    m = Net().train()
    for _ in range(3):
        m(torch.randn(16, 1, 8, 8) * 2)
    m.eval()
    path = str(tmp_path / "brevitas.onnx")
    export_qonnx(m, torch.randn(1, 1, 8, 8), path, dynamo=False)
    g = load_model(path)
    assert [n.op for n in g.nodes] == ["quant", "conv2d", "relu", "maxpool", "flatten", "dense"]
    x = torch.randn(200, 1, 8, 8) * 2
    with torch.no_grad():
        y = m(x).double().numpy()
    got = to_float64(run(g, x_float=x.numpy()), g.tensors[g.outputs[0]].type)
    assert np.array_equal(got.reshape(y.shape), y)


def test_non_power_of_two_scale_is_rejected(tmp_path):
    from brevitas.quant import Int8ActPerTensorFloat
    m = torch.nn.Sequential(qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=True),
                            qnn.QuantLinear(4, 2, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                            output_quant=Int8ActPerTensorFixedPoint))
    m.train()
    m(torch.randn(8, 4) * 3)
    m.eval()
    path = str(tmp_path / "float_scale.onnx")
    export_qonnx(m, torch.randn(1, 4), path, dynamo=False)
    with pytest.raises(ModelError, match="not a power of two"):
        load_model(path)
