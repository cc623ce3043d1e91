"""Mix and Match rows on the compiler side (issue 11): a dense / conv2d layer whose weight has ``k_hot`` 0 on some
output channels (fixed-point rows) and K > 0 on the others (K-hot rows) compiles as a multiplier core and a
shift-add core on the same input, merged in channel order (``merge_rows``).

The ONNX files are written here by hand in our qfx format (``qfx.FixedPoint`` casts with ``k_hot``/``digits``
on the weights), with test vectors whose expected outputs come from an independent integer reference in this
file (Python integers, round half to even, saturation), not from the compiler: the compiler checks the stored
vectors against its interpreter (``check_stored_vectors``) and ``make csim`` checks the hardware against them.
"""
from __future__ import annotations

import base64
import collections
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qfx_compile.backend import csim
from qfx_compile.backend.lower import split_mixed_rows
from qfx_compile.backend.plan import BackendError
from qfx_compile.backend.project import compile_graph
from qfx_compile.cli import main
from qfx_compile.fixed.digits import khot_table
from qfx_compile.fixed.types import FixedType as F
from qfx_compile.frontend import ModelError, load_model
from qfx_compile.ir.graph import Node
from qfx_compile.ir.interpret import run
from qfx_compile.ir.ops import OpError, get
from qfx_compile.ir.passes import infer_shapes, run_default_passes
from qfx_compile.testing.csim_batch import build_testbenches, precompiled_header

#: one worker builds the module's projects once (make test runs pytest -n with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("mixed_rows")
JOBS = int(os.environ.get("QFX_TEST_JOBS", "2"))
IN_VEC = F(8, 3, True, "AP_RND_CONV", "AP_SAT")
HID = F(10, 4, True, "AP_RND_CONV", "AP_SAT")
OUT = F(12, 5, True, "AP_RND_CONV", "AP_SAT")
W8 = F(8, 1, True, "AP_RND_CONV", "AP_SAT")
B10 = F(10, 3, True, "AP_RND_CONV", "AP_SAT")
#: a mantissa with four nonzero digits in binary and in CSD (1010101b): in no K-hot or SP2 set of K <= 3
NOT_KHOT = 85


# ------------------------------------------------------------------ the model files
def csd_digits(m: int) -> int:
    """Nonzero digits of the non-adjacent form of m (reference: digit by digit)."""
    m, n = abs(int(m)), 0
    while m:
        if m & 1:
            n += 1
            m = m - 1 if (m & 3) == 1 else m + 1
        m >>= 1
    return n


def weight_rows(rng, n_out, n_in, ks, digits, t=W8):
    """Mantissas (n_out, n_in): row j K-hot from the K-hot set of ``t`` when ks[j] > 0, else any value of the
    type with one mantissa that is K-hot in no set (so a check of that row would fail)."""
    w = np.zeros((n_out, n_in), dtype=np.int64)
    for j, k in enumerate(ks):
        if k:
            w[j] = rng.choice(khot_table(t, k, digits), size=n_in)
        else:
            w[j] = rng.integers(t.raw_min, t.raw_max + 1, size=n_in)
            w[j, j % n_in] = NOT_KHOT
    return w


class Builder:
    """A qfx ONNX graph: double input ``x`` -> FixedPoint -> layers -> output ``y``; every constant an initializer
    of exact float64 values cast by a FixedPoint (as qfx.export_onnx writes them)."""

    def __init__(self, in_shape, in_t: F):
        self.nodes, self.inits, self.k = [], [], 0
        self.in_shape, self.in_t = tuple(in_shape), in_t
        self.x = self.fp("x", in_t, "input")

    def _name(self, base):
        self.k += 1
        return f"{base}_{self.k}"

    def fp(self, x, t: F, name, int_bits=None, **extra):
        ib = np.asarray(t.int_bits if int_bits is None else int_bits, dtype=np.int64)
        ibn = self._name(f"{name}.ib")
        self.inits.append(numpy_helper.from_array(ib, ibn))
        out = self._name(f"{name}.q")
        self.nodes.append(helper.make_node("FixedPoint", [x, ibn], [out], name=f"{name}/FixedPoint", domain="qfx",
                                           width=t.width, signed=int(t.signed), rounding=t.rounding,
                                           overflow=t.overflow, **extra))
        return out

    def const(self, name, raw, t: F, int_bits=None, **extra):
        raw = np.asarray(raw, dtype=np.int64)
        ib = np.full(raw.shape[0], t.int_bits) if int_bits is None else np.asarray(int_bits)
        frac = (t.width - ib).reshape((-1,) + (1,) * (raw.ndim - 1))
        vals = raw * np.exp2(-frac.astype(np.float64))
        init = self._name(name)
        self.inits.append(numpy_helper.from_array(vals.astype(np.float64), init))
        per = None if int_bits is None else np.asarray(int_bits).reshape((-1,) + (1,) * (raw.ndim - 1))
        return self.fp(init, t, name, per, **extra)

    def weighted(self, op, name, w, b, out_t, relu, k_hot, digits, int_bits=None, **attrs):
        extra = {} if k_hot is None else {"k_hot": [int(k) for k in k_hot], "digits": digits}
        ins = [self.x, self.const(f"{name}.weight", w, W8, int_bits, **extra)]
        if b is not None:
            ins.append(self.const(f"{name}.bias", b, B10))
        acc = self._name(f"{name}.acc")
        self.nodes.append(helper.make_node(op, ins, [acc], name=f"{name}/{op}", **attrs))
        if relu:
            r = self._name(f"{name}.relu")
            self.nodes.append(helper.make_node("Relu", [acc], [r], name=f"{name}/Relu"))
            acc = r
        self.x = self.fp(acc, out_t, f"{name}.out")

    def flatten(self):
        out = self._name("flat")
        self.nodes.append(helper.make_node("Flatten", [self.x], [out], name="flatten", axis=1))
        self.x = out

    def save(self, path, x_raw, y_raw):
        self.nodes.append(helper.make_node("Identity", [self.x], ["y"], name="output"))
        g = helper.make_graph(self.nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.DOUBLE,
                                                                                   ["N", *self.in_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("qfx", 1)])
        if x_raw is not None:
            buf = io.BytesIO()
            np.savez_compressed(buf, input_raw=np.asarray(x_raw, dtype=np.int64),
                                output_raw=np.asarray(y_raw, dtype=np.int64))
            m.metadata_props.add(key="qfx.vectors", value=base64.b64encode(buf.getvalue()).decode("ascii"))
        onnx.save(m, str(path))
        return Path(path)


# ------------------------------------------------------------------ the independent reference (Python integers)
#: how often the reference met a tie and a saturation (the vectors must exercise both)
CASES = collections.Counter()


def cast_ref(acc: int, frac: int, t: F) -> int:
    """acc * 2**-frac cast to t: round half to even (AP_RND_CONV), then saturate (AP_SAT)."""
    s = frac - t.frac_bits
    if s <= 0:
        q = acc << -s
    else:
        q, r = divmod(acc, 1 << s)
        half = 1 << (s - 1)
        CASES["tie"] += r == half
        if r > half or (r == half and q % 2):
            q += 1
    CASES["saturate"] += not t.raw_min <= q <= t.raw_max
    return min(max(q, t.raw_min), t.raw_max)


def dense_ref(x, fx, w, fw, b, fb, t, relu):
    """x: (n_in,) ints at frac fx; w rows at frac fw[j]; b at frac fb."""
    out = []
    for j in range(w.shape[0]):
        f = max(fx + int(fw.max()), fb)
        acc = sum(int(xi) * int(wi) for xi, wi in zip(x, w[j])) << (f - fx - int(fw[j]))
        if b is not None:
            acc += int(b[j]) << (f - fb)
        out.append(cast_ref(max(acc, 0) if relu else acc, f, t))
    return out


def conv_ref(x, fx, w, fw, b, fb, t, relu, stride, pad):
    """x: (C, H, W) ints; w (O, C, K, K); zero padding on every side; returns (O, H', W')."""
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.zeros((c, h + 2 * pad, wd + 2 * pad), dtype=object)
    xp[:, pad:pad + h, pad:pad + wd] = x
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    y = np.zeros((o, ho, wo), dtype=np.int64)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k].reshape(-1)
            y[:, i, j] = dense_ref(patch, fx, w.reshape(o, -1), fw, b, fb, t, relu)
    return y


def inputs(rng, shape, t, n):
    x = rng.integers(t.raw_min, t.raw_max + 1, size=(n, *shape))
    x[0], x[1] = t.raw_max, t.raw_min  # saturation paths
    return x


# ------------------------------------------------------------------ the models
#: MLP layers: (name, n_out, k_hot per row or None, digits, relu, bias)
MLP = [
    ("fc1", 10, [0, 2, 0, 0, 1, 2, 0, 2, 2, 0], "csd", True, True),      # mixed, odd order, per-channel binary point
    ("fc2", 7, [0, 0, 0, 2, 0, 0, 0], "sp2", True, True),                # exactly one K-hot row
    ("fc3", 6, [0] * 6, "csd", True, False),                              # share 0: a plain layer
    ("fc4", 5, [1, 2, 2, 1, 2], "binary", True, True),                   # all rows K-hot, K per row
    ("fc5", 4, [2, 2, 2, 0], "sp2", False, True),                        # exactly one fixed-point row, last
]


def mlp_model(path, n_vectors=40, seed=1):
    rng = np.random.default_rng(seed)
    b = Builder((12,), IN_VEC)
    x = inputs(rng, (12,), IN_VEC, n_vectors)
    ys, fx, n_in = [list(v) for v in x], IN_VEC.frac_bits, 12
    for li, (name, n_out, ks, digits, relu, bias) in enumerate(MLP):
        w = weight_rows(rng, n_out, n_in, ks, digits)
        ib = np.array([1, 2, 1, 0, 1, 3, 1, 2, 1, 1])[:n_out] if name == "fc1" else None
        fw = W8.width - (np.full(n_out, W8.int_bits) if ib is None else ib)
        bb = rng.integers(B10.raw_min, B10.raw_max + 1, size=n_out) if bias else None
        t = OUT if li == len(MLP) - 1 else HID
        b.weighted("Gemm", name, w, bb, t, relu, ks, digits, int_bits=ib, transB=1)
        ys = [dense_ref(v, fx, w, fw, bb, B10.frac_bits, t, relu) for v in ys]
        fx, n_in = t.frac_bits, n_out
    return b.save(path, x, ys)


IN_MAP = F(6, 2, True, "AP_RND_CONV", "AP_SAT")
#: CNN layers: conv1 3x3 pad 1 (6 filters, SP2, mixed), conv2 3x3 stride 2 (5 filters, one CSD row, no bias),
#: then a flattened (5, 3, 3) map into a mixed dense layer (its weight columns follow the HWC stream)
CONV1_K = [2, 0, 0, 2, 1, 0]
CONV2_K = [0, 0, 0, 0, 3]
FC_K = [0, 2, 0, 2]


def cnn_model(path, n_vectors=24, seed=2, groups=None):
    rng = np.random.default_rng(seed)
    b = Builder((3, 8, 8), IN_MAP)
    x = inputs(rng, (3, 8, 8), IN_MAP, n_vectors)
    fx = IN_MAP.frac_bits
    if groups:  # a grouped conv with mixed rows (refused by the backend)
        w = weight_rows(rng, 6, 1 * 3 * 3, CONV1_K, "sp2").reshape(6, 1, 3, 3)
        b.weighted("Conv", "gconv", w, None, HID, True, CONV1_K, "sp2", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                   group=3)
        return b.save(path, None, None)
    w1 = weight_rows(rng, 6, 27, CONV1_K, "sp2").reshape(6, 3, 3, 3)
    b1 = rng.integers(B10.raw_min, B10.raw_max + 1, size=6)
    b.weighted("Conv", "conv1", w1, b1, HID, True, CONV1_K, "sp2", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    w2 = weight_rows(rng, 5, 54, CONV2_K, "csd").reshape(5, 6, 3, 3)
    b.weighted("Conv", "conv2", w2, None, HID, True, CONV2_K, "csd", kernel_shape=[3, 3], strides=[2, 2])
    b.flatten()
    w3 = weight_rows(rng, 4, 45, FC_K, "csd")
    b3 = rng.integers(B10.raw_min, B10.raw_max + 1, size=4)
    b.weighted("Gemm", "fc", w3, b3, OUT, False, FC_K, "csd", transB=1)
    fw = np.full(6, W8.frac_bits)
    ys = []
    for v in x:
        h1 = conv_ref(v, fx, w1, fw, b1, B10.frac_bits, HID, True, 1, 1)
        h2 = conv_ref(h1, HID.frac_bits, w2, fw[:5], None, B10.frac_bits, HID, True, 2, 0)
        ys.append(dense_ref(h2.reshape(-1), HID.frac_bits, w3, fw[:4], b3, B10.frac_bits, OUT, False))
    return b.save(path, x, ys)


# ------------------------------------------------------------------ frontend, passes, lowering (no C++)
def _vectors(path):
    g = load_model(str(path))
    return g, g.vectors.input_raw, g.vectors.output_raw


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed files")
    out, cases = {}, {}
    for name, build in (("mlp", mlp_model), ("cnn", cnn_model)):
        CASES.clear()
        out[name] = build(d / f"{name}.onnx")
        cases[name] = dict(CASES)
    out["_cases"] = cases
    return out


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_vectors_hold_ties_and_saturation(files, name):
    """The stored vectors reach casts exactly half-way between two codes and beyond the output range."""
    c = files["_cases"][name]
    assert c.get("tie", 0) > 0 and c.get("saturate", 0) > 0, c


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_split_graph_computes_the_original(files, name):
    """The interpreter on the graph with every mixed layer split (two cores and a merge) equals the interpreter
    on the original graph, and both equal the independent reference."""
    g, x, y = _vectors(files[name])
    g = run_default_passes(g)
    s = infer_shapes(split_mixed_rows(g))
    assert np.array_equal(run(g, x), y)
    assert np.array_equal(run(s, x), y)


def test_frontend_keeps_per_row_k(files):
    g = run_default_passes(load_model(str(files["mlp"])))
    dense = {n.name.split("/")[0]: n for n in g.nodes if n.op == "dense"}
    for name, _, ks, digits, _, _ in MLP:
        w = dense[name].params["weight"]
        if not any(ks):  # an all-zero k_hot is a plain layer
            assert w.k_hot is None and w.digits is None and "terms" not in dense[name].attrs
            continue
        assert w.k_hot.tolist() == ks and w.digits == digits
        assert w.khot_rows().tolist() == [k > 0 for k in ks]
        assert w.mixed_rows() == (0 < sum(k > 0 for k in ks) < len(ks))
        # shift-add terms only on the K-hot rows (None marks a fixed-point row), each row's value exactly
        terms = dense[name].attrs["terms"]
        f = np.asarray(w.frac_bits())
        for j, k in enumerate(ks):
            if not k:
                assert terms[j] is None
                continue
            for i in range(w.raw.shape[1]):
                exact = sum(s * 2.0 ** e for ii, s, e in terms[j] if ii == i)
                assert exact == int(w.raw[j, i]) * 2.0 ** -int(np.broadcast_to(f, (len(ks),))[j])
            assert len(terms[j]) == sum(csd_digits(m) for m in w.raw[j])
        assert dense[name].attrs["adders"] == sum(max(len(t) - 1, 0) for t in terms if t is not None)


def test_split_structure(files):
    g = run_default_passes(load_model(str(files["mlp"])))
    s = split_mixed_rows(g)
    ops = [(n.op, n.name.split("/", 1)[1] if "/" in n.name else n.name) for n in s.nodes if n.op != "quant"]
    names = [n.name for n in s.nodes]
    fc1 = [n for n in names if n.startswith("fc1/")]
    assert fc1[:3] == ["fc1/Gemm/dsp_rows", "fc1/Gemm/khot_rows", "fc1/Gemm/merge_rows"], names
    by = {n.name: n for n in s.nodes}
    merge = by["fc1/Gemm/merge_rows"]
    assert merge.attrs["parts"] == tuple(int(k > 0) for k in MLP[0][2])
    dsp, kh = by["fc1/Gemm/dsp_rows"], by["fc1/Gemm/khot_rows"]
    assert dsp.params["weight"].k_hot is None and "terms" not in dsp.attrs
    assert dsp.params["weight"].raw.shape == (5, 12) and kh.params["weight"].raw.shape == (5, 12)
    assert kh.params["weight"].k_hot.tolist() == [2, 1, 2, 2, 2] and len(kh.attrs["terms"]) == 5
    assert merge.inputs == dsp.outputs + kh.outputs
    # fc3 (share 0) and fc4 (all rows) are one layer each; fc2 and fc5 (one row of a kind) are split
    assert [n for n in names if n.startswith("fc3/")] == ["fc3/Gemm", "fc3/Gemm/relu"]
    assert [n for n in names if n.startswith("fc4/")] == ["fc4/Gemm", "fc4/Gemm/relu"]
    assert any(n.endswith("fc2/Gemm/merge_rows") for n in names) and any(n.endswith("fc5/Gemm/merge_rows")
                                                                         for n in names)
    assert ops.count(("merge_rows", "Gemm/merge_rows")) == 3
    # fc1's rows have per-channel binary points: unified, the layer's weight needs 11 bits; its fixed-point
    # rows (int_bits 1, 1, 0, 1, 1) need fewer at the same binary point, so its multipliers are narrower
    w = next(n for n in g.nodes if n.name == "fc1/Gemm").params["weight"]
    wd = dsp.params["weight"]
    rows = w.raw[[0, 2, 3, 6, 9]]
    need = next(b for b in range(1, 64) if -(1 << (b - 1)) <= rows.min() and rows.max() < (1 << (b - 1)))
    assert w.type.width == 11 and wd.type.width == need < 11 and wd.type.frac_bits == w.type.frac_bits
    assert np.array_equal(wd.raw, rows)
    # each part's accumulator holds its rows' sums: never wider than the layer's
    for part in (dsp, kh):
        assert part.attrs["acc_type"].width <= g.nodes[[n.name for n in g.nodes].index("fc1/Gemm")].attrs[
            "acc_type"].width


def test_merge_rows_op():
    op = get("merge_rows")
    n = Node("m", "merge_rows", ["a", "b"], ["y"], {"parts": (1, 0, 0, 1, 0)})
    assert op.shape(n, [(3, 2, 2), (2, 2, 2)]) == (5, 2, 2)
    a = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    bb = -np.arange(1, 2 * 2 * 2 * 2 + 1).reshape(2, 2, 2, 2)
    y = op.run(n, [(a, HID), (bb, HID)])
    want = np.stack([bb[:, 0], a[:, 0], a[:, 1], bb[:, 1], a[:, 2]], axis=1)
    assert np.array_equal(y, want)
    with pytest.raises(OpError, match="parts takes"):
        op.shape(n, [(2, 2, 2), (3, 2, 2)])
    with pytest.raises(OpError, match="one type"):
        op.type(n, [HID, OUT])
    with pytest.raises(OpError, match="parts must be"):
        op.shape(Node("m", "merge_rows", ["a", "b"], ["y"], {"parts": (0, 2)}), [(1,), (1,)])


# ------------------------------------------------------------------ malformed k_hot: the frontend's errors
def _one_layer(path, ks, digits="csd", w=None):
    rng = np.random.default_rng(5)
    b = Builder((6,), IN_VEC)
    w = weight_rows(rng, 4, 6, [max(k, 0) for k in ks][:4] + [0] * (4 - len(ks)), digits) if w is None else w
    b.weighted("Gemm", "fc", w, None, OUT, False, ks, digits, transB=1)
    return b.save(path, None, None)


@pytest.mark.parametrize("ks,match", [
    ([2, -1, 0, 2], r"k_hot must be one K or one per output channel \(4\), each in 0\.\.8"),
    ([2, 0, 2], r"k_hot must be one K or one per output channel \(4\)"),
    ([2, 0, 2, 0, 1], r"k_hot must be one K or one per output channel \(4\)"),
    ([2, 0, 9, 0], r"each in 0\.\.8"),
])
def test_malformed_k_hot(tmp_path, ks, match):
    p = _one_layer(tmp_path / "bad.onnx", ks, w=np.ones((4, 6), dtype=np.int64))
    with pytest.raises(ModelError, match=match) as e:
        load_model(str(p))
    assert str(p) in str(e.value) and "fc.weight/FixedPoint" in str(e.value)
    assert main([str(p), "-o", str(tmp_path / "out"), "-q"]) == 2


def test_row_not_khot_as_claimed(tmp_path):
    """A row with K > 0 that holds a mantissa with more digits: named by its channel (rows with K = 0 are free)."""
    rng = np.random.default_rng(6)
    w = weight_rows(rng, 4, 6, [0, 2, 0, 1], "csd")
    w[3, 4] = 3  # 2 CSD digits in a 1-hot row
    p = _one_layer(tmp_path / "bad.onnx", [0, 2, 0, 1], w=w)
    with pytest.raises(ModelError, match=r"not \[0, 2, 0, 1\]-hot \(csd\) as k_hot says \(channel 3 has a mantissa "
                                         r"with 2 nonzero digits\)"):
        load_model(str(p))
    w = weight_rows(rng, 4, 6, [0, 2, 0, 2], "sp2")
    w[1, 0] = 7  # CSD 2-hot (8 - 1), not SP2
    with pytest.raises(ModelError, match=r"channel 1 has a mantissa"):
        load_model(str(_one_layer(tmp_path / "bad2.onnx", [0, 2, 0, 2], "sp2", w=w)))
    with pytest.raises(ModelError, match=r"digits 'sp2' must be 1 or 2"):
        load_model(str(_one_layer(tmp_path / "bad3.onnx", [0, 3, 0, 2], "sp2", w=np.ones((4, 6), np.int64))))
    with pytest.raises(ModelError, match=r"k_hot needs digits"):
        load_model(str(_one_layer(tmp_path / "bad4.onnx", [0, 2, 0, 2], None, w=np.ones((4, 6), np.int64))))


def test_grouped_conv_with_mixed_rows_refused(tmp_path):
    p = cnn_model(tmp_path / "g.onnx", groups=3)
    g = run_default_passes(load_model(str(p)))  # the IR runs it
    assert next(n for n in g.nodes if n.op == "conv2d").params["weight"].mixed_rows()
    with pytest.raises(BackendError, match=r"grouped convolution \(groups=3\) with mixed rows .* make every row "):
        compile_graph(g, tmp_path / "p", vectors=2)
    assert main([str(p), "-o", str(tmp_path / "out"), "-q"]) == 2


def test_config_on_a_split_layer_names_its_parts(files, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"layers": {"fc1/Gemm": {"reuse": 4}}}))
    g = run_default_passes(load_model(str(files["mlp"])))
    with pytest.raises(BackendError, match=r"'fc1/Gemm' has mixed rows .* 'fc1/Gemm/dsp_rows' .* "
                                           r"'fc1/Gemm/khot_rows'"):
        compile_graph(g, tmp_path / "p", vectors=2, config=str(cfg))


# ------------------------------------------------------------------ make csim (one make -j for every project)
@pytest.fixture(scope="module")
def projects(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "mixed projects"
    root.mkdir()
    cfg = root / "table.json"
    # the K-hot core of conv1 as the folded table kernel, its multiplier core at reuse 9
    cfg.write_text(json.dumps({"layers": {"conv1/Conv/khot_rows": {"shiftadd": 1, "reuse": 27},
                                          "conv1/Conv/dsp_rows": {"reuse": 9}}}))
    runs = {"mlp": [str(files["mlp"])], "cnn": [str(files["cnn"])],
            "cnn_table": [str(files["cnn"]), "--config", str(cfg)],
            "cnn_explore": [str(files["cnn"]), "--explore", "--budget", "dsp=0.02,lut=0.05"]}
    outs = {}
    for name, argv in runs.items():
        out = root / f"{name} hls"
        assert main(argv + ["--target", "ultra96", "-o", str(out), "-q"]) == 0, name
        outs[name] = out
    build_testbenches(outs.values(), root, precompiled_header(tmp_path_factory.mktemp("pch")), JOBS)
    return {name: (out, csim.run(out)) for name, out in outs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn_table", "cnn_explore"])
def test_csim_bit_exact(projects, name):
    out, r = projects[name]
    assert r.ok, r.output[-3000:]
    n = 40 if name == "mlp" else 24
    assert (r.passed, r.failed) == (n, 0)
    rep = json.loads((out / "report.json").read_text())
    assert rep["vectors"]["source"].startswith("expected outputs stored in the model")


def _layers(out):
    return {L["name"]: L for L in json.loads((out / "report.json").read_text())["layers"]}


def _code_adders(out, lid):
    """Additions and negations written in a straight-line shift-add header (one per adder)."""
    text = (out / "firmware" / "shiftadd" / f"{lid}.h").read_text()
    code = [line.split("//")[0] for line in text.splitlines() if line.strip().startswith("const ap_")]
    return sum(line.count(" + ") + line.count(" - ") for line in code) + sum(1 for line in code if "= -" in line)


@pytest.mark.slow
def test_report_counts_each_core(projects, files):
    """The multiplier core counts DSPs for the fixed-point rows only, the shift-add core the adders of the
    K-hot rows (the additions in its code) and no DSP; the merge neither."""
    out, _ = projects["mlp"]
    L = _layers(out)
    params = (out / "firmware" / "parameters.h").read_text()
    for name, n_out, ks, _, _, _ in MLP:
        n_in = 12 if name == "fc1" else MLP[[m[0] for m in MLP].index(name) - 1][1]
        n_k = sum(k > 0 for k in ks)
        if 0 < n_k < n_out:
            d, k, m = (L[f"{name}/Gemm/{p}"] for p in ("dsp_rows", "khot_rows", "merge_rows"))
            assert d["macs"] == (n_out - n_k) * n_in and d["multipliers"] == -(-d["macs"] // d["reuse"])
            assert d["dsp_estimate"] == d["multipliers"] > 0 and d["adder_estimate"] == 0
            assert k["dsp_estimate"] == 0 and k["multipliers"] == 0 and k["macs"] == n_k * n_in
            assert k["shift_add"]["form"] == "straight-line" and k["adder_estimate"] == _code_adders(out, k["id"])
            assert m["dsp_estimate"] == m["adder_estimate"] == 0 and m["kernel"] == "qfx::merge_rows"
            assert m["output_shape"] == [n_out]
            assert f"static const unsigned n_out = {n_out - n_k};" in params
            # the K-hot core reads the K-hot rows' terms only: CSD digits of their mantissas
            w = next(n for n in load_model(str(files["mlp"])).nodes if n.name == f"{name}/Gemm").params["weight"]
            assert k["shift_add"]["terms"] == sum(csd_digits(v) for j in np.flatnonzero(np.array(ks) > 0)
                                                  for v in w.raw[j])
        elif n_k == 0:
            assert L[f"{name}/Gemm"]["dsp_estimate"] > 0 and L[f"{name}/Gemm"]["shift_add"] is None
        else:
            assert L[f"{name}/Gemm"]["dsp_estimate"] == 0 and L[f"{name}/Gemm"]["adder_estimate"] > 0
    tot = json.loads((out / "report.json").read_text())["totals"]
    assert tot["dsp_estimate"] == sum(v["dsp_estimate"] for v in L.values())
    top = (out / "firmware" / "qfx_top.cpp").read_text()
    # the three split layers: each input forked to its two cores, which run side by side under DATAFLOW
    assert top.count("qfx::fanout2<") == 3 and "QFX_PRAGMA(HLS DATAFLOW)" in top
    assert all(f"// layer: fc1/Gemm/{p} " in top for p in ("dsp_rows", "khot_rows", "merge_rows"))


@pytest.mark.slow
def test_table_and_explore_designs(projects):
    out, _ = projects["cnn_table"]
    L = _layers(out)
    assert L["conv1/Conv/khot_rows"]["shift_add"]["form"] == "table kernel"
    assert L["conv1/Conv/khot_rows"]["reuse"] == 27 and L["conv1/Conv/dsp_rows"]["reuse"] == 9
    assert "qfx::conv2d_shiftadd<" in "".join(p.read_text() for p in (out / "firmware" / "layers").glob("*.cpp"))
    out, _ = projects["cnn_explore"]
    ex = json.loads((out / "explore.json").read_text())
    rep = json.loads((out / "report.json").read_text())
    assert ex["chosen"]["dsp"] == rep["totals"]["dsp_estimate"] <= ex["budget"]["dsp"]
    by_name = _layers(out)
    for L in ex["layers"]:  # the compiled design is the searched one, core by core
        for k in ("reuse", "mul_impl"):
            if k in L["options"]:
                assert by_name[L["name"]][k] == L["options"][k], (L["name"], k)
    forms = {L["name"]: L["form"] for L in ex["layers"]}
    assert forms["conv1/Conv/dsp_rows"] in ("dsp", "lut") and forms["conv1/Conv/khot_rows"] in ("straight", "table")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_rtl_of_the_khot_rows(projects):
    """rtl/: one Verilog adder graph per layer with K-hot rows, with one output per K-hot row (a mixed layer's
    fixed-point rows are the multiplier core's); make rtl-sim passes on every vector."""
    out, _ = projects["mlp"]
    mods = sorted((out / "rtl").glob("sa_*.v"))
    khot = [(name, sum(k > 0 for k in ks)) for name, _, ks, _, _, _ in MLP if any(ks)]
    assert len(mods) == len(khot)
    for m, (name, n_k) in zip(mods, khot):
        assert name in m.name
        text = m.read_text()
        assert sum(1 for ln in text.splitlines() if ln.strip().startswith("output")) == n_k, m.name
    r = subprocess.run(["make", "rtl-sim"], cwd=out, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" passed, 0 failed") == len(khot), r.stdout


def test_size_prechecks_count_the_fixed_point_rows(tmp_path):
    """The size checks before the frontend (from the file) and before the passes (from the graph) leave out the
    K-hot rows (adders) but count the fixed-point rows (memory): a huge weight cannot pass as 'K-hot'."""
    from qfx_compile.backend.project import precheck_size
    from qfx_compile.frontend.untrusted import weight_arrays
    from qfx_compile.ir.graph import Const, Graph, Tensor
    from qfx_compile.targets import TargetError

    p = _one_layer(tmp_path / "m.onnx", [0, 2, 0, 0], w=np.ones((4, 6), np.int64))
    got = {a[1].split("_")[0]: a for a in weight_arrays(str(p))}
    assert got["fc.weight"][2:] == (8, 3 * 6)  # 3 fixed-point rows of 6 weights of 8 bits
    big = np.ones((400, 4096), dtype=np.int64)  # 399 fixed-point rows: 13 Mbit, more BRAM than pynq-z2 has
    k = np.zeros(400, dtype=np.int64)
    k[7] = 1
    g = Graph("big", ["x"], ["y"], [Node("fc", "dense", ["x"], ["y"], {"out_type": OUT},
                                         {"weight": Const(big, W8, k_hot=k, digits="csd")})],
              {"x": Tensor("x", (4096,), IN_VEC), "y": Tensor("y")})
    with pytest.raises(TargetError, match="do not fit pynq-z2"):
        precheck_size(g, "pynq-z2")
    k[:] = 1  # every row K-hot: adders, no weight memory
    precheck_size(g, "pynq-z2")
