"""End to end: zoo model -> qfx ONNX (100 vectors) -> qfx-compile -> make csim: 0 mismatches.

g++ builds are shared through module-scoped caches; one build per model.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qfx_compile.backend import csim
from qfx_compile.backend.toolchain import find_ap_types
from qfx_compile.cli import main

pytestmark = [pytest.mark.xdist_group("backend"), pytest.mark.slow]

MODELS = ["mlp", "cnn", "resnet", "khot_csd_1", "khot_csd_2", "khot_csd_3", "khot_binary_1", "khot_binary_2",
          "khot_binary_3", "per_channel", "all_modes"]


def export(name: str, d: Path) -> Path:
    if name.startswith("khot_"):
        from qfx_compile.qfx.export import export_onnx
        from qfx_compile.testing.models import khot

        _, digits, k = name.split("_")
        model, example = khot(int(k), digits)
        return Path(export_onnx(model, example, str(d / f"{name}.onnx"), vectors=100))
    from qfx_compile.testing.models import export_zoo_model

    return Path(export_zoo_model(name, d, vectors=100))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="module")
def projects(workdir):
    """name -> (project dir, CsimResult), built lazily once per model."""
    cache = {}

    def get(name):
        if name not in cache:
            onnx_path = export(name, workdir)
            out = workdir / f"{name}_hls"
            rc = main([str(onnx_path), "--target", "ultra96", "-o", str(out), "--quiet"])
            assert rc == 0
            b = csim.build(out, jobs=2)
            cache[name] = (out, csim.run(out, expected_vectors=100, build_s=b))
        return cache[name]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_zoo_csim_bit_exact(projects, name):
    out, r = projects(name)
    assert r.ok, r.output[-3000:]
    assert (r.passed, r.failed) == (100, 0)
    assert r.output.strip().splitlines()[-1] == "100 passed, 0 failed"


def test_corrupted_expected_fails(projects, tmp_path):
    out, _ = projects("cnn")
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


def test_make_csim_exit_status(projects):
    out, _ = projects("mlp")
    p = subprocess.run(["make", "-s", "csim"], cwd=out, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "100 passed, 0 failed"
    p = subprocess.run(["make", "-s", "csim", "EXPECTED=tb_data/inputs.txt"], cwd=out, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode != 0


def test_firmware_compiles_without_warnings(projects):
    """-Wall -Wextra on every generated translation unit: no warning from generated code."""
    out, _ = projects("resnet")
    units = sorted((out / "firmware").glob("*.cpp")) + sorted((out / "firmware" / "layers").glob("*.cpp")) + \
        [out / "tb" / "testbench.cpp"]
    for u in units:
        p = subprocess.run(["g++", "-std=c++14", "-fsyntax-only", "-Wall", "-Wextra", "-isystem", str(find_ap_types()),
                            "-Ifirmware", "-Ifirmware/hls_lib", str(u.relative_to(out))], cwd=out,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        ours = [ln for ln in p.stderr.splitlines() if "warning" in ln and "hls_lib/" not in ln]
        assert not ours, "\n".join(ours)


def test_report_json(projects):
    import json

    out, _ = projects("resnet")
    rep = json.loads((out / "report.json").read_text())
    assert rep["target"] == "ultra96" and rep["vectors"]["count"] == 100
    ops = [L["op"] for L in rep["layers"]]
    assert "add" in ops and "conv2d" in ops
    assert all(L["accumulator"] for L in rep["layers"] if L["op"] in ("dense", "conv2d"))
