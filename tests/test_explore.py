"""qfx-compile --explore: the search's choice fits the budgets, is the best interval (brute force on a small
model), reaches the plan through the --config path (the compiled report equals the search's numbers), and
every chosen design passes make csim bit-exact."""
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from qfx_compile.backend import estimate as E
from qfx_compile.backend.explore import DEFAULT_BUDGET, explore, parse_budget
from qfx_compile.cli import main
from qfx_compile.frontend import load_model
from qfx_compile.ir.passes import run_default_passes
from qfx_compile.targets import get_target

pytestmark = pytest.mark.xdist_group("backend")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model

    d = tmp_path_factory.mktemp("explore zoo")
    return {n: Path(export_zoo_model(n, d, vectors=100)) for n in ("mlp", "resnet", "khot_sp2")}


def test_parse_budget():
    assert parse_budget(None) == DEFAULT_BUDGET
    assert parse_budget("dsp=0.7, lut=0.6,bram=0.8") == {"dsp": 0.7, "lut": 0.6, "ff": 0.8, "bram": 0.8}
    for bad in ("dsp", "uram=0.5", "dsp=x", "lut=0", "lut=1.5"):
        with pytest.raises(ValueError, match="--budget"):
            parse_budget(bad)


@pytest.mark.parametrize("budget", [{"dsp": 0.05, "lut": 0.03}, {"dsp": 0.02, "lut": 0.05},
                                    {"dsp": 0.2, "lut": 0.005}, {"dsp": 0.01, "lut": 0.01}, {}])
def test_best_interval_against_brute_force(zoo, budget):
    """On the MLP with a tight DSP and LUT budget, no combination of the layers' alternatives that fits is
    faster than the search's choice, nor, at the same interval, of lower latency for no more resources."""
    g = run_default_passes(load_model(str(zoo["mlp"])))
    t = get_target("pynq-z2")
    res = explore(g, t, budget=budget)
    lim = res.limits
    c = res.chosen
    assert c.dsp <= lim["dsp"] and c.lut <= lim["lut"] and c.bram18 <= lim["bram18"] and c.ff <= lim["ff"]
    fixed_lut = res.fifo[1]
    fixed_bram = res.fifo[0]
    var = [i for i, cs in enumerate(res.cands) if len(cs) > 1]
    assert len(var) == 3  # the three dense layers
    base_cycles = [res.cands[i][0].cycles for i in range(len(res.cands)) if i not in var]
    for i in range(len(res.cands)):
        if i not in var:
            fixed_lut += res.cands[i][0].lut
            fixed_bram += res.cands[i][0].bram18
    arr = [np.array([(x.est.dsp, x.lut, x.bram18, x.cycles) for x in res.cands[i]], dtype=np.int64) for i in var]
    a, b, d = arr
    dsp = a[:, None, None, 0] + b[None, :, None, 0] + d[None, None, :, 0]
    lut = a[:, None, None, 1] + b[None, :, None, 1] + d[None, None, :, 1] + fixed_lut
    bram = a[:, None, None, 2] + b[None, :, None, 2] + d[None, None, :, 2] + fixed_bram
    cyc = np.maximum(np.maximum(a[:, None, None, 3], b[None, :, None, 3]), d[None, None, :, 3])
    cyc = np.maximum(cyc, max(base_cycles))
    lat = a[:, None, None, 3] + b[None, :, None, 3] + d[None, None, :, 3] + sum(base_cycles)
    ok = (dsp <= lim["dsp"]) & (lut <= lim["lut"]) & (bram <= lim["bram18"]) & (lut <= lim["ff"])
    assert ok.any()
    best = cyc[ok].min()
    assert c.interval == best
    # at that interval, nothing that fits is faster in latency without costing more of some resource
    better = ok & (cyc == best) & (lat < c.latency) & (dsp <= c.dsp) & (lut <= c.lut) & (bram <= c.bram18)
    assert not better.any()
    if budget:  # the budget really binds: the unconstrained fastest design does not fit
        assert not ok[cyc == cyc.min()].all()


def test_no_design_fits(zoo, tmp_path, capsys):
    rc = main([str(zoo["resnet"]), "-t", "pynq-z2", "-o", str(tmp_path / "p"), "--explore", "--budget",
               "dsp=0.001,lut=0.001", "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no design fits pynq-z2" in err and "Traceback" not in err


def test_budget_needs_explore(zoo, tmp_path, capsys):
    assert main([str(zoo["mlp"]), "-o", str(tmp_path / "p"), "--budget", "dsp=0.5", "-q"]) == 2
    assert "add --explore" in capsys.readouterr().err


def test_without_matplotlib_only_json(zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "p"
    assert main([str(zoo["mlp"]), "-t", "ultra96", "-o", str(out), "--explore", "-q"]) == 0
    assert (out / "explore.json").is_file() and not (out / "explore.png").exists()
    assert "matplotlib is not installed" in capsys.readouterr().err


def _check_report_matches(out: Path):
    ex = json.loads((out / "explore.json").read_text())
    rep = json.loads((out / "report.json").read_text())
    tot, ch = rep["totals"], ex["chosen"]
    assert ch["dsp"] == tot["dsp_estimate"]
    assert ch["interval_cycles"] == tot["interval_cycles"] and ch["latency_cycles"] == tot["latency_cycles"]
    assert ch["lut"] == tot["lut_estimate"] + tot["weight_lutram_luts"] + ex["fifo"]["lut"]
    assert ch["bram18"] == tot["weight_bram18"] + ex["fifo"]["bram18"]
    assert (tot["fifo_bram18"], tot["fifo_luts"]) == (ex["fifo"]["bram18"], ex["fifo"]["lut"])
    for k, lim in ex["budget"].items():
        assert ch[k] <= lim
    by_name = {L["name"]: L for L in rep["layers"]}
    for L in ex["layers"]:
        if "reuse" in L["options"]:
            assert by_name[L["name"]]["reuse"] == L["options"]["reuse"]
        if "mul_impl" in L["options"]:
            assert by_name[L["name"]]["mul_impl"] == L["options"]["mul_impl"]
    assert rep["csim"]["failed"] == 0 and rep["csim"]["passed"] == 100
    return ex, rep


@pytest.mark.slow
@pytest.mark.parametrize("name,target,budget", [
    ("mlp", "pynq-z2", "dsp=0.05,lut=0.03"),     # DSPs and LUTs both bind: mixed bindings and reuse
    ("resnet", "ultra96", None),                 # residual forks, batchnorm bindings, default shares
    ("khot_sp2", "pynq-z2", "lut=0.05"),         # K-hot layers pushed from straight-line code to folded tables
])
def test_chosen_design_csim_bit_exact(zoo, tmp_path, name, target, budget):
    out = tmp_path / f"{name} prj"
    argv = [str(zoo[name]), "-t", target, "-o", str(out), "--explore", "--csim", "-q"]
    if budget:
        argv += ["--budget", budget]
    assert main(argv) == 0
    ex, rep = _check_report_matches(out)
    cfg = json.loads((out / "explore_config.json").read_text())
    assert set(cfg) == {"layers"}
    forms = {L["form"] for L in ex["layers"]}
    if name == "khot_sp2":
        assert "table" in forms
    if name == "mlp":  # DSP multipliers (plain or packed two per DSP) and LUT multipliers
        assert "lut" in forms and forms & {"dsp", "dsp_pack"}
    if name == "resnet":
        assert (out / "explore.png").is_file()


def test_config_options_are_kept(zoo, tmp_path):
    """A layer the user fixes in --config keeps its reuse and binding; the search chooses the rest."""
    g = run_default_passes(load_model(str(zoo["mlp"])))
    dense = [n.name for n in g.nodes if n.op == "dense"]
    cfg = tmp_path / "layers.json"
    cfg.write_text(json.dumps({"default": {"stream_depth": 4}, "layers": {dense[0]: {"reuse": 64, "mul_impl": 1}}}))
    out = tmp_path / "prj"
    assert main([str(zoo["mlp"]), "-t", "ultra96", "-o", str(out), "--explore", "--config", str(cfg), "-q"]) == 0
    rep = json.loads((out / "report.json").read_text())
    first = next(L for L in rep["layers"] if L["op"] == "dense")
    assert first["reuse"] == 64 and first["mul_impl"] == 1
    assert "depth=4" in (out / "firmware" / "qfx_top.cpp").read_text()
    _ex = json.loads((out / "explore.json").read_text())
    assert _ex["layers"][[L["op"] for L in _ex["layers"]].index("dense")]["alternatives"] == 1


def test_second_run_replaces_the_explore_files(zoo, tmp_path):
    """explore.json / .png / _config.json are listed in OUTDIR's manifest: the next run replaces them."""
    out = tmp_path / "p"
    for _ in range(2):
        assert main([str(zoo["mlp"]), "-t", "ultra96", "-o", str(out), "--explore", "-q"]) == 0
    marker = (out / ".qfx-compile").read_text()
    assert "  explore.json\n" in marker and "  explore_config.json\n" in marker
    assert main([str(zoo["mlp"]), "-t", "ultra96", "-o", str(out), "-q"]) == 0  # a plain run replaces them too
    assert not (out / "explore.json").exists()
