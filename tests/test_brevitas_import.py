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


def test_non_power_of_two_scale_is_read_exactly(tmp_path):
    """A float input scale becomes the input boundary (its codes), the float-scaled accumulator an exact step
    function (tests/test_qonnx_models.py checks the values against the QONNX executor)."""
    from brevitas.quant import Int8ActPerTensorFloat
    m = torch.nn.Sequential(qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=True),
                            qnn.QuantLinear(4, 2, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                            output_quant=Int8ActPerTensorFixedPoint))
    m.train()
    m(torch.randn(8, 4) * 3)
    m.eval()
    path = str(tmp_path / "float_scale.onnx")
    export_qonnx(m, torch.randn(1, 4), path, dynamo=False)
    g = load_model(path)
    ops = [n.op for n in g.nodes]
    assert ops[0] == "quant" and "input_map" in g.nodes[0].attrs and ops[1] == "dense"
    assert ops[2] in ("multithreshold", "batchnorm")
    x = torch.randn(50, 4) * 3
    with torch.no_grad():
        y = m(x).double().numpy()
    got = to_float64(run(g, x_float=x.numpy()), g.tensors[g.outputs[0]].type)
    assert got.shape == y.shape


# ---------------------------------------------------------------- more Brevitas features
def _export_and_compare(m, shape, tmp_path, name, n=200, scale=2.0):
    """Calibrate (train mode), export, load; the interpreter equals Brevitas's eval output exactly."""
    torch.manual_seed(0)
    m.train()
    for _ in range(3):
        m(torch.randn(16, *shape) * scale)
    m.eval()
    path = str(tmp_path / f"{name}.onnx")
    export_qonnx(m, torch.randn(1, *shape), path, dynamo=False)
    g = load_model(path)
    x = torch.randn(n, *shape) * scale
    with torch.no_grad():
        y = m(x)
    y = (y.value if hasattr(y, "value") else y).double().numpy()
    got = to_float64(run(g, x_float=x.numpy()), g.tensors[g.outputs[0]].type)
    assert got.size == y.size and np.array_equal(got.reshape(y.shape), y)
    return g


class BiasNet(torch.nn.Module):
    def __init__(self, bias_quant):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.conv = qnn.QuantConv2d(2, 3, 3, bias=True, weight_quant=Int8WeightPerTensorFixedPoint,
                                    bias_quant=bias_quant, output_quant=Int8ActPerTensorFixedPoint,
                                    return_quant_tensor=True)
        self.fc = qnn.QuantLinear(3 * 4 * 4, 5, bias=True, weight_quant=Int8WeightPerTensorFixedPoint,
                                  bias_quant=bias_quant, output_quant=Int8ActPerTensorFixedPoint,
                                  return_quant_tensor=False)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(self.inp(x)), 1))


@pytest.mark.parametrize("bias_quant", ["Int16Bias", "Int8BiasPerTensorFixedPointInternalScaling"])
def test_quantized_bias_is_exact(tmp_path, bias_quant):
    import brevitas.quant as bq
    m = BiasNet(getattr(bq, bias_quant))
    g = _export_and_compare(m, (2, 6, 6), tmp_path, bias_quant)
    assert [n.op for n in g.nodes] == ["quant", "conv2d", "flatten", "dense"]
    assert all("bias" in n.params for n in g.nodes if n.op in ("conv2d", "dense"))


class ResidualNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)
        self.conv = qnn.QuantConv2d(2, 2, 3, padding=1, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                    output_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)
        self.out = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

    def forward(self, x):
        x = self.inp(x)
        return self.out(x + self.conv(x))


def test_residual_add_then_quant_identity_is_exact(tmp_path):
    g = _export_and_compare(ResidualNet(), (2, 5, 5), tmp_path, "residual")
    assert [n.op for n in g.nodes] == ["quant", "conv2d", "add"]


class GapNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)
        self.conv = qnn.QuantConv2d(2, 4, 3, padding=1, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                    output_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=False)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.q = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)
        self.fc = qnn.QuantLinear(4, 3, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                  output_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

    def forward(self, x):
        return self.fc(torch.flatten(self.q(self.pool(self.relu(self.conv(self.inp(x))))), 1))


def test_global_average_pool_power_of_two_is_exact(tmp_path):
    """8x8 window: the float average divides by 64 exactly (float32 holds the small sums exactly)."""
    g = _export_and_compare(GapNet(), (2, 8, 8), tmp_path, "gap")
    assert "global_avgpool" in [n.op for n in g.nodes]


def test_global_average_pool_non_power_of_two_rejected(tmp_path):
    m = GapNet()
    m.train()
    m(torch.randn(8, 2, 6, 6))
    m.eval()
    path = str(tmp_path / "gap6.onnx")
    export_qonnx(m, torch.randn(1, 2, 6, 6), path, dynamo=False)
    with pytest.raises(ModelError, match=r"over 36 elements divides by a non-power of two.*qfx\.AveragePool") as e:
        load_model(path)
    assert path in str(e.value) and "GlobalAveragePool" in str(e.value)


class BNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)
        self.conv = qnn.QuantConv2d(2, 3, 3, bias=False, weight_quant=Int8WeightPerTensorFixedPoint)
        self.bn = torch.nn.BatchNorm2d(3)
        self.out = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=False)

    def forward(self, x):
        return self.out(self.bn(self.conv(self.inp(x))))


def test_float_batchnorm_then_quant_is_a_step_function(tmp_path):
    """A float BatchNormalization before a quantizer: exact thresholds (or multiply-shift) of the accumulator."""
    m = BNNet()
    m.train()
    m(torch.randn(8, 2, 6, 6))
    m.eval()
    path = str(tmp_path / "bn.onnx")
    export_qonnx(m, torch.randn(1, 2, 6, 6), path, dynamo=False)
    g = load_model(path)
    assert [n.op for n in g.nodes][:2] == ["quant", "conv2d"]
    assert g.nodes[2].op in ("multithreshold", "batchnorm")
