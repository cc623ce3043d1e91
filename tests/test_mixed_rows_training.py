"""Mixed rows (Mix and Match) on the training side: ``QFXConfig(lut_rows=...)`` and ``qfx.assign_rows``.

Each row (output channel) of a K-hot layer is either K-hot (shift-add, LUTs) or a plain fixed-point
row of the same weight type (DSP); the share comes from the config or the part; the rows whose
K-hot projection loses the least go to LUTs. Oracles here are independent of the code under test:
nearest levels by enumerating the grid with exact fractions, digit counts from ``fixed/digits.py``,
onnxruntime for the exported file, and the target table for "auto".
"""
from __future__ import annotations

import copy
import dataclasses
import math
from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from qfx_compile import qfx
from qfx_compile.fixed import digits as D
from qfx_compile.fixed.types import FixedType
from qfx_compile.qfx import nn as qnn
from qfx_compile.qfx.export import to_onnx_model
from qfx_compile.targets import TARGETS

WEIGHT = "ap_fixed<6,1,AP_RND_CONV,AP_SAT>"
SHAPE = (2, 6, 6)


class Net(nn.Module):
    def __init__(self, c_out=7, n_out=5):
        super().__init__()
        self.conv = nn.Conv2d(2, c_out, 3)
        self.relu = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(c_out * 16, n_out)

    def forward(self, x):
        return self.fc(self.flat(self.relu(self.conv(x))))


def _example(n=8, seed=0):
    return torch.rand((n,) + SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _model(lut_rows, digits="csd", k=2, seed=0, net=None, **cfg):
    torch.manual_seed(seed)
    net = net or Net()
    config = qfx.QFXConfig(weight=WEIGHT, k_hot=k, digits=digits, lut_rows=lut_rows, **cfg)
    return qfx.quantize_model(net, config, _example())


def _weighted(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (qnn.Linear, qnn.Conv2d))}


# ------------------------------------------------------------------ brute force oracles
def _levels(t: FixedType, k: int, digits: str) -> list[int]:
    """Every K-hot mantissa of ``t``, by enumerating the grid and counting digits (fixed/digits.py)."""
    out = []
    for m in range(t.raw_min, t.raw_max + 1):
        terms = D.digits_of(m, digits)
        assert sum(s << e for s, e in terms) == m
        ok = len(terms) <= k
        if digits == "sp2":  # SP2 is a subset of same-sign 2-hot: membership in the code's table
            ok = ok and m in set(D.sp2_table(t.width, t.signed, k).tolist())
        if ok:
            out.append(m)
    return out


def _nearest_khot(y: Fraction, levels: list[int]) -> int:
    """Nearest level, ties to the smaller magnitude (beyond the ends: the nearest end)."""
    return min(levels, key=lambda m: (abs(y - m), abs(m)))


def _nearest_plain(y: Fraction, t: FixedType) -> int:
    """AP_RND_CONV + AP_SAT by enumeration: the nearest mantissa of the grid, ties to the even one."""
    return min(range(t.raw_min, t.raw_max + 1), key=lambda m: (abs(y - m), m % 2))


def _row_truth(layer, k, digits):
    """Per row: (K-hot mantissas, plain mantissas, exact squared-error gap K-hot minus plain)."""
    q = layer.weight_quantizer
    t = q.base_type
    ib = q.int_bits_tensor().tolist()
    w = layer.weight.detach().double().reshape(layer.weight.shape[0], -1).tolist()
    levels = _levels(t, k, digits)
    out = []
    for r, row in enumerate(w):
        scale = Fraction(2) ** (t.width - ib[r])
        ys = [Fraction(v) * scale for v in row]
        mk = [_nearest_khot(y, levels) for y in ys]
        mf = [_nearest_plain(y, t) for y in ys]
        gap = sum((y - a) ** 2 - (y - b) ** 2 for y, a, b in zip(ys, mk, mf)) / scale ** 2
        out.append((mk, mf, gap))
    return out


def _mantissas(layer):
    q = layer.weight_quantizer
    w = layer.quantized_weight()
    ib = q.int_bits_tensor()
    raw = qfx.to_raw(w, q.fixed_type(), int_bits=ib, axis=0)
    return raw.reshape(raw.shape[0], -1).tolist()


# ------------------------------------------------------------------ shares
@pytest.mark.parametrize("digits", ["csd", "sp2"])
@pytest.mark.parametrize("lut_rows,expect", [(0, lambda n: 0), (0.0, lambda n: 0), (1, lambda n: 1),
                                             (1.0, lambda n: n), (10_000, lambda n: n)])
def test_shares(lut_rows, expect, digits):
    model = _model(lut_rows, digits)
    for name, m in _weighted(model).items():
        rows = m.weight.shape[0]
        k = m.weight_quantizer.k_hot
        assert isinstance(k, list) and len(k) == rows, name
        assert sorted(set(k) - {0}) in ([], [2]), name
        assert sum(1 for v in k if v) == expect(rows), name


def test_float_share_rounds_to_nearest_rows():
    model = _model(0.5)  # conv: 7 rows -> 3.5 -> 4; fc: 5 rows -> 2.5 -> 3 (halves up)
    got = {n: sum(1 for v in m.weight_quantizer.k_hot if v) for n, m in _weighted(model).items()}
    assert got == {"conv": 4, "fc": 3}


def test_default_is_todays_behaviour():
    model = _model(None)
    for m in _weighted(model).values():
        assert m.weight_quantizer.k_hot == 2 and not hasattr(m, "qfx_rows")


def test_per_layer_override():
    model = _model(0, overrides={"fc": {"lut_rows": 2}})
    w = _weighted(model)
    assert sum(map(bool, w["conv"].weight_quantizer.k_hot)) == 0
    assert sum(map(bool, w["fc"].weight_quantizer.k_hot)) == 2


# ------------------------------------------------------------------ assignment and projection
@pytest.mark.parametrize("digits", ["csd", "sp2"])
def test_assignment_picks_lower_error_rows(digits):
    model = _model(3, digits, seed=1)
    for name, m in _weighted(model).items():
        truth = _row_truth(m, 2, digits)
        k = m.weight_quantizer.k_hot
        lut = [r for r, v in enumerate(k) if v]
        dsp = [r for r, v in enumerate(k) if not v]
        assert len(lut) == 3
        # the rows that lose least by going K-hot are the K-hot ones
        assert max(truth[r][2] for r in lut) <= min(truth[r][2] for r in dsp), name
        # and each row holds its scheme's nearest values: K-hot levels or the plain grid
        got = _mantissas(m)
        for r in range(len(k)):
            assert got[r] == (truth[r][0] if k[r] else truth[r][1]), (name, r)


def test_rows_already_on_levels_go_to_luts():
    """Rows whose weights are exactly K-hot lose nothing (gap 0): with two LUT rows they are the chosen two."""
    model = _model(2, "sp2", seed=2)
    conv = _weighted(model)["conv"]
    q = conv.weight_quantizer
    t = q.base_type
    ib = q.int_bits_tensor()
    levels = _levels(t, 2, "sp2")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for r in (2, 5):
            pick = torch.tensor(levels)[torch.randint(len(levels), conv.weight[r].shape, generator=g)]
            conv.weight[r] = pick.double() * 2.0 ** -(t.width - int(ib[r]))
    summary = {a.layer: a for a in qfx.assign_rows(model)}
    assert [r for r, v in enumerate(q.k_hot) if v] == [2, 5]
    assert summary["conv"].lut_rows == 2 and summary["conv"].rows == 7 and summary["conv"].k == 2


def test_training_mode_projects_like_eval():
    model = _model(3, "csd", seed=3)
    for m in _weighted(model).values():
        q = m.weight_quantizer
        q.train()
        train_w = q(m.weight).detach().double()
        assert torch.equal(train_w, m.quantized_weight())


def test_gradients_reach_every_row():
    model = _model(2, "sp2", seed=4)
    model.train()
    model(_example()).pow(2).sum().backward()
    for name, m in _weighted(model).items():
        g = m.weight.grad.reshape(m.weight.shape[0], -1)
        assert bool((g.abs().sum(1) > 0).all()), name
        assert m.weight_quantizer.int_bits_param.grad is not None


def test_assign_rows_follows_the_weights():
    model = _model(2, "csd", seed=6)
    fc = _weighted(model)["fc"]
    q = fc.weight_quantizer
    before = [r for r, v in enumerate(q.k_hot) if v]
    x = torch.from_numpy(_inputs(model, 16, 1))
    model.eval()
    y0 = model(x)
    # move the weights: the former DSP rows become 1-hot (mantissas +-4), the former LUT rows +-21 (3 CSD digits)
    t, ib = q.base_type, q.int_bits_tensor()
    with torch.no_grad():
        for r in range(fc.weight.shape[0]):
            lsb = 2.0 ** -(t.width - int(ib[r]))
            sign = torch.where(fc.weight[r] < 0, -1.0, 1.0)
            fc.weight[r] = sign * lsb * (21 if r in before else 4)
    summary = {a.layer: a for a in qfx.assign_rows(model)}
    after = [r for r, v in enumerate(q.k_hot) if v]
    assert set(after).isdisjoint(before) and len(after) == 2
    assert summary["fc"].changed == 4
    assert isinstance(summary["fc"], qfx.RowAssignment) and summary["fc"].share == 2 / 5
    # eval mode picks up the new rows (no stale cache) and stays equal to the exported file
    y1 = model(x)
    fresh = copy.deepcopy(model)
    assert torch.equal(fresh(x), y1) and not torch.equal(y0, y1)
    _assert_ort_exact(model, x.numpy())


def test_assign_rows_share_argument_and_summary():
    model = _model(None, "csd", seed=8)
    res = qfx.assign_rows(model, 1)
    assert [(a.layer, a.rows, a.lut_rows) for a in res] == [("conv", 7, 1), ("fc", 5, 1)]
    for a in res:
        m = _weighted(model)[a.layer]
        w = m.weight.detach().double()
        assert a.error == float(((w - m.quantized_weight()) ** 2).sum())
    res = qfx.assign_rows(model, 1.0)
    assert all(a.lut_rows == a.rows for a in res)


# ------------------------------------------------------------------ export
def _inputs(model, n, seed):
    """Random inputs plus inputs on the input type's half-lsb grid (ties) and beyond its range."""
    t = model.input_quant.output_quantizer.fixed_type()
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(2 * t.raw_min - 8, 2 * t.raw_max + 9, (n,) + SHAPE, generator=g).to(torch.float64)
    ties = (k * t.lsb / 2).to(torch.float32)
    return torch.cat([ties, _example(n, seed)]).numpy()


def _session(proto):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _assert_ort_exact(model, x):
    proto = to_onnx_model(model, torch.from_numpy(x[:1]))
    got = _session(proto).run(None, {"input": x})[0]
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).double().numpy()
    assert got.dtype == np.float64 and np.array_equal(got, want)
    return proto


def _weight_casts(proto):
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    out = {}
    for n in proto.graph.node:
        if n.op_type == "FixedPoint" and n.input[0] in inits and n.input[0].endswith(".weight"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            out[n.input[0].rsplit(".", 1)[0]] = (inits[n.input[0]], inits[n.input[1]], attrs)
    return out


@pytest.mark.parametrize("digits,lut_rows", [("sp2", 0.5), ("csd", 1), ("binary", 3), ("sp2", 0), ("csd", 1.0)])
def test_export_runs_exactly_with_per_row_k(digits, lut_rows):
    model = _model(lut_rows, digits, seed=9)
    proto = _assert_ort_exact(model, _inputs(model, 32, 2))
    casts = _weight_casts(proto)
    for name, m in _weighted(model).items():
        w, ib, attrs = casts[name]
        q = m.weight_quantizer
        if not any(q.k_hot):
            assert "k_hot" not in attrs and "digits" not in attrs  # all rows plain: a plain layer
            continue
        ks = list(attrs["k_hot"])
        assert ks == q.k_hot and len(ks) == w.shape[0] and attrs["digits"].decode() == digits
        width = attrs["width"]
        levels = {kk: set(_levels(q.base_type, kk, digits)) for kk in set(ks) - {0}}
        for r, kk in enumerate(ks):
            raw = [Fraction(float(v)) * Fraction(2) ** (width - int(ib.reshape(-1)[r])) for v in w[r].ravel()]
            assert all(v.denominator == 1 for v in raw)
            if kk:  # each mantissa has at most K digits (enumerated from fixed/digits.py)
                assert all(int(v) in levels[kk] for v in raw), (name, r)


# ------------------------------------------------------------------ auto
def _wide_model():
    torch.manual_seed(11)
    return qfx.quantize_model(Net(c_out=64, n_out=48), qfx.QFXConfig(weight=WEIGHT, k_hot=2, digits="sp2"),
                              _example())


def _auto_counts(model, target):
    return {a.layer: a.lut_rows for a in qfx.assign_rows(model, "auto", target)}


def test_auto_follows_the_parts_lut_dsp_ratio():
    model = _wide_model()
    counts = {name: _auto_counts(model, name) for name in TARGETS}
    # the 8-bit x 6-bit products take one DSP on every part here, so only LUTs per DSP decides
    ratio = {name: Fraction(t.lut, t.dsp) for name, t in TARGETS.items()}
    order = sorted(TARGETS, key=lambda n: ratio[n])
    for layer in ("conv", "fc"):
        seq = [counts[n][layer] for n in order]
        assert seq == sorted(seq), (layer, order, seq)
        lo, hi = order[0], order[-1]
        assert counts[lo][layer] < counts[hi][layer], (layer, counts)
        assert 0 < counts[lo][layer] and counts[hi][layer] < 64


def test_auto_balances_lut_and_dsp_capacity():
    """Scaling a part's LUTs and DSPs together changes nothing; more LUTs never moves rows to DSPs, and a part
    without LUTs to spare (or without DSPs) puts every row on the other side."""
    model = _wide_model()
    base = TARGETS["ultra96"]
    ref = _auto_counts(model, base)
    assert _auto_counts(model, dataclasses.replace(base, lut=base.lut * 3, dsp=base.dsp * 3)) == ref
    more = _auto_counts(model, dataclasses.replace(base, lut=base.lut * 2))
    fewer = _auto_counts(model, dataclasses.replace(base, dsp=base.dsp * 4))
    for layer in ref:
        assert more[layer] >= ref[layer] >= fewer[layer]
    assert set(_auto_counts(model, dataclasses.replace(base, lut=1)).values()) == {0}
    rows = {n: m.weight.shape[0] for n, m in _weighted(model).items()}
    assert _auto_counts(model, dataclasses.replace(base, dsp=1, lut=10 ** 9)) == rows


def test_auto_from_config():
    torch.manual_seed(11)
    net = Net(c_out=64, n_out=48)
    model = qfx.quantize_model(net, qfx.QFXConfig(weight=WEIGHT, k_hot=2, digits="sp2", lut_rows="auto",
                                                  target="kv260"), _example())
    got = {n: sum(map(bool, m.weight_quantizer.k_hot)) for n, m in _weighted(model).items()}
    assert got == _auto_counts(model, "kv260")
    assert {a.layer: a.lut_rows for a in qfx.assign_rows(model)} == got  # the configured target is kept


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad", [-1, 1.5, -0.1, float("nan"), "half", True, [0.5]])
def test_bad_lut_rows(bad):
    with pytest.raises(ValueError, match=r"lut_rows must be None.*got"):
        _model(bad)
    model = _model(None)
    with pytest.raises(ValueError, match=r"assign_rows: lut_rows must be"):
        qfx.assign_rows(model, bad)


def test_lut_rows_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"lut_rows='auto'.*give target="):
        _model("auto")
    with pytest.raises(ValueError, match=r"unknown target 'nope'"):
        _model("auto", target="nope")
    with pytest.raises(ValueError, match=r"override 'fc': lut_rows must be.*target: unknown target"):
        _model(None, target="nope", overrides={"fc": {"lut_rows": 7.5}})  # both blockers at once
    with pytest.raises(ValueError, match=r"no Linear/Conv layer of the model is K-hot: set k_hot"):
        qfx.quantize_model(Net(), qfx.QFXConfig(lut_rows=0.5), _example())
    with pytest.raises(ValueError, match=r"give k_hot as one int"):
        qfx.quantize_model(Net(c_out=2), qfx.QFXConfig(k_hot=[1, 2], lut_rows=1), _example())
    with pytest.raises(ValueError, match=r"per_channel_weights=True"):
        _model(1, per_channel_weights=False)
    with pytest.raises(ValueError, match=r"layer 'conv': lut_rows='auto'.*give target="):
        qfx.assign_rows(_model(None), "auto")


# ------------------------------------------------------------------ through the compiler
@pytest.mark.slow
@pytest.mark.xdist_group("backend")
def test_mixed_model_compiles_bit_exact(tmp_path):
    """A trained-side mixed model: the IR interpreter equals exact eval mode bit for bit, and qfx-compile
    builds it (two cores merged in channel order) and passes the C simulation on its stored vectors."""
    from qfx_compile.cli import main
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.interpret import run, to_float64
    from qfx_compile.ir.passes import run_default_passes
    from qfx_compile.qfx.export import export_onnx, load_vectors

    model = _model(0.5, "sp2", seed=9)
    x = _inputs(model, 40, 4)
    path = export_onnx(model, torch.from_numpy(x[:1]), str(tmp_path / "mixed.onnx"), vectors=len(x), inputs=x)
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).double().numpy()
    g = load_model(path)
    out_t = g.tensors[g.outputs[0]].type
    for graph in (g, run_default_passes(g)):
        assert np.array_equal(to_float64(run(graph, x_float=x), out_t).reshape(want.shape), want)
    assert np.array_equal(run(g, load_vectors(path)["input_raw"]), load_vectors(path)["output_raw"])
    assert main([path, "-t", "ultra96", "-o", str(tmp_path / "hls"), "-q", "--csim"]) == 0


def test_hardware_cost_of_half_the_rows_lies_between(tmp_path):
    """At the same reuse for every multiplier layer, the share-0.5 model takes fewer DSPs than the all-DSP model
    and more than the all-K-hot one (which takes none), and the LUTs go the other way."""
    import json
    x = _example(1)
    costs = {}
    for share in (0, 0.5, 1.0):
        model = _model(share, "sp2", seed=9)
        layers = qfx.hardware_cost(model, "ultra96", x).layers
        cfg = tmp_path / f"reuse_{share}.json"
        cfg.write_text(json.dumps({"layers": {r["layer"]: {"reuse": 4} for r in layers if r["kind"] == "mul"}}))
        costs[share] = qfx.hardware_cost(model, "ultra96", x, config=str(cfg))
    assert costs[0].dsp > costs[0.5].dsp > costs[1.0].dsp == 0
    assert costs[0].lut < costs[0.5].lut < costs[1.0].lut


class _Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(2, 4, 3, groups=2)
        self.pw = nn.Conv2d(4, 6, 1)
        self.flat = nn.Flatten()

    def forward(self, x):
        return self.flat(self.pw(self.dw(x)))


def test_grouped_conv_rows_not_mixed():
    """The compiler splits mixed rows of dense and ungrouped conv layers only: a grouped conv that would get
    mixed rows is refused at once, naming the layer and the override; all-K-hot or all-plain is fine."""
    with pytest.raises(ValueError, match=r"layer 'dw': a grouped convolution \(groups=2\) would get 2 K-hot rows "
                                         r"of 4.*'lut_rows': 0"):
        _model(0.5, net=_Grouped())
    model = _model(0.5, net=_Grouped(), overrides={"dw": {"lut_rows": 1.0}})
    w = _weighted(model)
    assert w["dw"].weight_quantizer.k_hot == [2] * 4 and sum(map(bool, w["pw"].weight_quantizer.k_hot)) == 3
    _assert_ort_exact(model, _inputs(model, 8, 5))
