"""Issue 9, "Exit 0, yet the project does not build or run": each finding through the real CLI with --csim.

Every model here used to compile with exit 0 and then fail in C simulation
(a static_assert, an abort inside ap_private.h, a testbench reading long long);
now the CLI must exit 0 with every vector matching, or exit 2 with a message.
Expected outputs come from the IR interpreter (vectors dropped from the file,
so the testbench checks the interpreter) or from PyTorch eval (stored vectors).
"""
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from qfx_compile.cli import main
from qfx_compile.qfx import nn as qnn
from qfx_compile.qfx.export import export_onnx

pytestmark = [pytest.mark.slow]

IN = "ap_fixed<8,3,AP_RND_CONV,AP_SAT>"


class Fc(nn.Module):
    def __init__(self, wt, ot, it=IN):
        super().__init__()
        self.inp = qnn.QuantInput(it)
        self.flatten = qnn.Flatten()
        self.fc = qnn.Linear(6, 4, weight_type=wt, output_type=ot, per_channel=False)

    def forward(self, x):
        return self.fc(self.flatten(self.inp(x)))


class Pool(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantInput(IN)
        self.pool = qnn.AvgPool2d(3, output_type="ap_fixed<10,3,AP_RND_CONV,AP_SAT>", recip_bits=20)
        self.gap = qnn.AdaptiveAvgPool2d(1, output_type="ap_fixed<12,3,AP_RND,AP_SAT>", recip_bits=20)
        self.flatten = qnn.Flatten()

    def forward(self, x):
        return self.flatten(self.gap(self.pool(self.inp(x))))


def _export(model, shape, path: Path, weights=None) -> Path:
    torch.manual_seed(0)
    if weights is not None:
        with torch.no_grad():
            model.fc.weight.copy_(torch.tensor(weights, dtype=torch.float32).reshape(model.fc.weight.shape))
    model.eval()
    x = torch.randn((40,) + shape) * 2
    return Path(export_onnx(model, x[:2], str(path), vectors=40, inputs=x))


def _mutate(path: Path, fn) -> Path:
    """Apply fn(model) and drop the stored vectors (the testbench then checks the IR interpreter)."""
    m = onnx.load(str(path))
    fn(m)
    keep = [p for p in m.metadata_props if p.key != "qfx.vectors"]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    out = path.with_name(path.stem + "_mut.onnx")
    onnx.save(m, str(out))
    return out


def _set_fixedpoint(m, tensor_prefix: str, width: int, int_bits: int) -> None:
    """Set the width attribute and int_bits initializer of the FixedPoint node whose name starts with the prefix."""
    node = next(n for n in m.graph.node if n.op_type == "FixedPoint" and n.name.startswith(tensor_prefix))
    for a in node.attribute:
        if a.name == "width":
            a.i = width
    ib = next(i for i in m.graph.initializer if i.name == node.input[1])
    ib.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(ib).shape, int_bits,
                                                dtype=numpy_helper.to_array(ib).dtype), ib.name))


def _csim(model_path: Path, out: Path, capsys) -> tuple[int, str]:
    rc = main([str(model_path), "-o", str(out), "--force", "-q", "--csim", "--vectors", "40"])
    text = capsys.readouterr()
    return rc, text.out + text.err


def _assert_passes(rc, text, n=40):
    assert rc == 0, text[-3000:]
    assert f"C simulation: {n} passed, 0 failed" in text, text[-3000:]


COARSE = [[-0.5, 0.25, -0.125, 0.0, 0.5, 0.25][(i + j) % 6] for i in range(4) for j in range(6)]


@pytest.mark.parametrize("case", ["coarse_grid", "w16_i1", "w3", "w53"])
def test_finding1_weight_grids(tmp_path, capsys, case):
    """Weights on a grid coarser than their type (the accumulator keeps fewer fractional bits), and
    unusual weight widths: ap_fixed<16,1>, W=3, W=53."""
    wt, w = {"coarse_grid": ("ap_fixed<8,1,AP_RND_CONV,AP_SAT>", COARSE),
             "w16_i1": ("ap_fixed<16,1,AP_RND_CONV,AP_SAT>", None),
             "w3": ("ap_fixed<3,1,AP_RND_CONV,AP_SAT>", None),
             "w53": ("ap_fixed<53,1,AP_RND_CONV,AP_SAT>", None)}[case]
    p = _export(Fc(wt, "ap_fixed<10,4,AP_RND,AP_SAT>"), (1, 2, 3), tmp_path / f"{case}.onnx", w)
    _assert_passes(*_csim(p, tmp_path / "hls", capsys))


@pytest.mark.parametrize("bits", [62, 63])
def test_finding3_recip_bits(tmp_path, capsys, bits):
    """recip_bits 62 and 63 (average and global average pooling): exit 0 and a passing csim, or exit 2."""
    p = _export(Pool(), (2, 9, 9), tmp_path / "pool.onnx")

    def fn(m):
        for n in m.graph.node:
            for a in n.attribute:
                if a.name == "recip_bits":
                    a.i = bits

    rc, text = _csim(_mutate(p, fn), tmp_path / "hls", capsys)
    if rc == 2:
        assert "recip_bits" in text and "Traceback" not in text
    else:
        _assert_passes(rc, text)


@pytest.mark.parametrize("ot", ["ap_fixed<10,20,AP_RND,AP_SAT>", "ap_fixed<1,-500,AP_RND,AP_SAT>",
                                "ap_fixed<4,30,AP_RND_INF,AP_WRAP>", "ap_ufixed<3,-40,AP_RND_CONV,AP_SAT_SYM>"])
def test_finding4_output_range_apart_from_accumulator(tmp_path, capsys, ot):
    """An output type whose range does not overlap the accumulator's (far above: everything rounds to 0 or -1;
    far below: everything overflows)."""
    p = _export(Fc("ap_fixed<8,1,AP_RND_CONV,AP_SAT>", "ap_fixed<10,4,AP_RND,AP_SAT>"), (1, 2, 3),
                tmp_path / "fc.onnx")
    w, i = (int(v) for v in ot.split("<")[1].split(",")[:2])

    def fn(m):
        node = next(n for n in m.graph.node if n.op_type == "FixedPoint" and n.name.startswith("fc.out"))
        for a in node.attribute:
            if a.name == "width":
                a.i = w
            if a.name == "signed":
                a.i = int(ot.startswith("ap_fixed"))
            if a.name in ("rounding", "overflow"):
                a.s = ot.split(",")[2 if a.name == "rounding" else 3].strip(" >").encode()
        _set_fixedpoint(m, "fc.out", w, i)

    _assert_passes(*_csim(_mutate(p, fn), tmp_path / "hls", capsys))


def test_finding5_output_wider_than_64_bits(tmp_path, capsys):
    """A 70-bit output type (66 fractional bits): the testbench reads and compares mantissas as wide integers."""
    p = _export(Fc("ap_fixed<8,1,AP_RND_CONV,AP_SAT>", "ap_fixed<10,4,AP_RND,AP_SAT>"), (1, 2, 3),
                tmp_path / "fc.onnx")
    rc, text = _csim(_mutate(p, lambda m: _set_fixedpoint(m, "fc.out", 70, 4)), tmp_path / "hls", capsys)
    _assert_passes(rc, text)
    rows = (tmp_path / "hls" / "tb_data" / "expected.txt").read_text().split()
    assert any(abs(int(v)) >= 2**63 for v in rows)  # values that long long could not hold


def test_finding5_input_wider_than_64_bits(tmp_path, capsys):
    """A 70-bit input type (the input quantizer widened): exit 0 with a passing csim, or exit 2."""
    p = _export(Fc("ap_fixed<8,1,AP_RND_CONV,AP_SAT>", "ap_fixed<24,10,AP_RND,AP_SAT>"), (1, 2, 3),
                tmp_path / "fc.onnx")
    rc, text = _csim(_mutate(p, lambda m: _set_fixedpoint(m, "inp", 70, 10)), tmp_path / "hls", capsys)
    if rc == 2:
        assert "Traceback" not in text and "internal error" not in text
    else:
        _assert_passes(rc, text)
        import json

        rep = json.loads((tmp_path / "hls" / "report.json").read_text())
        assert rep["input"]["type"].startswith("ap_fixed<70,")


def test_all_zero_weights_with_absurd_integer_bits(tmp_path, capsys):
    """A weight type whose binary point lies far left of every weight (ap_fixed<8,300>): every weight is 0,
    the accumulator holds only the bias, yet the kernel's product grid must still fit it (a fuzzing find:
    exit 0, then a static_assert in the build)."""
    p = _export(Fc("ap_fixed<8,1,AP_RND_CONV,AP_SAT>", "ap_fixed<10,4,AP_RND,AP_SAT>"), (1, 2, 3), tmp_path / "z.onnx")
    rc, text = _csim(_mutate(p, lambda m: _set_fixedpoint(m, "fc.weight", 8, 300)), tmp_path / "hls", capsys)
    assert rc == 2 or (rc == 0 and "C simulation: 40 passed, 0 failed" in text), text[-3000:]


def test_max_pool_after_a_type_whose_lsb_is_above_32_bits(tmp_path, capsys):
    """conv -> relu -> max pool with the conv's output type ap_fixed<8,70>: the pool's padding value and
    every zero in the kernels is built without converting an int (a fuzzing find: the testbench aborted
    in ap_private.h after exit 0)."""
    from qfx_compile.testing.models import export_zoo_model
    p = Path(export_zoo_model("cnn", tmp_path, vectors=40))
    rc, text = _csim(_mutate(p, lambda m: _set_fixedpoint(m, "conv1.out", 8, 70)), tmp_path / "hls", capsys)
    _assert_passes(rc, text)


def test_shift_add_output_cast_from_an_accumulator_far_below_out_type(tmp_path, capsys):
    """A K-hot (shift-add) conv whose input grid lies 600 bits below its output's and whose bias is small:
    its accumulator's MSB is below the bit the cast to out_t rounds on (ap_ufixed<607,-8> -> ap_fixed<8,2>).
    The cast goes through qfx::convert (a fuzzing find: exit 0, then the testbench aborted in ap_private.h
    reading a bit beyond the MSB)."""
    from qfx_compile.testing.models import export_zoo_model
    p = Path(export_zoo_model("khot_csd", tmp_path, vectors=40))

    def fn(m):
        _set_fixedpoint(m, "conv1.out", 8, -600)
        _set_fixedpoint(m, "conv2.bias", 22, -1)

    rc, text = _csim(_mutate(p, fn), tmp_path / "hls", capsys)
    _assert_passes(rc, text)
    # the case is the one described: an accumulator of conv2 ends below the bit the cast rounds on
    code = (tmp_path / "hls" / "firmware" / "shiftadd" / "conv2_Conv.h").read_text()
    accs = [(int(w), int(i)) for w, i in re.findall(r"from_raw<ap_u?fixed<(\d+), (-?\d+)> >", code)]
    assert any(i < -7 for w, i in accs), accs  # out_t ap_fixed<8,2>: rounding bit 2^-7


def test_avg_pool_after_a_type_whose_lsb_is_above_32_bits(tmp_path, capsys):
    """The zoo CNN with conv2's output ap_fixed<8,70,AP_RND> (then relu, average pooling): the average pool's
    padding value is built from the mantissa, not from an int (a fuzzing find: exit 0, then the testbench
    aborted in ap_private.h)."""
    from qfx_compile.testing.models import export_zoo_model
    p = Path(export_zoo_model("cnn", tmp_path, vectors=40))
    rc, text = _csim(_mutate(p, lambda m: _set_fixedpoint(m, "conv2.out", 8, 70)), tmp_path / "hls", capsys)
    assert "ap_fixed<8, 70, AP_RND," in (tmp_path / "hls" / "firmware" / "parameters.h").read_text()
    _assert_passes(rc, text)
