"""The part's roofline (estimate.Roofline) and the latency along the dataflow graph's longest path.

The expected figures are derived here from the target table (targets.py) and the layers' sizes (their MACs,
operand widths and K), by the rules the README states, not from the code under test."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qfx_compile.backend import estimate as E
from qfx_compile.backend.explore import ExploreError, explore
from qfx_compile.backend.plan import PlanOptions, build_plan
from qfx_compile.backend.render import report_dict
from qfx_compile.cli import main
from qfx_compile.frontend import load_model
from qfx_compile.ir.passes import run_default_passes
from qfx_compile.targets import TARGETS, get_target

pytestmark = pytest.mark.xdist_group("backend")


class _Projection(nn.Module):
    """A residual block whose bypass has its own layer (a 1x1 convolution): two parallel branches."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.proj = nn.Conv2d(1, 4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = F.relu(self.c2(F.relu(self.c1(x)))) + self.proj(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(y), 1), 1))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from qfx_compile.qfx.export import export_onnx
    from qfx_compile.testing.models import INPUT_SHAPE, _structural, export_zoo_model

    d = tmp_path_factory.mktemp("roofline models")
    out = {n: Path(export_zoo_model(n, d, vectors=20)) for n in ("mlp", "resnet", "khot_sp2", "upsample")}
    m, x = _structural(_Projection, INPUT_SHAPE, 5)
    out["projection"] = Path(export_onnx(m, x, str(d / "projection.onnx"), vectors=20))
    return out


def _graph(path):
    return run_default_passes(load_model(str(path)))


def _expected_products_per_cycle(plan) -> int:
    """DSPs x (2 if packing is legal on a multiplier layer of the model, else 1) + LUTs // the fewest LUTs of one
    of its products (K-hot: one table unit, K adders of the accumulator's width; else the fabric multiplier)."""
    t = plan.target
    work = [L for L in plan.layers if L.macs > 0]
    pack = any(L.cost.kind == "mul" and L.cost.writes >= 2 and
               E.dsp_pack_rule(L.cost.x_type, L.cost.w_type, t.dsp_kind)[0] > 0 for L in work)
    luts = []
    for L in work:
        if L.fold is not None:
            luts.append(E.shiftadd_product_luts(L.fold.k, L.fold.width))
        elif L.straight is not None:
            luts.append(E.shiftadd_product_luts(L.cost.k, L.acc.width))
        else:
            luts.append(E.fabric_mul_luts(L.cost.a_bits, L.cost.b_bits))
    return t.dsp * (2 if pack else 1) + t.lut // min(luts)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", ["mlp", "resnet", "khot_sp2"])
def test_report_roofline_from_target_and_layer_sizes(models, name, target):
    t = get_target(target)
    plan = build_plan(_graph(models[name]), PlanOptions(target=t, part=t.part, clock_ns=t.clock_ns))
    rep = report_dict(plan, model_path=str(models[name]), n_vectors=0, vectors_source="-", csim=None)
    tot = rep["totals"]
    macs = sum(L["macs"] for L in rep["layers"])
    assert macs == tot["macs"] > 0
    peak = _expected_products_per_cycle(plan)
    assert tot["roofline"]["peak_macs_per_s"] == round(peak * 1e9 / t.clock_ns)
    assert tot["roofline"]["part_dsp"] == t.dsp and tot["roofline"]["part_lut"] == t.lut
    interval = max(L["cycles"] for L in rep["layers"])
    assert tot["interval_cycles"] == interval
    assert tot["macs_per_s"] == round(macs * 1e9 / (t.clock_ns * interval))
    assert tot["roofline_share"] == round(macs / (interval * peak), 6)
    assert 0 < tot["roofline_share"] <= 1
    if name == "khot_sp2":  # shift-add layers only: no DSP packing, the LUT side by the shift-add unit
        assert tot["roofline"]["products_per_dsp"] == 1 and "shift-add" in tot["roofline"]["lut_product"]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_share_at_most_one_for_every_explored_design(target):
    """Every design the search evaluates, the chosen and the default one, on every zoo model: achieved <= peak."""
    import tempfile

    from qfx_compile.testing.models import ZOO, export_zoo_model

    t = get_target(target)
    seen = 0
    with tempfile.TemporaryDirectory() as d:
        for name in ZOO:
            g = _graph(export_zoo_model(name, d, vectors=2))
            try:
                res = explore(g, t)
            except ExploreError:
                continue
            peak = res.roofline.products_per_cycle
            for dsg in res.samples + [res.chosen] + ([res.default] if res.default else []):
                assert 0 <= dsg.roofline_share <= 1
                assert dsg.roofline_share == pytest.approx(dsg.macs_per_s * t.clock_ns / 1e9 / peak, rel=1e-12)
            seen += 1
    assert seen >= len(ZOO) // 2


def test_report_equals_explore_for_the_chosen_design(models, tmp_path):
    out = tmp_path / "prj"
    assert main([str(models["projection"]), "-t", "ultra96", "-o", str(out), "--explore", "-q"]) == 0
    ex = json.loads((out / "explore.json").read_text())
    tot = json.loads((out / "report.json").read_text())["totals"]
    assert ex["roofline"] == tot["roofline"]
    for k in ("roofline_share", "macs_per_s", "interval_cycles", "latency_cycles"):
        assert ex["chosen"][k] == tot[k], k
    assert ex["default"]["roofline_share"] <= ex["chosen"]["roofline_share"]


def _longest_path(graph, cycles: dict) -> int:
    """Cycles along the longest input-to-output path: each node's cycles plus the latest of its inputs."""
    done = {}
    for n in graph.nodes:  # topological order
        done[n.outputs[0]] = cycles[n.name] + max((done.get(i, 0) for i in n.inputs), default=0)
    return done[graph.outputs[0]]


@pytest.mark.parametrize("name", ["projection", "upsample", "resnet"])
def test_latency_is_the_longest_path(models, tmp_path, name):
    """report.json's latency = the longest path through the lowered graph, from the report's per-layer cycles;
    with a layer on a parallel branch that is less than the sum of every layer's cycles."""
    out = tmp_path / "prj"
    assert main([str(models[name]), "-t", "ultra96", "-o", str(out), "-q"]) == 0
    rep = json.loads((out / "report.json").read_text())
    t = get_target("ultra96")
    plan = build_plan(_graph(models[name]), PlanOptions(target=t, part=t.part, clock_ns=t.clock_ns))
    from qfx_compile.backend import names
    cycles = {L["name"]: L["cycles"] for L in rep["layers"]}
    assert len(cycles) == len(plan.graph.nodes)
    by_node = {n.name: cycles[names.comment(n.name)] for n in plan.graph.nodes}
    lp = _longest_path(plan.graph, by_node)
    assert rep["totals"]["latency_cycles"] == lp
    total = sum(cycles.values())
    if name == "resnet":  # identity bypasses: every layer is on the main path
        assert lp == total
    else:
        assert lp < total
