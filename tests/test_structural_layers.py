"""Structural layers (issue 8 item 4): grouped / depthwise Conv2d, Concat, ZeroPad2d, padded max / average
pooling, nearest Upsample, Conv1d with 1-D pooling, and the functional forms of the supported layers.

End to end (zoo models converted from float torch models by ``qfx.quantize_model``): PyTorch eval ==
onnxruntime == the IR interpreter == ``make csim``, 0 mismatches on 100 vectors. Layer by layer: the
eval-mode layer and the IR op against references written here from the definitions (loops over
windows, not the code under test), and the window geometry against a count of window positions.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from onnx import helper, numpy_helper
from torch import nn

from qfx_compile import qfx
from qfx_compile.fixed.types import FixedType
from qfx_compile.fixed.window import out_size, pads_from_onnx, pads_to_onnx
from qfx_compile.frontend import load_model
from qfx_compile.ir import interpret
from qfx_compile.ir.graph import Const, Node
from qfx_compile.ir.ops import get as get_op
from qfx_compile.qfx import nn as qnn
from qfx_compile.qfx.export import load_vectors, to_onnx_model
from qfx_compile.testing import models

pytestmark = pytest.mark.xdist_group("structural")

N_VECTORS = 100
ZOO = ["dwsep_concat", "upsample", "cnn1d"]
#: IR ops each zoo model must contain (the layers under test really reach the compiler)
EXPECT_OPS = {"dwsep_concat": {"conv2d", "concat", "avgpool", "pad", "maxpool"},
              "upsample": {"conv2d", "upsample", "concat", "global_avgpool"},
              "cnn1d": {"conv2d", "batchnorm", "maxpool", "avgpool", "global_avgpool"}}


def _torch_eval(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).to(torch.float64).numpy()


def _ort(proto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_torch_onnxruntime_interpreter_csim(tmp_path, name):
    from qfx_compile.cli import main
    model, example = models.build(name)
    proto = to_onnx_model(model, example, vectors=N_VECTORS)
    v = load_vectors(proto)
    x = v["input"]
    want = _torch_eval(model, x)
    assert len(np.unique(want)) > 20  # neither all zero nor all saturated
    assert np.array_equal(_ort(proto, x), want)  # onnxruntime == PyTorch eval
    path = tmp_path / f"{name}.onnx"
    onnx.save(proto, str(path))
    g = load_model(str(path))
    assert EXPECT_OPS[name] <= {n.op for n in g.nodes}
    t_out = g.tensors[g.outputs[0]].type
    ours = interpret.to_float64(interpret.run(g, x_float=x), t_out)
    assert np.array_equal(ours.reshape(want.shape), want)  # interpreter == PyTorch eval
    out = tmp_path / "hls"
    assert main([str(path), "-o", str(out), "--csim", "-q"]) == 0  # make csim against the stored vectors
    rep = json.loads((out / "report.json").read_text())
    assert (rep["csim"]["passed"], rep["csim"]["failed"]) == (N_VECTORS, 0)


# ------------------------------------------------------------------ window geometry
def _count_windows(n: int, k: int, s: int, p0: int, p1: int) -> int:
    """Start positions 0, s, 2s, ... of a window of k cells inside n + p0 + p1 cells, counted one by one."""
    count, start = 0, 0
    while start + k <= n + p0 + p1:
        count += 1
        start += s
    return count


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 6), s=st.integers(1, 4), p0=st.integers(0, 3), p1=st.integers(0, 3))
def test_out_size_counts_window_positions(n, k, s, p0, p1):
    want = _count_windows(n, k, s, p0, p1)
    if want == 0:
        with pytest.raises(ValueError):
            out_size(n, k, s, (p0, p1))
    else:
        assert out_size(n, k, s, (p0, p1)) == want


@settings(max_examples=100, deadline=None)
@given(nd=st.integers(1, 3), data=st.data())
def test_onnx_pads_order_round_trip(nd, data):
    pairs = tuple((data.draw(st.integers(0, 5)), data.draw(st.integers(0, 5))) for _ in range(nd))
    flat = pads_to_onnx(pairs)
    assert flat == [b for b, _ in pairs] + [e for _, e in pairs]  # ONNX: all begins, then all ends
    assert pads_from_onnx(flat, nd) == pairs


@settings(max_examples=60, deadline=None)
@given(h=st.integers(2, 7), w=st.integers(2, 7), k=st.integers(1, 3), s=st.integers(1, 3), pt=st.integers(0, 1),
       pl=st.integers(0, 1), pb=st.integers(0, 1), pr=st.integers(0, 1))
def test_ir_pool_shapes_and_values_match_window_loops(h, w, k, s, pt, pl, pb, pr):
    """maxpool / avgpool / pad of the IR against loops over the padded map (padding: -inf for max, 0 for avg)."""
    if pt >= k or pb >= k or pl >= k or pr >= k or h + pt + pb < k or w + pl + pr < k:
        return
    t = FixedType(6, 3, True)
    rng = np.random.default_rng(h * 1000 + w * 100 + k * 10 + s)
    x = rng.integers(t.raw_min, t.raw_max + 1, size=(2, 3, h, w))
    pads = (pt, pl, pb, pr)
    oh, ow = _count_windows(h, k, s, pt, pb), _count_windows(w, k, s, pl, pr)
    mx = np.zeros((2, 3, oh, ow), dtype=np.int64)
    sm = np.zeros((2, 3, oh, ow), dtype=np.int64)
    for i in range(oh):
        for j in range(ow):
            cells = [(i * s + a - pt, j * s + b - pl) for a in range(k) for b in range(k)]
            real = [(y, z) for y, z in cells if 0 <= y < h and 0 <= z < w]
            mx[:, :, i, j] = np.max([x[:, :, y, z] for y, z in real], axis=0)
            sm[:, :, i, j] = np.sum([x[:, :, y, z] for y, z in real], axis=0)
    node = Node("mp", "maxpool", ["x"], ["y"], attrs={"kernel": (k, k), "stride": (s, s), "pads": pads})
    assert tuple(get_op("maxpool").shape(node, [(3, h, w)])) == (3, oh, ow)
    assert np.array_equal(get_op("maxpool").run(node, [(x, t)]), mx)
    # average: the exact sum S (zeros in the padding) times r = 1/(k*k) rounded, one cast (out type wide enough
    # to hold S * r exactly: then the result is S * r itself)
    from qfx_compile.fixed.types import reciprocal_raw
    rq, rt = reciprocal_raw(k * k, 16)
    wide = FixedType(40, 40 - (t.frac_bits + rt.frac_bits), True)
    node = Node("ap", "avgpool", ["x"], ["y"], attrs={"kernel": (k, k), "stride": (s, s), "pads": pads,
                                                      "recip_bits": 16, "out_type": wide})
    assert tuple(get_op("avgpool").shape(node, [(3, h, w)])) == (3, oh, ow)
    assert np.array_equal(get_op("avgpool").run(node, [(x, t)]), sm * rq)
    node = Node("pd", "pad", ["x"], ["y"], attrs={"pads": pads})
    y = get_op("pad").run(node, [(x, t)])
    assert y.shape == (2, 3, h + pt + pb, w + pl + pr)
    assert np.array_equal(y[:, :, pt:pt + h, pl:pl + w], x) and int(np.abs(y).sum()) == int(np.abs(x).sum())


# ------------------------------------------------------------------ layers against references
def _grid(shape, t: FixedType, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(t.raw_min, t.raw_max + 1, shape, generator=g)
    return raw.double() * 2.0 ** -t.frac_bits


@pytest.mark.parametrize("groups,cin,cout", [(1, 4, 6), (2, 4, 6), (4, 4, 4), (4, 4, 8)])
def test_grouped_conv_eval_and_ir_equal_loops(groups, cin, cout):
    """Grouped / depthwise conv: eval == IR interpreter == a loop over groups and window cells."""
    torch.manual_seed(groups * 10 + cout)
    conv = qnn.Conv2d(cin, cout, 3, 1, 1, groups=groups, weight_type="ap_fixed<6,1>", bias_type="ap_fixed<10,4>",
                      output_type="ap_fixed<16,6,AP_RND_CONV,AP_SAT>").eval()
    tx = FixedType(6, 2, True)
    x = _grid((3, cin, 5, 6), tx, 1)
    with torch.no_grad():
        y = conv(x).numpy()
    w, b = conv.quantized_weight().numpy(), conv.quantized_bias().numpy()
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((3, cout, 5, 6))
    cg, og = cin // groups, cout // groups
    for o in range(cout):
        gi = o // og
        for i in range(5):
            for j in range(6):
                ref[:, o, i, j] = b[o] + (xp[:, gi * cg:(gi + 1) * cg, i:i + 3, j:j + 3] * w[o]).sum(axis=(1, 2, 3))
    t_out = conv.output_quantizer.fixed_type()
    assert np.array_equal(y, qfx.quantize(torch.from_numpy(ref), t_out).numpy())
    # the IR op
    wt = conv.weight_quantizer.fixed_type()
    bt = conv.bias_quantizer.fixed_type()
    wib = conv.weight_quantizer.int_bits_tensor().to(torch.int64).numpy()
    wraw = np.round(w * 2.0 ** (wt.width - wib).reshape(-1, 1, 1, 1)).astype(np.int64)
    bib = conv.bias_quantizer.int_bits_tensor().to(torch.int64).numpy()
    braw = np.round(b * 2.0 ** (bt.width - bib)).astype(np.int64)
    node = Node("c", "conv2d", ["x"], ["y"], attrs={"kernel": (3, 3), "stride": (1, 1), "pads": (1, 1, 1, 1),
                                                    "groups": groups, "out_type": t_out},
                params={"weight": Const(wraw, wt.replace(int_bits=int(wib.max())), wib),
                        "bias": Const(braw, bt.replace(int_bits=int(bib.max())), bib)})
    assert tuple(get_op("conv2d").shape(node, [(cin, 5, 6)])) == (cout, 5, 6)
    xr = np.round(x.numpy() * 2.0 ** tx.frac_bits).astype(np.int64)
    yr = get_op("conv2d").run(node, [(xr, tx)])
    assert np.array_equal(yr * 2.0 ** -t_out.frac_bits, y)


def test_concat_pad_upsample_eval_equal_definitions():
    t1, t2 = FixedType(8, 3, True), FixedType(6, 4, False)
    a, b = _grid((2, 3, 4, 5), t1, 2), _grid((2, 2, 4, 5), t2, 3)
    cat = qnn.Concat().eval()
    y = cat(a, b)
    assert y.dtype == torch.float64 and torch.equal(y[:, :3], a) and torch.equal(y[:, 3:], b)
    assert cat.output_type([t1, t2]) == qfx.common_type([t1, t2]) and cat.output_type([t1, t1]) == t1
    pad = qnn.ZeroPad2d((1, 2, 0, 3)).eval()  # left, right, top, bottom
    yp = pad(a)
    assert yp.shape == (2, 3, 4 + 0 + 3, 5 + 1 + 2)
    assert torch.equal(yp[:, :, 0:4, 1:6], a) and float(yp.abs().sum()) == float(a.abs().sum())
    up = qnn.Upsample(2).eval()
    yu = up(a)
    for i in range(8):
        for j in range(10):
            assert torch.equal(yu[:, :, i, j], a[:, :, i // 2, j // 2])


def test_padded_pools_eval_equal_definitions():
    t = FixedType(7, 3, True)
    x = _grid((2, 3, 5, 6), t, 4)
    mp = qnn.MaxPool2d(3, 2, 1).eval()
    ap = qnn.AvgPool2d(3, 2, 1, output_type="ap_fixed<24,6,AP_RND_CONV,AP_SAT>", recip_bits=16).eval()
    ym, ya = mp(x), ap(x)
    from qfx_compile.fixed.types import reciprocal_raw
    rq, rt = reciprocal_raw(9, 16)
    r = rq * 2.0 ** -rt.frac_bits
    for i in range(3):
        for j in range(3):
            cells = [(2 * i + u - 1, 2 * j + v - 1) for u in range(3) for v in range(3)]
            real = [x[:, :, y, z] for y, z in cells if 0 <= y < 5 and 0 <= z < 6]
            assert torch.equal(ym[:, :, i, j], torch.stack(real).max(0).values)  # padding never wins
            s = torch.stack(real).sum(0)  # padding cells are zeros, N = 9
            assert torch.equal(ya[:, :, i, j], qfx.quantize(s * r, ap.output_quantizer.fixed_type()))


# ------------------------------------------------------------------ conversion of torch models
class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.conv(x))
        y = F.max_pool2d(x, 2)
        z = F.avg_pool2d(x, 2)
        y = torch.cat([y, z], dim=1)
        y = F.pad(y, (1, 1, 1, 1))
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        y = F.relu6(y)
        return torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)


class _Modules(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.mp, self.ap = nn.MaxPool2d(2), nn.AvgPool2d(2)
        self.pad, self.up, self.relu6 = nn.ZeroPad2d(1), nn.Upsample(scale_factor=2), nn.ReLU6()
        self.gap, self.flat = nn.AdaptiveAvgPool2d(1), nn.Flatten()

    def forward(self, x):
        x = self.relu(self.conv(x))
        y = torch.cat([self.mp(x), self.ap(x)], dim=1)
        return self.flat(self.gap(self.relu6(self.up(self.pad(y)))))


def test_functional_forms_convert_like_their_modules():
    torch.manual_seed(3)
    fm, mm = _Functional().eval(), _Modules().eval()
    mm.conv.load_state_dict(fm.conv.state_dict())
    x = torch.randn(64, 1, 8, 8)
    cfg = {"learn_int_bits": False}
    qf, qm = qfx.quantize_model(fm, cfg, x).eval(), qfx.quantize_model(mm, cfg, x).eval()
    kinds = lambda q: sorted(type(m).__name__ for m in q.modules() if isinstance(m, qnn.QFXModule))  # noqa: E731
    assert kinds(qf) == kinds(qm)
    assert {"MaxPool2d", "AvgPool2d", "Concat", "ZeroPad2d", "Upsample", "Clip", "AdaptiveAvgPool2d"} <= set(kinds(qf))
    with torch.no_grad():
        assert torch.equal(qf(x), qm(x))
    proto = to_onnx_model(qf, x[:2], vectors=50)
    v = load_vectors(proto)
    assert np.array_equal(_ort(proto, v["input"]), _torch_eval(qf, v["input"]))


@pytest.mark.parametrize("make,match", [
    (lambda: _Cat(dim=2), r"torch.cat\(dim=2\).*channel axis"),
    (lambda: nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear")), "nearest"),
    (lambda: nn.Sequential(nn.Upsample(scale_factor=1.5)), "integer scale"),
    (lambda: nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False)), "count_include_pad"),
    (lambda: _Fn(lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect")), "zero padding"),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)), "dilation"),
])
def test_unsupported_forms_are_refused_by_name(make, match):
    with pytest.raises(ValueError, match=match):
        qfx.quantize_model(make(), None, torch.randn(4, 2, 8, 8))


class _Cat(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.cat([x, x], dim=self.dim)


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


# ------------------------------------------------------------------ frontend
def test_standard_resize_and_pad_import_as_upsample_and_pad(tmp_path):
    """A file with the standard ops a QONNX / torch exporter writes (Resize nearest, Pad, Concat) imports to the
    same IR as our qfx.Upsample, and the interpreter reproduces the stored vectors."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
            self.up = qnn.Upsample(2)
            self.pad = qnn.ZeroPad2d((0, 1, 2, 0))
            self.cat = qnn.Concat()

        def forward(self, x):
            x = self.inp(x)
            return torch.flatten(self.cat(self.pad(self.up(x)), self.pad(self.up(x))), 1)

    m = M().eval()
    proto = to_onnx_model(m, torch.randn(2, 2, 3, 3), vectors=20)
    for n in proto.graph.node:  # qfx.Upsample -> standard Resize (nearest, asymmetric, floor)
        if n.op_type == "Upsample":
            sc = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), n.name + ".scales")
            proto.graph.initializer.append(sc)
            new = helper.make_node("Resize", [n.input[0], "", sc.name], list(n.output), name=n.name, mode="nearest",
                                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            n.CopyFrom(new)
    path = tmp_path / "std.onnx"
    onnx.save(proto, str(path))
    g = load_model(str(path))
    assert [n.op for n in g.nodes].count("upsample") == 2 and "pad" in [n.op for n in g.nodes]
    out = interpret.run(g, g.vectors.input_raw)
    assert np.array_equal(np.asarray(out).reshape(20, -1), g.vectors.output_raw.reshape(20, -1))


def test_concat_of_different_types_is_exact_in_ir():
    """concat: each input cast to out_type; with the inputs' common type nothing is rounded."""
    t1, t2 = FixedType(8, 3, True), FixedType(6, 4, False)
    tc = qfx.common_type([t1, t2])
    nodes = [Node("c", "concat", ["a", "b"], ["y"], attrs={"out_type": tc})]
    rng = np.random.default_rng(0)
    a = rng.integers(t1.raw_min, t1.raw_max + 1, (4, 2, 3, 3))
    b = rng.integers(t2.raw_min, t2.raw_max + 1, (4, 1, 3, 3))
    y = get_op("concat").run(nodes[0], [(a, t1), (b, t2)])
    assert y.shape == (4, 3, 3, 3)
    assert np.array_equal(y[:, :2] * 2.0 ** -tc.frac_bits, a * 2.0 ** -t1.frac_bits)
    assert np.array_equal(y[:, 2:] * 2.0 ** -tc.frac_bits, b * 2.0 ** -t2.frac_bits)
    assert tuple(get_op("concat").shape(nodes[0], [(2, 3, 3), (1, 3, 3)])) == (3, 3, 3)
    with pytest.raises(Exception, match="differ in size"):
        get_op("concat").shape(nodes[0], [(2, 3, 3), (1, 3, 4)])


# ------------------------------------------------------------------ QONNX (Brevitas) against the QONNX executor
@pytest.mark.slow
def test_brevitas_depthwise_concat_pool_upsample_pad_equal_qonnx_executor(tmp_path):
    """A Brevitas model (fixed-point scales) with a depthwise and a pointwise conv, a Concat of two tensors of
    different scales, a padded MaxPool, a nearest Upsample (standard Resize) and a ZeroPad2d (standard Pad):
    the IR interpreter equals the QONNX reference executor exactly (every sum fits float32), and the compiled
    design passes its C simulation."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    import brevitas.nn as bnn
    import qonnx_models as Q
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint
    from qfx_compile.cli import main

    A = dict(act_quant=Int8ActPerTensorFixedPoint)
    W = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias=False)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = bnn.QuantIdentity(**A)
            self.stem = bnn.QuantConv2d(2, 4, 3, padding=1, **W)
            self.a0 = bnn.QuantReLU(**A)
            self.dw = bnn.QuantConv2d(4, 4, 3, padding=1, groups=4, **W)
            self.a1 = bnn.QuantReLU(**A)
            self.pw = bnn.QuantConv2d(4, 6, 1, **W)
            self.a2 = bnn.QuantIdentity(**A)
            self.pool = nn.MaxPool2d(3, 2, padding=1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.pad = nn.ZeroPad2d((1, 0, 0, 1))

        def forward(self, x):
            x = self.a0(self.stem(self.inp(x)))
            y = self.a2(self.pw(self.a1(self.dw(x))))
            return torch.flatten(self.pad(self.up(self.pool(torch.cat([x, y], dim=1)))), 1)

    path = Q.export(M(), (2, 8, 8), tmp_path / "brevitas.onnx")
    g = load_model(path)
    ops = [n.op for n in g.nodes]
    assert {"conv2d", "concat", "maxpool", "upsample", "pad"} <= set(ops)
    assert any(n.op == "conv2d" and n.attrs.get("groups") == 4 for n in g.nodes)
    x = np.random.default_rng(3).standard_normal((100, 2, 8, 8)).astype(np.float32)
    ours = interpret.to_float64(interpret.run(g, x_float=x), g.tensors[g.outputs[0]].type)
    ref = Q.reference(path, x).astype(np.float64)
    assert len(np.unique(ref)) > 20
    assert np.array_equal(ours.reshape(ref.shape), ref)
    out = tmp_path / "hls"
    assert main([path, "-o", str(out), "--csim", "-q", "--vectors", "100"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert (rep["csim"]["passed"], rep["csim"]["failed"]) == (100, 0)


# ------------------------------------------------------------------ grouped kernel: fold shapes, K-hot
def _grouped_graph():
    """Depthwise (multiplier 2, stride 2), grouped (G=2, per-channel binary points) and K-hot grouped convs with
    random mantissas, then a 2-input concat: every fold shape of qfx::conv2d_grouped through --config."""
    from qfx_compile.ir.graph import Graph, Tensor
    from qfx_compile.ir.passes import run_default_passes
    from qfx_compile.fixed.digits import digit_count
    rng = np.random.default_rng(21)
    T = lambda w, i, s=True: FixedType(w, i, s, "AP_RND", "AP_SAT")  # noqa: E731
    w1 = rng.integers(-128, 128, (12, 1, 3, 3))
    b1 = rng.integers(-300, 300, 12)
    w2 = rng.integers(-100, 100, (4, 6, 3, 3))
    ib2 = np.array([1, 0, 2, 1])
    w3 = rng.integers(-64, 64, (12, 3, 1, 1))
    w3 = np.where(digit_count(w3, "csd") <= 2, w3, 0)
    nodes = [
        Node("q_in", "quant", ["x"], ["x0"], attrs={"out_type": T(8, 3)}),
        Node("dw", "conv2d", ["x0"], ["y1"], attrs={"out_type": T(8, 3), "kernel": (3, 3), "stride": (2, 2),
                                                    "pads": (1, 1, 1, 1), "groups": 6},
             params={"weight": Const(w1, T(8, 1)), "bias": Const(b1, T(12, 4))}),
        Node("grouped", "conv2d", ["y1"], ["y2"], attrs={"out_type": T(9, 4), "kernel": (3, 3), "stride": (1, 1),
                                                         "pads": (0, 1, 2, 1), "groups": 2},
             params={"weight": Const(w2, T(8, 2), ib2)}),
        Node("khot", "conv2d", ["y1"], ["y3"], attrs={"out_type": T(8, 4), "kernel": (1, 1), "stride": (1, 1),
                                                      "pads": (0, 0, 0, 0), "groups": 4},
             params={"weight": Const(w3, T(7, 1), k_hot=np.array([2]), digits="csd")}),
        Node("cat", "concat", ["y2", "y3"], ["y"], attrs={"out_type": T(9, 4)}),
    ]
    tensors = {k: Tensor(k) for k in ("x0", "y1", "y2", "y3", "y")}
    tensors["x"] = Tensor("x", (6, 7, 7))
    return run_default_passes(Graph("grouped", ["x"], ["y"], nodes, tensors))


@pytest.mark.slow
@pytest.mark.parametrize("reuse", [(1, 1), (3, 4), (18, 54)])
def test_grouped_kernel_folds_and_khot_in_csim(tmp_path, reuse):
    """qfx::conv2d_grouped at reuse 1 (whole outputs per fold), 3 / 4 (folds straddling outputs) and the whole
    group per multiplier, a K-hot grouped conv on the shift-add path: C simulation == IR interpreter."""
    from qfx_compile.backend.project import compile_graph
    g = _grouped_graph()
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"layers": {"dw": {"reuse": reuse[0]}, "grouped": {"reuse": reuse[1]}}}))
    res = compile_graph(g, tmp_path / "hls", config=str(cfg), vectors=100, run_csim=True)
    assert res.csim.ok and (res.csim.passed, res.csim.failed) == (100, 0), res.csim.output[-2000:]
    layers = {L["name"]: L for L in res.report["layers"]}
    code = "".join(p.read_text() for p in (tmp_path / "hls" / "firmware" / "layers").glob("*.cpp"))
    assert code.count("qfx::conv2d_grouped<") == 2
    assert (layers["dw"]["reuse"], layers["grouped"]["reuse"]) == reuse
    assert layers["dw"]["multipliers"] == -(-18 // reuse[0])  # one group's 2 x 9 products, not the dense 108
    assert layers["khot"]["shift_add"]


def test_concat_of_many_tensors_is_staged_and_exact(tmp_path):
    """torch.cat of 6 tensors of 3 types: the frontend stages it (the kernel takes 2..4 inputs), the channel
    order and every value are kept (interpreter == PyTorch eval), and the design plans."""
    from qfx_compile.backend.project import compile_graph
    from qfx_compile.ir.passes import run_default_passes

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
            self.qs = nn.ModuleList([qnn.Quant(t, learnable=False) for t in
                                     ("ap_fixed<6,2,AP_RND,AP_SAT>", "ap_ufixed<5,2,AP_TRN,AP_SAT>",
                                      "ap_fixed<9,4,AP_RND_CONV,AP_WRAP>")])
            self.cat = qnn.Concat()

        def forward(self, x):
            x = self.inp(x)
            a, b, c = (q(x) for q in self.qs)
            return torch.flatten(self.cat(a, b, c, x, b, a), 1)

    m = M().eval()
    proto = to_onnx_model(m, torch.randn(2, 1, 4, 4), vectors=50)
    path = tmp_path / "cat6.onnx"
    onnx.save(proto, str(path))
    g = load_model(str(path))
    cats = [n for n in g.nodes if n.op == "concat"]
    assert len(cats) == 2 and max(len(n.inputs) for n in cats) <= 4
    v = load_vectors(proto)
    want = _torch_eval(m, v["input"])
    ours = interpret.to_float64(interpret.run(g, x_float=v["input"]), g.tensors[g.outputs[0]].type)
    assert np.array_equal(ours.reshape(want.shape), want) and np.array_equal(_ort(proto, v["input"]), want)
    res = compile_graph(run_default_passes(g), tmp_path / "hls", vectors=20)
    assert sum(L["op"] == "concat" for L in res.report["layers"]) == 2


def test_view_reshape_flatten_and_dropout_forms_convert():
    """x.view(x.size(0), -1), x.reshape(x.shape[0], -1) become Flatten, F.dropout is removed (as nn.Dropout):
    the converted model equals the one written with nn.Flatten and nn.Dropout."""
    class A(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.fc, self.fc2 = nn.Conv2d(1, 3, 3), nn.Linear(108, 4), nn.Linear(4, 2)

        def forward(self, x):
            x = F.dropout(F.relu(self.c(x)), 0.2, training=self.training)
            x = self.fc(x.view(x.size(0), -1))
            return self.fc2(x.reshape(x.shape[0], -1))

    class B(A):
        def forward(self, x):
            x = nn.functional.relu(self.c(x))
            return self.fc2(torch.flatten(self.fc(torch.flatten(x, 1)), 1))

    torch.manual_seed(5)
    a = A().eval()
    b = B().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(32, 1, 8, 8)
    cfg = {"learn_int_bits": False}
    qa, qb = qfx.quantize_model(a, cfg, x).eval(), qfx.quantize_model(b, cfg, x).eval()
    assert all(n.op in ("placeholder", "call_module", "output") for n in qa.graph.nodes)
    assert sum(isinstance(m, qnn.Flatten) for m in qa.modules()) == 2
    with torch.no_grad():
        assert torch.equal(qa(x), qb(x))
    with pytest.raises(ValueError, match="size"):  # a size used for something else is refused by name
        qfx.quantize_model(_Fn(lambda x: x.view(x.size(1), -1)), None, torch.randn(4, 2, 8, 8))


def test_batchnorm1d_eval_equals_definition_on_maps_and_vectors():
    bn = qnn.BatchNorm1d(3, scale_type="ap_fixed<8,2,AP_RND_CONV,AP_SAT>", shift_type="ap_fixed<8,2,AP_RND_CONV,AP_SAT>",
                         output_type="ap_fixed<10,4,AP_RND,AP_SAT>")
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.7, -1.2, 1.9]))
        bn.bias.copy_(torch.tensor([0.1, 0.5, -0.3]))
        bn.running_mean.copy_(torch.tensor([0.2, -0.4, 0.0]))
        bn.running_var.copy_(torch.tensor([0.5, 1.5, 0.9]))
    bn.init_quantizers_from_stats()
    bn.eval()
    a, b = bn.quantized_scale_shift()
    t = bn.output_quantizer.fixed_type()
    x3 = _grid((4, 3, 7), FixedType(8, 3, True), 6)
    x2 = _grid((4, 3), FixedType(8, 3, True), 7)
    assert torch.equal(bn(x3), qfx.quantize(x3 * a.reshape(1, 3, 1) + b.reshape(1, 3, 1), t))
    assert torch.equal(bn(x2), qfx.quantize(x2 * a + b, t))
