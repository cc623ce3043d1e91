"""qfx.hardware_cost: the compiler's own estimate of a QFX model (exact integers, equal to qfx-compile's
report.json on the exported file) with a gradient in the learned integer bits where they widen a type."""
import json

import pytest
import torch

from qfx_compile import qfx
from qfx_compile.cli import main
from qfx_compile.testing.models import build

pytestmark = pytest.mark.xdist_group("backend")


@pytest.mark.parametrize("name,target", [("resnet", "ultra96"), ("per_channel", "pynq-z2"), ("khot_sp2", "kv260"),
                                         ("mlp", "zcu102")])
def test_equals_the_compiler_report(name, target, tmp_path):
    model, x = build(name)
    cost = qfx.hardware_cost(model, target, x)
    path = qfx.export_onnx(model, x, str(tmp_path / f"{name}.onnx"), vectors=4)
    out = tmp_path / "prj"
    assert main([path, "-t", target, "-o", str(out), "-q"]) == 0
    tot = json.loads((out / "report.json").read_text())["totals"]
    assert cost.dsp == tot["dsp_estimate"]
    assert cost.lut == tot["lut_estimate"] + tot["weight_lutram_luts"]
    assert cost.bram18 == tot["weight_bram18"]
    assert cost.cycles == tot["interval_cycles"] and cost.latency == tot["latency_cycles"]
    # the tensors carry exactly those values
    assert cost.dsp_t.item() == cost.dsp and cost.lut_t.item() == cost.lut and cost.bram_t.item() == cost.bram18
    assert not model.training  # the zoo model stays in the mode it was in


def test_gradient_where_widths_matter():
    model, x = build("per_channel")  # per-channel weight binary points that really differ
    model.train()
    cost = qfx.hardware_cost(model, "ultra96", x)
    assert model.training
    cost.total.backward()
    for name in ("conv1", "conv2", "fc"):
        q = getattr(model, name).weight_quantizer
        ib = q.int_bits_param
        g = ib.grad
        assert g is not None and bool((g != 0).any()), name
        # the finest channel sets the common width: lowering its I widens the type (cost up: gradient < 0)
        assert g[int(torch.argmin(ib))] < 0 and bool((g <= 0).all()), name
    # a per-tensor binary point never changes a width: no gradient
    for name in ("conv1", "conv2", "fc"):
        oq = getattr(model, name).output_quantizer.int_bits_param
        assert oq.grad is None or bool((oq.grad == 0).all())


def _with_shift(layer, which, d):
    model, x = build("per_channel")
    q = getattr(model, layer).weight_quantizer
    ib = q.int_bits_tensor().clone()
    i = int(torch.argmin(ib)) if which == "min" else int(torch.argmax(ib))
    ib[i] += d
    q.set_int_bits(ib)
    return qfx.hardware_cost(model, "ultra96", x)


def test_the_direction_is_true():
    """What the gradient says, the exact estimate does: a finer binary point on the finest channel of conv1
    widens its weight array (LUTRAM), a coarser top channel widens nothing."""
    model, x = build("per_channel")
    before = qfx.hardware_cost(model, "ultra96", x)
    finer = _with_shift("conv1", "min", -4)
    assert finer.lut > before.lut and finer.total.item() > before.total.item()
    coarser = _with_shift("conv1", "max", 4)
    assert (coarser.dsp, coarser.lut, coarser.bram18) == (before.dsp, before.lut, before.bram18)


def test_needs_an_example():
    model, _ = build("mlp")
    with pytest.raises(ValueError, match="example_input"):
        qfx.hardware_cost(model, "ultra96")
    assert qfx.hardware_cost(model, "ultra96", (1, 1, 8, 8)).cycles > 0


def test_gradient_reaches_a_layer_with_mixed_rows():
    """A layer with mixed rows is priced as its multiplier core and its shift-add core (``dsp_rows`` /
    ``khot_rows``): both belong to the layer, so the gradient reaches its learned widths through both."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    x = torch.rand(8, 1, 4, 4)
    cfg = qfx.QFXConfig(k_hot=2, digits="sp2", lut_rows=0.5, learn_width=True)
    model = qfx.quantize_model(net, cfg, x)
    model.train()
    cost = qfx.hardware_cost(model, "ultra96", x)
    cores = {r["layer"].split("/")[-1] for r in cost.layers}
    assert {"dsp_rows", "khot_rows"} <= cores
    cost.total.backward()
    for name in ("1", "3"):
        w = model.get_submodule(name).weight_quantizer
        grads = [p.grad for n, p in w.named_parameters() if "width" in n]
        assert grads and all(g is not None and bool((g > 0).all()) for g in grads), name
