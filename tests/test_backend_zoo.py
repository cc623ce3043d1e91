"""End to end: zoo model -> qfx ONNX (100 vectors) -> qfx-compile -> make csim: 0 mismatches.

One module-scoped fixture exports and compiles every project, then builds ALL their
testbenches with one ``make -j2`` (a parent Makefile runs each project's ``csim-build``
under one job server), so both cores stay busy and nothing is built twice. The
projects live in a folder whose path contains a space (the Makefiles must cope).
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qfx_compile.backend import csim
from qfx_compile.backend.project import compile_graph
from qfx_compile.backend.toolchain import find_ap_types
from qfx_compile.cli import main
from qfx_compile.ir.graph import Const, Graph, Node, Tensor
from qfx_compile.ir.passes import run_default_passes
from qfx_compile.qfx.khot import digits_of
from qfx_compile.fixed.types import FixedType as F
from qfx_compile.testing.csim_batch import build_testbenches, precompiled_header

pytestmark = [pytest.mark.xdist_group("backend"), pytest.mark.slow]

KHOT = ["khot_csd_1", "khot_csd_2", "khot_csd_3", "khot_binary_1", "khot_binary_2", "khot_binary_3"]
MODELS = ["mlp", "cnn", "resnet", "per_channel", "all_modes"] + KHOT
SYNTH = "synthetic_khot"
JOBS = int(os.environ.get("QFX_TEST_JOBS", "2"))


def export(name: str, d: Path) -> Path:
    if name.startswith("khot_"):
        from qfx_compile.qfx.export import export_onnx
        from qfx_compile.testing.models import khot

        _, digits, k = name.split("_")
        model, example = khot(int(k), digits)
        return Path(export_onnx(model, example, str(d / f"{name}.onnx"), vectors=100))
    from qfx_compile.testing.models import export_zoo_model

    return Path(export_zoo_model(name, d, vectors=100))


def _khot_matrix(rng, shape, k, frac_shift=0):
    """Random mantissas with at most k CSD digits, in int8 range."""
    out = np.zeros(shape, dtype=np.int64)
    for idx in np.ndindex(*shape):
        m = 0
        for _ in range(rng.integers(0, k + 1)):
            m += int(rng.choice([-1, 1])) << int(rng.integers(0, 6))
        out[idx] = max(-128, min(127, m))
        assert len(digits_of(int(out[idx]), "csd")) <= k
    return out


def synthetic_khot_graph() -> Graph:
    """Edge cases of the shift-add paths, checked against the IR interpreter in C simulation.

    dense1 (straight-line, signed input, bias): a zero row (bias alone), an all-negative row
    without bias, a one-term row, terms with positive and negative exponents;
    dense2 (600x12: as straight-line code over estimate.STRAIGHT_LINE_MAX_LUT, so the hls_lib
    dense_shiftadd table kernel), unsigned input.
    """
    rng = np.random.default_rng(7)
    w1 = _khot_matrix(rng, (12, 16), 3)
    w1[0] = 0
    w1[1] = -np.abs(w1[1]) - 1
    w1[2] = 0
    w1[2, 5] = 64
    b1 = rng.integers(-100, 100, size=12)
    b1[1] = 0
    w2 = _khot_matrix(rng, (600, 12), 2)
    w2[:, 0] = 3  # two terms on one input (4x - x)
    w2t = F(8, 2, True, "AP_RND", "AP_SAT")
    nodes = [
        Node("q_in", "quant", ["x"], ["x0"], attrs={"out_type": F(8, 3, True, "AP_RND_CONV", "AP_SAT")}),
        Node("fc1 / K-hot", "dense", ["x0"], ["y1"], attrs={"out_type": F(10, 4, True, "AP_RND", "AP_SAT")},
             params={"weight": Const(raw=w1, type=F(8, 5, True, "AP_RND", "AP_SAT"), k_hot=np.array([3]),
                                     digits="csd"),
                     "bias": Const(raw=b1, type=F(9, 3, True, "AP_RND", "AP_SAT"))}),
        Node("q_mid", "quant", ["y1"], ["y1q"], attrs={"out_type": F(6, 2, False, "AP_RND_CONV", "AP_SAT")}),
        Node("fc2", "dense", ["y1q"], ["y"], attrs={"out_type": F(12, 6, True, "AP_RND_CONV", "AP_SAT")},
             params={"weight": Const(raw=w2, type=w2t, k_hot=np.array([2]), digits="csd")}),
    ]
    tensors = {"x": Tensor("x", (16,)), "x0": Tensor("x0"), "y1": Tensor("y1"), "y1q": Tensor("y1q"),
               "y": Tensor("y")}
    return run_default_passes(Graph("synthetic", ["x"], ["y"], nodes, tensors))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """name -> (project dir, CsimResult); every project is built once, all in one make -j."""
    root = tmp_path_factory.mktemp("zoo") / "zoo projects"
    root.mkdir()
    outs = {}
    for name in MODELS:
        onnx_path = export(name, root)
        out = root / f"{name} hls"
        assert main([str(onnx_path), "--target", "ultra96", "-o", str(out), "--quiet"]) == 0
        outs[name] = out
    outs[SYNTH] = root / f"{SYNTH} hls"
    compile_graph(synthetic_khot_graph(), outs[SYNTH], target="ultra96", vectors=200)
    # test speed only: one precompiled header of the ap_types headers for every translation unit
    # (the projects' Makefiles are used as generated; CXXFLAGS is their documented override)
    pch = precompiled_header(tmp_path_factory.mktemp("pch"))
    build_testbenches(outs.values(), root, pch, JOBS)
    n = {name: 200 if name == SYNTH else 100 for name in outs}
    res = {name: (out, csim.run(out, expected_vectors=n[name])) for name, out in outs.items()}
    res["_pch"] = pch
    return res


@pytest.mark.parametrize("name", MODELS + [SYNTH])
def test_zoo_csim_bit_exact(zoo, name):
    out, r = zoo[name]
    assert r.ok, r.output[-3000:]
    n = r.expected_vectors
    assert (r.passed, r.failed) == (n, 0)
    assert r.output.strip().splitlines()[-1] == f"{n} passed, 0 failed"


@pytest.mark.parametrize("name", KHOT)
def test_khot_layers_are_shift_add(zoo, name):
    """K-hot layers: straight-line shift-add code, no multiplier kernel, 0 DSPs, adders counted."""
    out, _ = zoo[name]
    rep = json.loads((out / "report.json").read_text())
    mm = [L for L in rep["layers"] if L["op"] in ("dense", "conv2d")]
    assert mm and all(L["shift_add"] and L["dsp_estimate"] == 0 and L["adder_estimate"] > 0 for L in mm)
    assert all(L["lut_estimate"] > 0 and L["multipliers"] == 0 for L in mm)
    code = "".join(p.read_text() for p in (out / "firmware" / "layers").glob("*.cpp"))
    assert "qfx::dense<" not in code and "qfx::conv2d<" not in code
    assert code.count("_straight<") == len(mm)
    sa = sorted((out / "firmware" / "shiftadd").glob("*.h"))
    assert len(sa) == len(mm)
    code_lines = [ln.split("//")[0] for ln in sa[0].read_text().split("struct", 1)[1].splitlines()]
    assert any(" << " in ln for ln in code_lines) and not any("*" in ln for ln in code_lines)
    # the adders in the report are the additions written in the code
    for L in mm:
        text = (out / "firmware" / "shiftadd" / f"{L['id']}.h").read_text()
        code = [line.split("//")[0] for line in text.splitlines() if line.strip().startswith("const ap_")]
        n_ops = sum(line.count(" + ") + line.count(" - ") for line in code)
        n_neg = sum(1 for line in code if "= -" in line)
        assert n_ops + n_neg == L["adder_estimate"], L["name"]
    k1 = json.loads((zoo["khot_csd_1"][0] / "report.json").read_text())["totals"]["adder_estimate"]
    k3 = json.loads((zoo["khot_csd_3"][0] / "report.json").read_text())["totals"]["adder_estimate"]
    assert k1 < k3


def test_synthetic_uses_both_shift_add_forms(zoo):
    out, _ = zoo[SYNTH]
    rep = json.loads((out / "report.json").read_text())
    forms = [L["shift_add"]["form"] for L in rep["layers"] if L["op"] == "dense"]
    assert forms == ["straight-line", "table kernel"]
    code = "".join(p.read_text() for p in (out / "firmware" / "layers").glob("*.cpp"))
    assert "qfx::dense_shiftadd<" in code and "qfx_gen::dense_straight<" in code
    assert all(L["dsp_estimate"] == 0 for L in rep["layers"])
    params = (out / "firmware" / "parameters.h").read_text()
    assert "static const unsigned n_terms = 2;" in params and "static const unsigned reuse = 600;" in params


def test_table_kernel_reuse_from_config(zoo, tmp_path):
    """--config reuse folds a shift-add table kernel (fewer adders, more cycles); straight-line has none."""
    from qfx_compile.backend.plan import BackendError

    g = synthetic_khot_graph()
    cfg = tmp_path / "c.json"
    cfg.write_text('{"layers": {"fc2": {"reuse": 800}}}')
    res = compile_graph(g, tmp_path / "p", target="ultra96", vectors=4, config=str(cfg))
    base = json.loads((zoo[SYNTH][0] / "report.json").read_text())["layers"][-1]
    got = res.report["layers"][-1]
    assert got["reuse"] == 800 and got["adder_estimate"] < base["adder_estimate"]
    assert got["cycles"] > base["cycles"]
    assert "static const unsigned reuse = 800;" in (tmp_path / "p" / "firmware" / "parameters.h").read_text()
    cfg.write_text('{"layers": {"fc1 / K-hot": {"reuse": 4}}}')
    with pytest.raises(BackendError, match="straight-line"):
        compile_graph(g, tmp_path / "q", target="ultra96", vectors=4, config=str(cfg))


def test_multiplier_layers_fit_the_part(zoo):
    """Default reuse keeps every zoo design within 80% of the DSPs; reuse fields are in the configs."""
    for name in ("mlp", "cnn", "resnet", "per_channel", "all_modes"):
        out, _ = zoo[name]
        rep = json.loads((out / "report.json").read_text())
        tot = rep["totals"]
        assert 0 < tot["dsp_estimate"] <= tot["dsp_budget"] == int(0.8 * 360)
        assert tot["samples_per_s"] > 0 and tot["interval_cycles"] == max(L["cycles"] for L in rep["layers"])
        params = (out / "firmware" / "parameters.h").read_text()
        mm = [L for L in rep["layers"] if L["op"] in ("dense", "conv2d")]
        assert params.count("static const unsigned reuse = ") == len(mm)
        assert all(L["reuse"] >= 1 for L in mm)


def test_corrupted_expected_fails(zoo, tmp_path):
    out, _ = zoo["cnn"]
    lines = (out / "tb_data" / "expected.txt").read_text().splitlines()
    vals = lines[3].split()
    vals[2] = str(int(vals[2]) + 1)
    lines[3] = " ".join(vals)
    bad = tmp_path / "expected_bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    r = csim.run(out, expected_vectors=100, expected=str(bad))
    assert not r.ok and r.exit_code != 0
    assert (r.passed, r.failed) == (99, 1)
    assert r.mismatch_lines() and "vector 3 index 2" in r.mismatch_lines()[0]
    # a short file and a missing file fail too
    short = tmp_path / "short.txt"
    short.write_text("\n".join(lines[:50]) + "\n")
    assert not csim.run(out, expected=str(short)).ok
    assert csim.run(out, expected=str(tmp_path / "none.txt")).exit_code != 0
    trunc = tmp_path / "trunc.txt"
    trunc.write_text("\n".join(lines[:-1] + [" ".join(lines[-1].split()[:-1])]) + "\n")
    assert not csim.run(out, expected=str(trunc)).ok


def test_make_csim_exit_status(zoo):
    """make csim in a project whose path has a space: passes, and fails on wrong expectations."""
    out, _ = zoo["mlp"]
    assert " " in str(out)
    env = dict(os.environ, AP_TYPES=str(find_ap_types()))
    p = subprocess.run(["make", "-s", "csim"], cwd=out, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "100 passed, 0 failed"
    p = subprocess.run(["make", "-s", "csim", "EXPECTED=tb_data/inputs.txt"], cwd=out, capture_output=True,
                       text=True, timeout=600, env=env)
    assert p.returncode != 0


def test_firmware_compiles_without_warnings(zoo):
    """-Wall -Wextra on every generated translation unit (multiplier and shift-add code): no warning."""
    jobs = []
    for name in ("resnet", "khot_csd_2", SYNTH):
        out, _ = zoo[name]
        units = sorted((out / "firmware").glob("*.cpp")) + sorted((out / "firmware" / "layers").glob("*.cpp")) + \
            [out / "tb" / "testbench.cpp"]
        jobs += [(out, u) for u in units]
    # no -I: every include is relative to its file (what build.tcl relies on); the precompiled
    # ap_types header of the fixture (same -std/-O) keeps this fast
    running = []
    for k, (out, u) in enumerate(jobs):
        running.append(subprocess.Popen(["g++", "-std=c++14", "-O1", "-include", str(zoo["_pch"]), "-fsyntax-only",
                                         "-Wall", "-Wextra", "-isystem", str(find_ap_types()),
                                         str(u.relative_to(out))], cwd=out, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))
        if len(running) == JOBS or k == len(jobs) - 1:
            for p in running:
                _, err = p.communicate(timeout=600)
                assert p.returncode == 0, err[-3000:]
                ours = [ln for ln in err.splitlines() if "warning" in ln and "hls_lib/" not in ln]
                assert not ours, "\n".join(ours)
            running = []


def test_report_json(zoo):
    out, _ = zoo["resnet"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["target"] == "ultra96" and rep["vectors"]["count"] == 100
    ops = [L["op"] for L in rep["layers"]]
    assert "add" in ops and "conv2d" in ops
    assert all(L["accumulator"] for L in rep["layers"] if L["op"] in ("dense", "conv2d"))
    # layer names keep their '/' in comments (stem/Conv, not stem?Conv)
    assert any("/" in L["name"] for L in rep["layers"])
    assert "// layer: stem/Conv" in (out / "firmware" / "qfx_top.cpp").read_text()
