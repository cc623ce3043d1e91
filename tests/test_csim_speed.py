"""The parallel testbench: vectors spread over forked workers give the same verdict and report as one process.

No timing is asserted here (speed figures live in bench/bench_csim.py and the README); these tests hold
the merged output equal to the serial one, mismatches included, and the CLI's vectors/s line present.
"""
import json

import numpy as np
import pytest

from qfx_compile.backend import csim
from qfx_compile.cli import main

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model

    d = tmp_path_factory.mktemp("csim_speed")
    model = export_zoo_model("cnn", d, vectors=50)
    out = d / "cnn_hls"
    assert main([model, "-o", str(out), "-q", "--csim", "--vectors", "50"]) == 0
    return out


def _corrupt(project, tmp_path, cells):
    rows = [r.split() for r in (project / "tb_data" / "expected.txt").read_text().splitlines() if r.strip()]
    for v, i in cells:
        rows[v][i] = str(int(rows[v][i]) + 1)
    p = tmp_path / "expected_bad.txt"
    p.write_text("\n".join(" ".join(r) for r in rows) + "\n")
    return p


def test_report_has_vectors_per_s(project):
    rep = json.loads((project / "report.json").read_text())
    assert rep["csim"]["passed"] == 50 and rep["csim"]["vectors_per_s"] > 0


@pytest.mark.parametrize("workers", [2, 3, 7, 50, 64])
def test_workers_merge_like_one_process(project, tmp_path, workers):
    """Mismatches in several ranges (more than the report limit): same lines, same order, same counts."""
    cells = [(0, 1), (3, 0), (3, 4), (17, 2), (24, 9), (25, 0), (30, 3), (33, 3), (40, 5), (44, 1), (48, 2), (49, 9)]
    bad = _corrupt(project, tmp_path, cells)
    one = csim.run(project, expected_vectors=50, expected=str(bad), workers=1)
    many = csim.run(project, expected_vectors=50, expected=str(bad), workers=workers)
    failed_vectors = len({v for v, _ in cells})
    for r in (one, many):
        assert not r.ok and (r.passed, r.failed) == (50 - failed_vectors, failed_vectors)
        assert r.exit_code == 1
    assert many.mismatch_lines(100) == one.mismatch_lines(100)
    assert len(one.mismatch_lines(100)) == 10  # the report limit holds across workers
    assert [int(ln.split()[2]) for ln in one.mismatch_lines()] == sorted(v for v, _ in cells)[:10]
    good = csim.run(project, expected_vectors=50, workers=workers)
    assert good.ok and good.output.strip().splitlines()[-1] == "50 passed, 0 failed"


def test_short_expected_file_fails_in_parallel(project, tmp_path):
    rows = (project / "tb_data" / "expected.txt").read_text().splitlines()[:49]
    p = tmp_path / "short.txt"
    p.write_text("\n".join(rows) + "\n")
    r = csim.run(project, expected_vectors=50, expected=str(p), workers=4)
    assert not r.ok and r.exit_code == 2


def test_ap_mantissa_build_matches(project, tmp_path):
    """The same project built with ap_int mantissas (what synthesis reads) passes the same vectors."""
    import os
    import shutil
    import subprocess

    from qfx_compile.backend.toolchain import find_ap_types

    ap = tmp_path / "ap"
    shutil.copytree(project, ap, ignore=shutil.ignore_patterns("build"))
    env = dict(os.environ, AP_TYPES=str(find_ap_types()), CXXFLAGS="-std=c++14 -O1 -DQFX_CSIM_AP_MANTISSAS")
    p = subprocess.run(["make", "-s", "-j2", "csim-build"], cwd=ap, capture_output=True, text=True, env=env)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    r = csim.run(ap, expected_vectors=50)
    assert r.ok, r.output[-2000:]
    assert np.isfinite(r.vectors_per_s)
