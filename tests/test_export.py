"""qfx.export_onnx: onnxruntime on the exported file == PyTorch eval output, exactly."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from qfx_compile import qfx
from qfx_compile.qfx import OVERFLOW_MODES, ROUNDING_MODES, quantize, to_raw
from qfx_compile.qfx import nn as qnn
from qfx_compile.qfx import onnx_ops as ops
from qfx_compile.qfx.export import ExportError, export_onnx, load_vectors, to_onnx_model
from qfx_compile.testing import models

pytestmark = pytest.mark.xdist_group("export")

N_VECTORS = 128


def _session(path_or_proto):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    src = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _torch_eval(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).to(torch.float64).numpy()


def _tie_inputs(model, n: int, seed: int, shape=models.INPUT_SHAPE) -> np.ndarray:
    """Inputs on the input type's half-lsb grid (rounding ties), plus out-of-range values (saturation)."""
    t = next(m for m in model.modules() if isinstance(m, qnn.QuantInput)).output_quantizer.fixed_type()
    g = torch.Generator().manual_seed(seed)
    shape = (n,) + tuple(shape)
    k = torch.randint(2 * t.raw_min - 8, 2 * t.raw_max + 9, shape, generator=g).to(torch.float64)
    return (k * t.lsb / 2).to(torch.float32).numpy()


@pytest.fixture(scope="module", params=list(models.ZOO))
def exported(request, tmp_path_factory):
    model, example = models.build(request.param)
    path = export_onnx(model, example, str(tmp_path_factory.mktemp("zoo") / f"{request.param}.onnx"),
                       vectors=N_VECTORS)
    return request.param, model, path


def test_zoo_exact(exported):
    name, model, path = exported
    sess = _session(path)
    vec = load_vectors(path)
    assert vec["input"].shape[0] == N_VECTORS
    ties = _tie_inputs(model, 64, seed=len(name), shape=vec["input"].shape[1:])
    for x in (vec["input"], ties):
        y = sess.run(None, {"input": x})[0]
        ref = _torch_eval(model, x)
        assert y.dtype == np.float64 and y.shape == ref.shape
        bad = np.argwhere(y != ref)
        assert bad.size == 0, f"{name}: {len(bad)} mismatches, first at {bad[:3].tolist()}"
    # Outputs are non-trivial: not all zero, not all one value.
    raw = vec["output_raw"]
    assert (raw != 0).mean() > 0.5 and len(np.unique(raw)) > 20


def test_zoo_vectors_match(exported):
    name, model, path = exported
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    vec = load_vectors(proto)
    assert vec["input"].dtype == np.float32
    assert vec["input_raw"].dtype == np.int64 and vec["output_raw"].dtype == np.int64
    qin = next(m for m in model.modules() if isinstance(m, qnn.QuantInput))
    t_in = qin.output_quantizer.fixed_type()
    x = torch.from_numpy(vec["input"])
    assert np.array_equal(vec["input_raw"], to_raw(quantize(x.double(), t_in), t_in).numpy())
    y = _torch_eval(model, vec["input"])
    out_t = _output_type(proto)
    assert np.array_equal(vec["output_raw"], np.round(y * 2.0 ** out_t).astype(np.int64))
    assert np.array_equal(vec["output_raw"] * 2.0 ** -out_t, y)


def _output_type(proto) -> int:
    """Fractional bits of the last FixedPoint node (the output cast)."""
    last = [n for n in proto.graph.node if n.op_type == "FixedPoint"][-1]
    width = [a.i for a in last.attribute if a.name == "width"][0]
    ib = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == last.input[1]))
    return width - int(ib)


def test_format_details(exported):
    name, model, path = exported
    proto = onnx.load(path)
    assert proto.ir_version == 10
    assert {(o.domain, o.version) for o in proto.opset_import} == {("", 17), ("qfx", 1)}
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["qfx.format"] == "1"
    g = proto.graph
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert g.node[0].op_type == "Cast" and g.node[1].op_type == "FixedPoint"
    assert g.node[1].input[0] == g.node[0].output[0]
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    fnames = {(f.domain, f.name, f.overload) for f in proto.functions}
    vi = {v.name for v in g.value_info}
    for n in g.node:
        assert n.name  # readable, from module names
        if n.domain == "qfx":
            assert ("qfx", n.op_type, n.overload) in fnames
        for o in n.output:
            assert o in vi or o == g.output[0].name
        if n.op_type != "FixedPoint":
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        assert n.overload == ops.fixed_point_overload(a["width"], a["signed"], a["rounding"].decode(),
                                                      a["overflow"].decode())
        assert inits[n.input[1]].dtype == np.int64
        if n.input[0] in inits:  # a constant: on its grid already
            w = inits[n.input[0]]
            ib = inits[n.input[1]]
            assert w.dtype == np.float64
            if ib.ndim:
                assert ib.shape == (w.shape[0],) + (1,) * (w.ndim - 1)
            m = w * np.exp2((a["width"] - ib).astype(np.float64))
            assert np.array_equal(m, np.round(m))
            if "k_hot" in a:
                assert a["digits"].decode() in ("binary", "csd", "sp2")
                counts = qfx.digit_count(np.round(m).astype(np.int64), a["digits"].decode(), a["width"],
                                         bool(a["signed"]))
                assert np.all(counts <= np.asarray(a["k_hot"]).reshape((-1,) + (1,) * (w.ndim - 1)))
    names = " ".join(n.name for n in g.node)
    for mod_name, mod in model.named_modules():
        if isinstance(mod, (qnn.Linear, qnn.Conv2d)):
            assert mod_name in names
    if name.startswith("khot"):
        assert any(a.name == "k_hot" for n in g.node for a in n.attribute)
    if name == "per_channel":
        ibs = [inits[n.input[1]] for n in g.node if n.op_type == "FixedPoint" and n.input[0] in inits]
        assert any(ib.ndim and len(np.unique(ib)) > 1 for ib in ibs)


def test_all_modes_used():
    model, example = models.all_modes()
    proto = to_onnx_model(model, example)
    over = [ops.parse_fixed_point_overload(f.overload) for f in proto.functions if f.name == "FixedPoint"]
    assert {r for _, _, r, _ in over} == set(ROUNDING_MODES)
    assert {o for _, _, _, o in over} == set(OVERFLOW_MODES)
    assert any(not s for _, s, _, _ in over)
    # Overflow really happens in a WRAP, a SAT, a SAT_SYM and a SAT_ZERO activation cast.
    from qfx_compile.qfx.quantizer import Quantizer
    hit = set()

    def hook(mod, inp, out):
        t = mod.fixed_type()
        if bool(((inp[0] > t.max) | (inp[0] < t.min)).any()):
            hit.add(t.overflow)

    hs = [q.register_forward_hook(hook) for q in model.modules() if isinstance(q, Quantizer)]
    _torch_eval(model, _tie_inputs(model, 200, seed=9))
    for h in hs:
        h.remove()
    assert hit == set(OVERFLOW_MODES)


def test_vectors_from_given_inputs(tmp_path):
    model, example = models.mlp()
    x = _tie_inputs(model, 150, seed=3)
    path = export_onnx(model, example, tmp_path / "m.onnx", vectors=120, inputs=x)
    vec = load_vectors(path)
    assert np.array_equal(vec["input"], x[:120])
    y = _session(str(path)).run(None, {"input": vec["input"]})[0]
    assert np.array_equal(y, _torch_eval(model, x[:120]))
    # No vectors: no metadata, and load_vectors says so.
    p2 = export_onnx(model, example, tmp_path / "n.onnx")
    assert "qfx.vectors" not in {p.key for p in onnx.load(p2).metadata_props}
    with pytest.raises(ValueError, match="vectors"):
        load_vectors(p2)


def test_quantize_model_export(tmp_path):
    """A float model converted by qfx.quantize_model (residual '+', F.relu, BatchNorm) exports exactly."""

    class Float(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            y = F.relu(self.bn(self.conv(x)))
            y = F.relu(y + self.conv2(y))
            return self.fc(torch.flatten(self.pool(y), 1))

    torch.manual_seed(0)
    fm = Float()
    with torch.no_grad():
        fm.bn.running_mean.uniform_(-0.2, 0.2)
        fm.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(64, 1, 8, 8)
    qm = qfx.quantize_model(fm, qfx.QFXConfig(activation="ap_fixed<8,3,AP_RND,AP_SAT>"), x)
    qm.eval()
    path = export_onnx(qm, x[:2], tmp_path / "q.onnx", vectors=100, inputs=x)
    vec = load_vectors(path)
    y = _session(str(path)).run(None, {"input": vec["input"]})[0]
    assert np.array_equal(y, _torch_eval(qm, vec["input"]))


def test_atomic_write(tmp_path, monkeypatch):
    model, example = models.mlp()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old contents")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(model, example, path)
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    # An export error leaves nothing behind either.
    bad = nn.Sequential(qnn.QuantInput("ap_fixed<8,3>"), nn.Sigmoid())
    with pytest.raises(ExportError):
        export_onnx(bad, example, tmp_path / "bad.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    export_onnx(model, example, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def test_unsupported_errors(tmp_path):
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ExportError, match=r"1 \(Sigmoid\).*unsupported module"):
        export_onnx(nn.Sequential(qnn.QuantInput("ap_fixed<8,3>"), nn.Sigmoid()), x, tmp_path / "a.onnx")

    class PlainAdd(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantInput("ap_fixed<8,3>")

        def forward(self, x):
            x = self.inp(x)
            return x + x

    with pytest.raises(ExportError, match="qfx.nn.Add"):
        export_onnx(PlainAdd(), x, tmp_path / "b.onnx")
    with pytest.raises(ExportError, match="QuantInput"):
        export_onnx(nn.Sequential(qnn.Flatten(), qnn.Linear(64, 4)), x, tmp_path / "c.onnx")

    class Data(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(ExportError, match="trace"):
        export_onnx(Data(), x, tmp_path / "d.onnx")
    with pytest.raises(ExportError, match="Module"):
        export_onnx(lambda v: v, x, tmp_path / "e.onnx")
    assert not any(tmp_path.iterdir())


def test_accumulator_guard(tmp_path):
    """A layer whose exact sum could exceed 53 bits for some input of its type is refused."""
    m = nn.Sequential(qnn.QuantInput("ap_fixed<40,10,AP_TRN,AP_SAT>", learnable=False), qnn.Flatten(),
                      qnn.Linear(64, 4, weight_type="ap_fixed<24,2,AP_TRN,AP_SAT>", per_channel=False,
                                 output_type="ap_fixed<16,8>", learnable=False))
    with torch.no_grad():
        m[2].weight.fill_(0.3)
    m.eval()
    with pytest.raises(ExportError, match="53 bits"):
        export_onnx(m, torch.zeros(2, 1, 8, 8), tmp_path / "w.onnx")
