"""backend.rtl: the Verilog of an adder graph is bit-exact (Icarus Verilog), pipelined or not,
and the generated project's ``make rtl-sim`` passes on the zoo's K-hot models.

Oracles: numpy's integer ``M @ x`` (unit tests) and, in the project, the layer accumulators
computed from the IR weights with Fractions (``rtl.project_files``), never the graph itself.
Skipped only where Icarus Verilog / yosys are not installed (.ci/run installs them).
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qfx_compile.backend import addergraph as AG, rtl
from qfx_compile.fixed.digits import khot_table
from qfx_compile.fixed.types import FixedType

needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")
needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")


def simulate(m: rtl.Module, lines: list[str], d: Path) -> str:
    (d / "dut.v").write_text(m.text)
    (d / "vec.txt").write_text("\n".join(lines) + "\n")
    (d / "tb.v").write_text(rtl.testbench(m, len(lines), "vec.txt"))
    subprocess.run(["iverilog", "-g2005", "-o", "sim", "tb.v", "dut.v"], cwd=d, check=True, capture_output=True)
    return subprocess.run(["vvp", "-n", "sim"], cwd=d, check=True, capture_output=True, text=True).stdout


@needs_iverilog
@pytest.mark.parametrize("signed,levels,digits", [(False, 0, "csd"), (True, 0, "binary"), (True, 1, "csd"),
                                                  (False, 3, "binary")])
def test_graph_rtl_is_exact(tmp_path, signed, levels, digits):
    rng = np.random.default_rng(levels * 2 + signed)
    n_out, n_in = 12, 9
    M = rng.choice(khot_table(FixedType(8, 8, True), 2, digits), size=(n_out, n_in))
    M[0] = 0
    M[3] = -np.abs(M[3])
    lo, hi = (-128, 127) if signed else (0, 255)
    g = AG.optimize_matrix(M, [lo] * n_in, [hi] * n_in, digits=digits)
    bias = [int(v) for v in rng.integers(-300, 300, n_out)]
    outs = [rtl.OutSpec(o.signal, o.shift, o.neg, bias[j] if j % 2 else 0, 2) for j, o in enumerate(g.outputs)]
    m = rtl.verilog(g, "dut", 8, signed, outs, levels)
    assert (m.latency == 0) == (levels == 0)
    xs = [np.full(n_in, lo), np.full(n_in, hi)] + [rng.integers(lo, hi + 1, n_in) for _ in range(60)]
    lines = []
    for x in xs:
        y = [int(v) + ((bias[j] << 2) if j % 2 else 0) for j, v in enumerate(M.astype(object) @ x.astype(object))]
        lines.append(" ".join(str(int(t)) for t in list(x) + y))
    out = simulate(m, lines, tmp_path)
    assert f"RTL: {len(xs)} passed, 0 failed" in out, out
    # the check can fail: one wrong expected value is caught
    bad = lines[5].split()
    bad[-1] = str(int(bad[-1]) + 1)
    out = simulate(m, lines[:5] + [" ".join(bad)] + lines[6:], tmp_path)
    assert f"RTL: {len(xs) - 1} passed, 1 failed" in out, out


def _export(name: str, d: Path) -> Path:
    from qfx_compile.qfx.export import export_onnx
    from qfx_compile.testing.models import khot
    _, digits, k = name.split("_")
    model, example = khot(int(k), digits)
    return Path(export_onnx(model, example, str(d / f"{name}.onnx"), vectors=20))


@needs_iverilog
@pytest.mark.parametrize("name", ["khot_csd_2", "khot_binary_3", "khot_csd_1"])
def test_zoo_rtl_sim(tmp_path, name):
    """The project's make rtl-sim: every straight-line layer, the layer inputs of all test vectors."""
    from qfx_compile.cli import main
    onnx = _export(name, tmp_path)
    out = tmp_path / "proj dir"
    assert main([str(onnx), "-o", str(out), "-q"]) == 0
    layers = sorted(p.name for p in (out / "rtl").glob("sa_*.v"))
    assert len(layers) == 3                         # conv1, conv2, fc: all straight-line
    r = subprocess.run(["make", "rtl-sim"], cwd=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" passed, 0 failed") == 3, r.stdout
    # a wrong accumulator in the vectors makes it fail
    vec = sorted((out / "rtl").glob("vec_*fc*.txt"))[0]
    rows = vec.read_text().splitlines()
    f = rows[0].split()
    f[-1] = str(int(f[-1]) ^ 1)
    vec.write_text("\n".join([" ".join(f)] + rows[1:]) + "\n")
    r = subprocess.run(["make", "rtl-sim"], cwd=out, capture_output=True, text=True)
    assert r.returncode != 0 and "1 failed" in r.stdout


@needs_yosys
def test_synth_counts_cells():
    """yosys maps a small graph to LUTs and carry chains; pipelining adds flip-flops."""
    M = np.array([[3, 5, 0], [6, -1, 2]])
    g = AG.optimize_matrix(M, [0] * 3, [15] * 3)
    comb = rtl.synth(rtl.verilog(g, "top", 4, False).text, "top")
    assert comb["lut"] > 0 and comb["carry"] > 0 and comb["ff"] == 0 and comb["dsp"] == 0
    piped = rtl.synth(rtl.verilog(g, "top", 4, False, levels=1).text, "top")
    assert piped["ff"] > 0


def _held_out_graphs():
    """Layers the calibration did not fit (bench/calibrate_yosys.py FIT_SET uses seeds 1..6)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from calibrate_yosys import FIT_SET, fit_graph
    held = [(8, 12, 2, "csd", True, 101), (12, 8, 1, "binary", False, 102), (10, 6, 3, "csd", False, 103)]
    assert not {h[-1] for h in held} & {f[-1] for f in FIT_SET}
    out = [(f"random {h}", *fit_graph(*h)[:1], h[4]) for h in held]
    from qfx_compile.testing.models import khot
    for k, digits in ((2, "csd"), (3, "binary")):
        model, _ = khot(k, digits)
        w = model.conv1.quantized_weight().numpy()
        w = w.reshape(w.shape[0], -1)
        rows = []
        for r in w:   # each row on its own exact binary point
            f = 0
            while not np.all(np.ldexp(r, f) == np.round(np.ldexp(r, f))):
                f += 1
            rows.append(np.round(np.ldexp(r, f)))
        M = np.array(rows).astype(np.int64)
        out.append((f"zoo khot_{digits}_{k} conv1", AG.optimize_matrix(M, [-128] * M.shape[1], [127] * M.shape[1],
                                                                       digits=digits), True))
    return out


@needs_yosys
@pytest.mark.slow
def test_estimator_matches_yosys_on_held_out_layers():
    """estimate.shiftadd_luts (from cost_tables.json) within 15% of yosys synth_xilinx on layers not fitted."""
    from qfx_compile.backend import estimate
    tables = estimate.cost_tables()
    assert tables.get("graph"), "cost_tables.json is missing its graph fit (run bench/calibrate_yosys.py)"
    for name, g, signed in _held_out_graphs():
        got = rtl.synth(rtl.verilog(g, "layer", 8, signed).text, "layer", tables.get("family", "xcup"))["lut"]
        est = estimate.shiftadd_luts(g.cost, g.n_adders)
        assert abs(est - got) <= 0.15 * got, (name, est, got)
