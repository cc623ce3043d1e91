"""Learned word lengths (``QFXConfig(learn_width=True)``, ``Quantizer.learn_width``).

The width is an integer in the forward pass (rounded, within the bounds), its gradient from the
task loss points where a finite difference of the exact loss in W points, the hardware cost's
gradient reaches it, a short training with a large ``lam`` narrows the types and lowers the
compiler's estimate, and a model with learned widths exports and runs in the compiler's integer
interpreter bit for bit as in exact eval mode.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qfx_compile import qfx
from qfx_compile.qfx.quantizer import Quantizer

pytestmark = pytest.mark.xdist_group("backend")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 16, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(F.relu(self.bn(self.conv(x)))), 1))


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 8, 8), generator=g) * 2 - 1, torch.randint(0, 5, (n,), generator=g)


def _model(seed=0, **cfg):
    torch.manual_seed(seed)
    cfg.setdefault("learn_width", True)
    return qfx.quantize_model(Net(), qfx.QFXConfig(**cfg), _data()[0])


def _learned(model):
    return {n: q for n, q in model.named_modules() if isinstance(q, Quantizer) and q.width_param is not None}


# ------------------------------------------------------------------ the width in the forward pass
def test_which_tensors_learn_their_width():
    names = set(_learned(_model()))
    assert names == {"input_quant.output_quantizer", "conv.weight_quantizer", "conv.output_quantizer",
                     "bn.output_quantizer", "fc.weight_quantizer", "fc.output_quantizer"}
    assert not _learned(_model(learn_width=False))
    # a per-layer override switches it off for one layer
    assert "fc.weight_quantizer" not in _learned(_model(overrides={"fc": {"learn_width": False}}))


def test_width_is_the_rounded_parameter_within_bounds():
    q = Quantizer("ap_fixed<8,2,AP_RND_CONV,AP_SAT>").learn_width(3, 10)
    for p, w in ((5.4, 5), (5.5, 6), (9.6, 10), (1.0, 3), (40.0, 10)):
        with torch.no_grad():
            q.width_param.fill_(p)
        assert q.width == w and q.fixed_type().width == w
    # a training step projects the parameter back into the bounds
    q.train()
    q(torch.randn(10))
    assert float(q.width_param.detach()) == 10.0
    # max_width=None: the declared width is the ceiling, the start is the declared width
    q2 = Quantizer("ap_fixed<6,2>").learn_width(2)
    assert q2.width_bounds == (2, 6) and q2.width == 6


def test_training_values_equal_eval_values_at_the_learned_width():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(1)) * 3
    for spelling in ("ap_fixed<8,2,AP_RND_CONV,AP_SAT>", "ap_ufixed<7,1,AP_RND,AP_SAT>",
                     "ap_fixed<9,3,AP_TRN,AP_WRAP>"):
        q = Quantizer(spelling).learn_width(2, 12)
        q.set_width(5)
        q.train()
        y_train = q(x)
        q.eval()
        assert torch.equal(y_train, q(x))
        assert torch.equal(q(x), qfx.quantize(x, q.fixed_type())) and q.fixed_type().width == 5


def _exact_loss(q, w, x, target):
    q.set_width(w)
    q.eval()
    with torch.no_grad():
        return float(((q(x) - target) ** 2).sum())


@pytest.mark.parametrize("where", ["inside", "above"])
def test_task_gradient_points_where_the_exact_loss_falls(where):
    """dL/dW has the sign of L(W+1) - L(W) of the exact cast (rounding error inside the range; the
    top of the range that one more bit raises when x saturates)."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5000, generator=g) * 1.9 if where == "inside" else 2.0 + torch.rand(5000, generator=g)
    for w in (3, 4, 6):
        q = Quantizer("ap_fixed<8,2,AP_RND_CONV,AP_SAT>").learn_width(2, 12)
        q.set_width(w)
        q.train()
        xr = x.clone().requires_grad_(True)
        ((q(xr) - x) ** 2).sum().backward()
        grad = float(q.width_param.grad)
        diff = _exact_loss(q, w + 1, x, x) - _exact_loss(q, w, x, x)
        assert diff < 0 and grad < 0, (w, grad, diff)
        # same order of magnitude as the finite difference
        assert 0.1 < grad / diff < 10, (w, grad, diff)
    # below the range of a signed type the bound -2**(I-1) does not move with W: no gradient there
    q = Quantizer("ap_fixed<8,2,AP_RND_CONV,AP_SAT>").learn_width(2, 12)
    q.train()
    ((q(-3.0 - torch.rand(100)) + 3.0) ** 2).sum().backward()
    assert float(q.width_param.grad) == 0.0


def test_width_gradient_reaches_the_parameter_through_a_model():
    model = _model()
    model.train()
    x, y = _data()
    F.cross_entropy(model(x), y).backward()
    grads = {n: q.width_param.grad for n, q in _learned(model).items()}
    assert all(g is not None for g in grads.values())
    assert sum(bool(g != 0) for g in grads.values()) >= 4


def test_bit_parameters_include_widths_and_freeze_stops_them():
    model = _model()
    ids = {id(p) for p in qfx.int_bits_parameters(model)}
    assert all(id(q.width_param) in ids for q in _learned(model).values())
    assert not ids & {id(p) for p in qfx.other_parameters(model)}
    for q in _learned(model).values():
        q.freeze()
        assert not q.width_param.requires_grad


# ------------------------------------------------------------------ bounds and errors
@pytest.mark.parametrize("cfg,match", [
    ({"min_width": 0}, "min_width must be an int >= 1"),
    ({"min_width": 2.5}, "min_width must be an int >= 1"),
    ({"max_width": 0}, "max_width must be an int >= 1 or None"),
    ({"min_width": 6, "max_width": 4}, "min_width 6 > max_width 4"),
    ({"learn_width": "yes"}, "learn_width must be True or False"),
    ({"learn_int_bits": False}, "learn_width=True needs learn_int_bits=True"),
    ({"overrides": {"fc": {"min_width": -1}}}, "layer 'fc': min_width"),
])
def test_bad_bounds_are_refused(cfg, match):
    with pytest.raises(ValueError, match=match):
        _model(**cfg)


def test_khot_bounds_name_the_fix():
    with pytest.raises(ValueError, match=r"layer 'conv': weight: learn_width: width 1 .*raise min_width"):
        _model(k_hot=2, digits="csd", min_width=1)
    with pytest.raises(ValueError, match=r"max_width 30 is above 22 bits"):
        _model(k_hot=2, digits="csd", max_width=30)
    assert _model(k_hot=2, digits="csd", min_width=2).conv.weight_quantizer.width_bounds == (2, 8)


# ------------------------------------------------------------------ the hardware cost
def test_hardware_cost_gradient_reaches_the_widths():
    model = _model()
    model.train()
    x = _data(1)[0]
    cost = qfx.hardware_cost(model, "ultra96", x)
    assert cost.dsp_t.item() == cost.dsp and cost.lut_t.item() == cost.lut  # values unchanged
    cost.total.backward()
    q = _learned(model)
    # wider weights and wider inputs of the multipliers cost more: positive gradients
    for name in ("conv.weight_quantizer", "fc.weight_quantizer", "input_quant.output_quantizer",
                 "bn.output_quantizer"):  # bn's output feeds fc through ReLU, max pool and flatten
        assert q[name].width_param.grad is not None and float(q[name].width_param.grad) > 0, name


def test_narrow_widths_cost_less_in_the_estimate():
    model = _model()
    x = _data(1)[0]
    wide = qfx.hardware_cost(model, "ultra96", x)
    for q in _learned(model).values():
        q.set_width(3)
    narrow = qfx.hardware_cost(model, "ultra96", x)
    assert narrow.total.item() < wide.total.item() and narrow.dsp < wide.dsp


def _train(lam, steps=30, seed=0):
    model = _model(seed, min_width=3)
    x, y = _data(128, seed=1)
    qfx.seed_everything(seed)
    opt = torch.optim.Adam([{"params": qfx.other_parameters(model), "lr": 1e-3},
                            {"params": qfx.int_bits_parameters(model), "lr": 0.2}])
    model.train()
    for step in range(steps):
        idx = torch.randperm(len(x))[:32]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if lam and step % 3 == 0:
            loss = loss + lam * qfx.hardware_cost(model, "ultra96", x[:1]).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, sum(q.width for q in _learned(model).values()), qfx.hardware_cost(model, "ultra96", x[:1])


def _interpreter_equals_eval(model, x, path):
    """The exported model in the compiler's integer interpreter (before and after its passes) == eval mode."""
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.interpret import run, to_float64
    from qfx_compile.ir.passes import run_default_passes
    from qfx_compile.qfx.export import export_onnx, load_vectors
    model.eval()
    with torch.no_grad():
        want = model(x).double().numpy()
    g = load_model(export_onnx(model, x[:1], str(path), vectors=len(x), inputs=x))
    out_t = g.tensors[g.outputs[0]].type
    for graph in (g, run_default_passes(g)):
        assert np.array_equal(to_float64(run(graph, x_float=x.numpy()), out_t).reshape(want.shape), want)
    v = load_vectors(str(path))
    assert np.array_equal(run(g, v["input_raw"]), v["output_raw"])
    return g


def test_short_training_with_a_large_lam_shrinks_widths_and_cost(tmp_path):
    start = _model(0, min_width=3)
    w0 = sum(q.width for q in _learned(start).values())
    c0 = qfx.hardware_cost(start, "ultra96", _data(1)[0])
    _, w_free, c_free = _train(0.0)
    model, w_lam, c_lam = _train(100.0)
    assert w_lam < w_free <= w0
    assert c_lam.total.item() < c_free.total.item() <= c0.total.item()
    assert c_lam.total.item() < c0.total.item()
    # deterministic: the same seed gives the same widths
    assert _train(100.0)[1] == w_lam
    # the trained widths are what the compiler sees, bit for bit
    g = _interpreter_equals_eval(model, _data(40, seed=5)[0], tmp_path / "trained.onnx")
    assert g.tensors[g.outputs[0]].type.width == model.fc.output_quantizer.width


# ------------------------------------------------------------------ export: the compiler sees the learned widths
@pytest.mark.parametrize("cfg", [{}, {"k_hot": 2, "digits": "csd"}])
def test_export_round_trip_is_exact(tmp_path, cfg):
    model = _model(3, min_width=2, max_width=10, **cfg)
    widths = {"input_quant.output_quantizer": 7, "conv.weight_quantizer": 5, "conv.output_quantizer": 9,
              "bn.output_quantizer": 4, "fc.weight_quantizer": 3, "fc.output_quantizer": 6}
    learned = _learned(model)
    x = _data(40, seed=4)[0]
    model.eval()
    before = model(x).detach().clone()
    for n, w in widths.items():
        learned[n].set_width(w)
    with torch.no_grad():
        assert not torch.equal(model(x), before)  # the eval cache saw the new widths
    g = _interpreter_equals_eval(model, x, tmp_path / "m.onnx")
    acts = {t.type.width for t in g.tensors.values() if t.type is not None}
    consts = {c.type.width for n in g.nodes for k, c in n.params.items() if k in ("weight", "W", "B", "w")}
    assert {7, 9, 4, 6} <= acts, acts  # input, conv output, BatchNorm output, fc output
    assert {5, 3} <= consts, consts    # the two weight tensors
    assert g.tensors[g.outputs[0]].type.width == 6


def test_train_recipe_takes_a_penalty_and_a_width_lr():
    """``train_recipe(penalty=...)`` adds the term at every step; the widths learn at ``width_lr``."""
    x, y = _data(64, seed=1)
    out = {}
    for lr in (0.0, 0.5):
        model = _model(0, min_width=3)
        calls = []

        def penalty(m, step):
            calls.append(step)
            return 100.0 * sum(q.width_param for q in _learned(m).values())  # pushes every width down
        qfx.train_recipe(model, (x, y), epochs=4, batch_size=32, penalty=penalty, width_lr=lr,
                         freeze_int_bits=None, bn_reestimate=0)
        assert calls == list(range(8))
        out[lr] = [q.width for q in _learned(model).values()]
    assert set(out[0.0]) == {8}
    assert max(out[0.5]) < 8


def test_learned_widths_pass_the_c_simulation(tmp_path):
    """A model trained with learned widths compiles, and its C simulation reproduces eval mode bit for bit
    on the stored vectors, in the default design and in the --explore design."""
    from qfx_compile.cli import main
    from qfx_compile.qfx.export import export_onnx
    model, _, _ = _train(100.0)
    assert any(q.width < 8 for q in _learned(model).values())
    x = _data(20, seed=6)[0]
    path = export_onnx(model, x[:1], str(tmp_path / "trained.onnx"), vectors=len(x), inputs=x)
    assert main([path, "-t", "ultra96", "-o", str(tmp_path / "hls"), "-q", "--csim"]) == 0
    assert main([path, "-t", "ultra96", "-o", str(tmp_path / "hls_explore"), "-q", "--csim", "--explore"]) == 0
