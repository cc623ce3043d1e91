"""build.tcl under tclsh with stub Vitis HLS commands: files exist, commands in a valid order, steps checked."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from qfx_compile.backend.project import compile_graph
from qfx_compile.ir.graph import Const, Graph, Node, Tensor
from qfx_compile.ir.passes import run_default_passes
from qfx_compile.fixed.types import FixedType as F

# .ci/run installs tcl: in CI (CI=true) a missing tclsh is a failure, not a skip.
pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None and not os.environ.get("CI"),
                                reason="tclsh not installed (apt-get install tcl)")

STUBS = r"""
set ::log {}
proc _rec {args} { lappend ::log [join $args " "] }
proc open_project {args} { _rec open_project }
proc set_top {name} { _rec set_top $name }
proc add_files {args} {
    set tb 0
    set files {}
    for {set i 0} {$i < [llength $args]} {incr i} {
        set a [lindex $args $i]
        if {$a eq "-tb"} { set tb 1 } elseif {$a eq "-cflags"} { incr i } else { lappend files $a }
    }
    foreach f $files {
        if {![file exists $f]} { puts "MISSING $f"; _real_exit 3 }
    }
    _rec add_files $tb
}
proc open_solution {args} { _rec open_solution }
proc set_part {p} { _rec set_part $p }
proc create_clock {args} { _rec create_clock [lindex $args 1] }
proc csim_design {args} {
    foreach f [lindex $args 1] { if {![file exists $f]} { puts "MISSING $f"; _real_exit 3 } }
    _rec csim_design
    if {[info exists ::env(STUB_FAIL)] && $::env(STUB_FAIL) eq "csim"} { error "stub failure" }
}
proc csynth_design {args} { _rec csynth_design }
proc cosim_design {args} { _rec cosim_design }
proc export_design {args} { _rec export_design [join $args " "] }
proc close_project {} { _rec close_project }
rename exit _real_exit
proc exit {{code 0}} { puts "LOG [join $::log |]"; _real_exit $code }
source build.tcl
"""


def _graph():
    rng = np.random.default_rng(0)
    w = Const(raw=rng.integers(-8, 7, size=(3, 4), endpoint=True), type=F(4, 1))
    n = Node("fc", "dense", ["x0"], ["y"], attrs={"out_type": F(8, 4, True, "AP_RND", "AP_SAT")}, params={"weight": w})
    q = Node("q", "quant", ["x"], ["x0"], attrs={"out_type": F(6, 2, True, "AP_RND_CONV", "AP_SAT")})
    g = Graph("tiny", ["x"], ["y"], [q, n], {"x": Tensor("x", (4,)), "x0": Tensor("x0"), "y": Tensor("y")})
    return run_default_passes(g)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("tcl") / "my project (v2)"  # spaces and parentheses in the path
    compile_graph(_graph(), out, target="pynq-z2", vectors=4)
    (out / "stub_run.tcl").write_text(STUBS)
    return out


def _run(project, steps, fail=None):
    env = {"PATH": "/usr/bin:/bin", "QFX_STEPS": steps}
    if fail:
        env["STUB_FAIL"] = fail
    p = subprocess.run(["tclsh", "stub_run.tcl"], cwd=project, capture_output=True, text=True, env=env, timeout=60)
    log = [ln for ln in p.stdout.splitlines() if ln.startswith("LOG ")]
    return p, (log[-1][4:].split("|") if log else [])


def _check_order(log):
    order = [e.split()[0] for e in log]
    head = ["open_project", "set_top", "add_files"]
    assert order[:3] == head
    i_sol = order.index("open_solution")
    assert all(o == "add_files" for o in order[2:i_sol])
    assert order[i_sol:i_sol + 3] == ["open_solution", "set_part", "create_clock"]
    steps = order[i_sol + 3:]
    rank = {"csim_design": 0, "csynth_design": 1, "cosim_design": 2, "export_design": 3, "close_project": 4}
    assert [rank[s] for s in steps] == sorted(rank[s] for s in steps)
    # test-bench files are added after the design files
    tb = [e.split()[1] for e in log if e.startswith("add_files")]
    assert tb == sorted(tb)
    return steps


def test_no_absolute_paths_in_build_tcl(project):
    """Paths with spaces: build.tcl passes no -I/-argv paths (includes are relative to the sources)."""
    assert " " in str(project)
    text = (project / "build.tcl").read_text()
    assert "-I" not in text and "-argv" not in text and str(project) not in text
    tb = (project / "tb" / "testbench.cpp").read_text()
    assert '#include "../firmware/qfx_top.h"' in tb


def test_default_steps(project):
    p, log = _run(project, "")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "MISSING" not in p.stdout
    assert _check_order(log) == ["csim_design", "csynth_design", "close_project"]
    assert "set_part xc7z020clg400-1" in log and "create_clock 10.0" in log


@pytest.mark.parametrize("steps,expected", [
    ("csim", ["csim_design"]), ("csynth", ["csynth_design"]), ("cosim", ["csynth_design", "cosim_design"]),
    ("export", ["csynth_design", "export_design"])])
def test_selected_steps(project, steps, expected):
    p, log = _run(project, steps)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _check_order(log) == expected + ["close_project"]
    if steps == "export":
        assert "export_design -format ip_catalog" in log


def test_failed_step_stops_with_error(project):
    p, log = _run(project, "csim csynth", fail="csim")
    assert p.returncode == 1
    assert "FAILED" in p.stderr
    assert "csynth_design" not in log


def test_unknown_step(project):
    p, _ = _run(project, "bogus")
    assert p.returncode == 2


def test_make_vitis_targets_without_vitis(project):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    for t in ("csynth", "cosim", "export"):
        p = subprocess.run(["make", t], cwd=project, capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin"}, timeout=60)
        assert p.returncode == 2
        assert "not on PATH" in p.stdout + p.stderr
