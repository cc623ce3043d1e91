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
    cfg.write_text(json.dumps({"default": {"stream_depth": 8}, "layers": {layer: {"inline": True}}}))
    out = tmp_path / "prj"
    assert main([str(mlp_onnx), "--config", str(cfg), "-o", str(out), "--target", "kv260", "--clock-ns", "3.3",
                 "-q"]) == 0
    assert names
    top = (out / "firmware" / "qfx_top.cpp").read_text()
    assert "depth=8" in top
    assert "HLS INLINE)" in "".join(p.read_text() for p in (out / "firmware" / "layers").glob("*.cpp"))
    assert "create_clock -period 3.3" in (out / "build.tcl").read_text()
    rep = json.loads((out / "report.json").read_text())
    assert rep["target"] == "kv260" and rep["vectors"]["count"] == 10


def _last_layer(path):
    from qfx_compile.frontend import load_model

    return load_model(str(path)).nodes[-1].name


def test_config_reuse_and_mul_impl(mlp_onnx, tmp_path, capsys):
    layer = _last_layer(mlp_onnx)
    cfg = tmp_path / "layers.json"
    cfg.write_text(json.dumps({"default": {"mul_impl": 1}, "layers": {layer: {"reuse": 7, "mul_impl": 2}}}))
    out = tmp_path / "prj"
    assert main([str(mlp_onnx), "--config", str(cfg), "-o", str(out), "-q"]) == 0
    rep = json.loads((out / "report.json").read_text())
    last = rep["layers"][-1]
    assert (last["reuse"], last["mul_impl"], last["dsp_estimate"]) == (7, 2, 0)
    assert last["lut_estimate"] > 0 and last["multipliers"] == -(-last["macs"] // 7)
    assert all(L["mul_impl"] == 1 for L in rep["layers"][:-1] if L["op"] == "dense")
    params = (out / "firmware" / "parameters.h").read_text()
    assert "static const unsigned reuse = 7;" in params and "static const int mul_impl = 2;" in params
    for bad, word in (({"reuse": -1}, "reuse"), ({"mul_impl": 3}, "mul_impl"), ({"reuse": 10**9}, "more than")):
        cfg.write_text(json.dumps({"layers": {layer: bad}}))
        assert main([str(mlp_onnx), "--config", str(cfg), "-o", str(tmp_path / "o2"), "-q"]) == 2
        assert word in _err(capsys)


def test_dsps_cannot_fit(mlp_onnx, tmp_path, capsys, monkeypatch):
    """A part with too few DSPs even at maximum reuse: exit 2 with the numbers; LUT multipliers fit."""
    from qfx_compile import targets

    small = targets.Target("dsp2", "dsp2", "xc7z007sclg400-1", 10.0, 2, "DSP48E1", 100_000, 100_000, 100, 0)
    monkeypatch.setitem(targets.TARGETS, "dsp2", small)
    assert main([str(mlp_onnx), "--target", "dsp2", "-o", str(tmp_path / "o"), "-q"]) == 2
    e = _err(capsys)
    assert "needs 3 DSPs even at maximum reuse" in e and "more than 1 (80% of the 2 DSP48E1" in e
    assert "mul_impl 2" in e
    cfg = tmp_path / "luts.json"
    cfg.write_text(json.dumps({"default": {"mul_impl": 2}}))
    assert main([str(mlp_onnx), "--target", "dsp2", "--config", str(cfg), "-o", str(tmp_path / "o"), "-q"]) == 0


def _long_names(src, dst):
    m = onnx.load(str(src))
    for k, n in enumerate(m.graph.node):
        n.name = f"backbone.stage{k}.a_rather_long_module_name.with_parts/{n.op_type}_{k}"
    onnx.save(m, str(dst))


@pytest.mark.parametrize("cols", [80, 160])
def test_summary_table_fits_the_terminal(mlp_onnx, tmp_path, capsys, monkeypatch, cols):
    src = tmp_path / "long.onnx"
    _long_names(mlp_onnx, src)
    monkeypatch.setenv("COLUMNS", str(cols))
    assert main([str(src), "-o", str(tmp_path / f"prj{cols}"), "-q"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(ln) for ln in lines) <= cols
    rep = json.loads((tmp_path / f"prj{cols}" / "report.json").read_text())
    rows = [ln for ln in lines if "fixed<" in ln and not ln.startswith(("input", "estimate"))]
    assert len(rows) == len(rep["layers"])  # one line per layer: nothing wraps
    for row, L in zip(rows, rep["layers"]):
        # names are cut in the middle: both ends (which tell the layers apart) stay; at 80 columns
        # the ONNX op suffix ("/Gemm_0", which the op column repeats) is left out
        shown = L["name"] if cols >= 120 else L["name"].rsplit("/", 1)[0]
        assert row.split()[0].endswith(shown[-4:])
        assert "fixed<" in row and "AP_" not in row  # compact type spellings
    assert "samples/s" in out and "DSP of 360" in out
    if cols >= 160:
        assert all(L["name"] in out for L in rep["layers"])
        assert "reuse" in lines[1] and "adders" in lines[1]


def test_short_type_and_middle_truncate():
    from qfx_compile.cli import middle_truncate, short_type

    assert short_type("ap_fixed<8, 3, AP_RND_CONV, AP_SAT>") == "fixed<8,3,RND_CONV,SAT>"
    assert short_type("ap_ufixed<8, 0, AP_TRN, AP_WRAP>") == "ufixed<8,0>"
    assert short_type("ap_fixed<10, 4, AP_RND, AP_WRAP>") == "fixed<10,4,RND>"
    assert short_type(None) == "-"
    assert middle_truncate("layer1.0.conv1/Conv", 12) == "layer~1/Conv"
    assert len(middle_truncate("x" * 100, 17)) == 17 and middle_truncate("short", 17) == "short"
    from qfx_compile.cli import shorten_name

    assert shorten_name("block1.conv1", 9) == "b1.conv1" and shorten_name("block2.conv1", 9) == "b2.conv1"
    assert shorten_name("block2.shortcut.0", 9) == "b2.s.0"
    assert shorten_name("block1.conv1", 20) == "block1.conv1"
    long = shorten_name("backbone.stage3.a_rather_long_module_name.with_parts", 12)
    assert len(long) == 12 and long.startswith("b.s3.") and long.endswith("parts")


def test_model_too_big(mlp_onnx, tmp_path, capsys, monkeypatch):
    from qfx_compile import targets

    small = targets.Target("tiny", "tiny", "xc7z007sclg400-1", 10.0, 10, "DSP48E1", 100, 100, 1, 0)
    monkeypatch.setitem(targets.TARGETS, "tiny", small)
    assert main([str(mlp_onnx), "--target", "tiny", "-o", str(tmp_path / "o")]) == 2
    e = _err(capsys)
    assert "do not fit" in e and "BRAM18" in e


def test_internal_error_is_not_blamed_on_the_user(mlp_onnx, tmp_path, capsys, monkeypatch):
    """A bug (a plain ValueError inside a pass) exits 1 as an internal error, not 2 as a bad model."""
    import qfx_compile.ir.passes as passes

    def broken(graph):
        raise ValueError("bug in a pass")

    monkeypatch.setattr(passes, "run_default_passes", broken)
    rc = main([str(mlp_onnx), "--target", "ultra96", "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "internal error" in err and "bug in a pass" in err
    assert not (tmp_path / "out").exists()
