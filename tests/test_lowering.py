"""Backend lowering to stream (HWC) order, through the real CLI and the C simulation.

A Flatten of a feature map moves nothing in HWC stream order, so whatever reads the
flat vector by position must be re-addressed: these models would either fail to build
or compute a permuted result if lowering were wrong, and ``--csim`` compares with the
PyTorch outputs stored in the file. Stream names must be unique even when the model's
own tensor names look like the names the backend derives for fork copies.
"""
import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from qfx_compile import qfx
from qfx_compile.cli import main
from qfx_compile.qfx import nn as qnn
from qfx_compile.testing.models import export_zoo_model

pytestmark = pytest.mark.xdist_group("backend")
ACT = "ap_fixed<8,3,AP_RND_CONV,AP_SAT>"


class FlattenThenElementwise(nn.Module):
    """conv -> flatten -> ReLU -> Clip -> quantizer -> dense: order-free ops between the flatten and the dense."""

    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantInput(ACT)
        self.conv = qnn.Conv2d(1, 3, 3, padding=1, output_type="ap_fixed<9,4,AP_RND,AP_SAT>")
        self.flatten = qnn.Flatten()
        self.relu = qnn.ReLU()
        self.clip = qnn.Clip(0.0, 2.0)
        self.fc = qnn.Linear(3 * 8 * 8, 5, output_type="ap_fixed<12,5,AP_RND,AP_SAT>")

    def forward(self, x):
        x = self.flatten(self.conv(self.inp(x)))
        return self.fc(self.clip(self.relu(x)))


class FlattenedOutput(nn.Module):
    """conv -> relu -> flatten as the graph output: the expected files are in CHW order, the stream in HWC."""

    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantInput(ACT)
        self.conv = qnn.Conv2d(1, 2, 3, padding=1, output_type="ap_fixed<9,4,AP_RND,AP_SAT>")
        self.relu = qnn.ReLU()
        self.flatten = qnn.Flatten()

    def forward(self, x):
        return self.flatten(self.relu(self.conv(self.inp(x))))


def _export(model: nn.Module, path: Path) -> Path:
    g = torch.Generator().manual_seed(3)
    data = torch.randn((128, 1, 8, 8), generator=g).clamp(-3.5, 3.5)
    qfx.calibrate(model, data)
    for m in model.modules():  # Clip takes its input type from the layer before it
        if isinstance(m, qnn.Clip):
            m.input_type = model.conv.output_quantizer.fixed_type()
    model.eval()
    qfx.export_onnx(model, data[:4], str(path), vectors=100, inputs=data[:100])
    return path


@pytest.mark.parametrize("cls", [FlattenThenElementwise, FlattenedOutput])
def test_flatten_followed_by_order_free_ops_or_output_is_exact(cls, tmp_path, capsys):
    torch.manual_seed(0)
    model = _export(cls(), tmp_path / "m.onnx")
    out = tmp_path / "hls"
    assert main([str(model), "-o", str(out), "--csim", "-q"]) == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert rep["csim"]["passed"] == 100 and rep["csim"]["failed"] == 0
    assert "flatten" not in [L["op"] for L in rep["layers"]]


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    g = model.graph
    for n in g.node:
        n.input[:] = [new if i == old else i for i in n.input]
        n.output[:] = [new if o == old else o for o in n.output]
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        if vi.name == old:
            vi.name = new


def test_tensor_named_like_a_fork_copy(tmp_path, capsys):
    """A tensor named ``<fork>_c0`` must not declare the same hls::stream as the fork's first copy."""
    path = Path(export_zoo_model("resnet", tmp_path, vectors=30))
    m = onnx.load(str(path))
    readers: dict[str, int] = {}
    for n in m.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    produced = [o for n in m.graph.node for o in n.output]
    forks = [t for t in produced if readers.get(t, 0) > 1]
    assert forks, "the zoo resnet has a residual fork"
    fork = forks[0]
    for i, n in enumerate(m.graph.node):  # rename a later single-reader tensor to '<fork>_c0' and '<fork>_r0'
        if fork in n.input and readers.get(n.output[0], 0) == 1:
            _rename(m, n.output[0], f"{fork}_c0")
            nxt = next(k for k in m.graph.node[i + 1:] if readers.get(k.output[0], 0) == 1)
            _rename(m, nxt.output[0], f"{fork}_c1")
            break
    bad = tmp_path / "named.onnx"
    onnx.save(m, str(bad))
    out = tmp_path / "hls"
    assert main([str(bad), "-o", str(out), "--csim", "-q"]) == 0, capsys.readouterr().err
    top = (out / "firmware" / "qfx_top.cpp").read_text()
    decls = [line.split(">", 1)[1].split("(")[0].strip() for line in top.splitlines()
             if line.strip().startswith("hls::stream<")]
    assert len(decls) == len(set(decls)) and len(decls) > 4
