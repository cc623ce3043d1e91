"""qfx-compile exit codes and messages: 0 success, 2 user errors (one paragraph, no traceback)."""
import json
from pathlib import Path

import onnx
import pytest
from onnx import helper

from qfx_compile.cli import main

pytestmark = pytest.mark.xdist_group("backend")


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model

    return Path(export_zoo_model("mlp", tmp_path_factory.mktemp("climlp"), vectors=10))


def _err(capsys):
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    return cap.err


def test_help_and_targets(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and "qfx-compile model.onnx --target ultra96" in out
    assert main(["--list-targets"]) == 0
    out = capsys.readouterr().out
    for t in ("ultra96", "pynq-z2", "zcu102", "kv260", "xczu3eg-sbva484-1-i"):
        assert t in out


def test_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx" in _err(capsys)


def test_garbage_file(tmp_path, capsys):
    p = tmp_path / "garbage.onnx"
    p.write_bytes(b"\x00\x01not an onnx file at all" * 10)
    assert main([str(p), "-o", str(tmp_path / "o")]) == 2
    assert "garbage.onnx" in _err(capsys)


def test_unknown_target_and_options(mlp_onnx, tmp_path, capsys):
    assert main([str(mlp_onnx), "--target", "nexys", "-o", str(tmp_path / "o")]) == 2
    e = _err(capsys)
    assert "nexys" in e and "ultra96" in e
    assert main([str(mlp_onnx), "--bogus-option"]) == 2
    _err(capsys)
    assert main([str(mlp_onnx), "--part", "x; rm -rf /", "-o", str(tmp_path / "o")]) == 2
    assert "--part" in _err(capsys)
    cfg = tmp_path / "layers.json"
    cfg.write_text(json.dumps({"layers": {"no_such_layer": {"stream_depth": 4}}}))
    assert main([str(mlp_onnx), "--config", str(cfg), "-o", str(tmp_path / "o")]) == 2
    assert "no_such_layer" in _err(capsys)
    cfg.write_text("{not json")
    assert main([str(mlp_onnx), "--config", str(cfg), "-o", str(tmp_path / "o")]) == 2
    assert "JSON" in _err(capsys)


def test_unsupported_op(mlp_onnx, tmp_path, capsys):
    m = onnx.load(str(mlp_onnx))
    g = m.graph
    out = g.output[0].name
    g.node.append(helper.make_node("Softmax", [out], ["probs"], name="softmax_node"))
    g.output[0].name = "probs"
    p = tmp_path / "softmax.onnx"
    onnx.save(m, str(p))
    assert main([str(p), "-o", str(tmp_path / "o")]) == 2
    e = _err(capsys)
    assert "softmax.onnx" in e and "Softmax" in e


def test_config_applies_and_success(mlp_onnx, tmp_path, capsys):
    import onnx as _onnx

    first = _onnx.load(str(mlp_onnx)).graph.node
    cfg = tmp_path / "layers.json"
    names = [n.name for n in first]
    from qfx_compile.frontend import load_model

    layer = load_model(str(mlp_onnx)).nodes[-1].name
    cfg.write_text(json.dumps({"default": {"stream_depth": 8}, "layers": {layer: {"mul_limit": 16}}}))
    out = tmp_path / "prj"
    assert main([str(mlp_onnx), "--config", str(cfg), "-o", str(out), "--target", "kv260", "--clock-ns", "3.3",
                 "-q"]) == 0
    assert names
    top = (out / "firmware" / "qfx_top.cpp").read_text()
    assert "depth=8" in top
    assert "limit=16" in "".join(p.read_text() for p in (out / "firmware" / "layers").glob("*.cpp"))
    assert "create_clock -period 3.3" in (out / "build.tcl").read_text()
    rep = json.loads((out / "report.json").read_text())
    assert rep["target"] == "kv260" and rep["vectors"]["count"] == 10


def test_model_too_big(mlp_onnx, tmp_path, capsys, monkeypatch):
    from qfx_compile import targets

    small = targets.Target("tiny", "tiny", "xc7z007sclg400-1", 10.0, 10, "DSP48E1", 100, 100, 1, 0)
    monkeypatch.setitem(targets.TARGETS, "tiny", small)
    assert main([str(mlp_onnx), "--target", "tiny", "-o", str(tmp_path / "o")]) == 2
    e = _err(capsys)
    assert "do not fit" in e and "BRAM18" in e
