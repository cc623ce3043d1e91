"""The qfx ONNX function bodies, run by onnxruntime, equal the reference casts exactly."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from qfx_compile.qfx import OVERFLOW_MODES, ROUNDING_MODES, FixedType, quantize
from qfx_compile.qfx import onnx_ops as ops

pytestmark = pytest.mark.xdist_group("export")


def _session(nodes, functions, inputs, outputs):
    g = helper.make_graph(nodes, "t", inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", ops.OPSET),
                                            helper.make_opsetid(ops.DOMAIN, ops.DOMAIN_VERSION)],
                          functions=functions, ir_version=10)
    onnx.checker.check_model(m, full_check=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _fp_session(width, signed, rounding, overflow, x_rank=1, ib_shape=()):
    f = ops.fixed_point_function(width, signed, rounding, overflow)
    node = helper.make_node("FixedPoint", ["x", "ib"], ["y"], domain=ops.DOMAIN, width=width,
                            signed=int(signed), rounding=rounding, overflow=overflow)
    node.overload = f.overload
    dims = [f"d{i}" for i in range(x_rank)]
    return _session([node], [f],
                    [helper.make_tensor_value_info("x", TensorProto.DOUBLE, dims),
                     helper.make_tensor_value_info("ib", TensorProto.INT64, list(ib_shape))],
                    [helper.make_tensor_value_info("y", TensorProto.DOUBLE, dims)])


def _inputs(t: FixedType, rng) -> np.ndarray:
    """Grid points of half and quarter lsb (ties), around and beyond the range, edge values."""
    lsb = 2.0 ** -t.frac_bits
    e = min(t.width + 2, 55)
    k = rng.integers(-(2 ** e), 2 ** e, size=120).astype(np.float64)
    near = np.arange(-6, 7, dtype=np.float64)
    edges = np.concatenate([(t.raw_min + near / 2) * lsb, (t.raw_max + near / 2) * lsb,
                            (-t.raw_max + near / 2) * lsb, near / 4 * lsb, (2 ** t.width + near / 2) * lsb,
                            (-(2 ** t.width) + near / 2) * lsb])
    return np.concatenate([k * lsb / 2, k * lsb / 4, rng.normal(size=40) * max(abs(t.max), lsb) * 3, edges,
                           [0.0, -0.0, 1e-300, -1e-300, 5e-324, -5e-324, 1e300, -1e300]])


COUNT = {"n": 0}


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
@pytest.mark.parametrize("overflow", OVERFLOW_MODES)
@pytest.mark.parametrize("signed", [True, False])
def test_fixed_point_scalar(rounding, overflow, signed):
    rng = np.random.default_rng(hash((rounding, overflow, signed)) % 2**32)
    for width in (1, 2, 5, 8, 17, 24, 32, 52, 53):
        sess = _fp_session(width, signed, rounding, overflow)
        for int_bits in (-4, 0, 1, 3, width, width + 6):
            t = FixedType(width, int_bits, signed, rounding, overflow)
            x = _inputs(t, rng)
            y = sess.run(None, {"x": x, "ib": np.array(int_bits, np.int64)})[0]
            ref = quantize(torch.from_numpy(x), t).numpy()
            bad = np.nonzero(y != ref)[0]
            assert bad.size == 0, (t, x[bad[:5]], y[bad[:5]], ref[bad[:5]])
            COUNT["n"] += x.size


@pytest.mark.parametrize("rounding", ["AP_TRN", "AP_RND_CONV", "AP_RND_ZERO"])
@pytest.mark.parametrize("overflow", OVERFLOW_MODES)
def test_fixed_point_per_channel(rounding, overflow):
    rng = np.random.default_rng(7)
    for signed in (True, False):
        for width, ib_shape, axis in ((6, (4, 1, 1, 1), 0), (9, (4, 1), 0), (12, (4,), 0), (20, (4, 1, 1), 0)):
            ib = rng.integers(-3, width + 3, size=4)
            sess = _fp_session(width, signed, rounding, overflow, x_rank=len(ib_shape), ib_shape=ib_shape)
            shape = (4,) + tuple(rng.integers(2, 6, size=len(ib_shape) - 1))
            t = FixedType(width, 0, signed, rounding, overflow)
            lsb = np.exp2(-(width - ib)).reshape((4,) + (1,) * (len(shape) - 1))
            k = rng.integers(-(2 ** (width + 2)), 2 ** (width + 2), size=shape).astype(np.float64)
            for x in (k * lsb / 2, k * lsb / 4, rng.normal(size=shape) * 2.0 ** rng.integers(-4, 8)):
                y = sess.run(None, {"x": x, "ib": ib.reshape(ib_shape).astype(np.int64)})[0]
                ref = quantize(torch.from_numpy(x), t, int_bits=torch.from_numpy(ib), axis=axis).numpy()
                assert np.array_equal(y, ref), (width, ib, x[y != ref][:5], y[y != ref][:5], ref[y != ref][:5])
                COUNT["n"] += x.size


def test_fixed_point_extreme_binary_points():
    """Pow(2, k) is exact for every exponent a type may use; tiny and huge scales stay exact."""
    for overflow in ("AP_WRAP", "AP_SAT"):
        sess = _fp_session(8, True, "AP_RND", overflow)
        for int_bits in list(range(-900, -880)) + list(range(-20, 20)) + list(range(890, 910)):
            t = FixedType(8, int_bits, True, "AP_RND", overflow)
            lsb = 2.0 ** -t.frac_bits
            x = np.arange(-600, 601, dtype=np.float64) * lsb / 2
            y = sess.run(None, {"x": x, "ib": np.array(int_bits, np.int64)})[0]
            ref = quantize(torch.from_numpy(x), t).numpy()
            assert np.array_equal(y, ref), t
            COUNT["n"] += x.size


def test_fixed_point_width_limits():
    with pytest.raises(ValueError, match="53"):
        ops.fixed_point_function(54, True, "AP_TRN", "AP_WRAP")
    with pytest.raises(ValueError):
        ops.fixed_point_function(8, True, "AP_RND", "AP_WRAP_SM")
    assert ops.parse_fixed_point_overload("s8_AP_RND_MIN_INF_AP_SAT_ZERO") == (8, True, "AP_RND_MIN_INF",
                                                                               "AP_SAT_ZERO")
    assert ops.fixed_point_overload(53, False, "AP_TRN", "AP_WRAP") == "u53_AP_TRN_AP_WRAP"


# ------------------------------------------------------------- conv / pools
def _conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride, pads) -> np.ndarray:
    """Integer conv (object dtype: Python ints, no overflow possible)."""
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]), dtype=object)
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x.astype(object)
    oh = (xp.shape[2] - kh) // stride[0] + 1
    ow = (xp.shape[3] - kw) // stride[1] + 1
    out = np.zeros((n, oc, oh, ow), dtype=object)
    wo = w.astype(object)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
            out[:, :, i, j] = np.tensordot(win, wo, axes=([1, 2, 3], [1, 2, 3]))
    if b is not None:
        out = out + b.astype(object)[None, :, None, None]
    return out


@pytest.mark.parametrize("case", [
    dict(c=3, h=8, w=8, oc=4, k=(3, 3), s=(1, 1), p=(1, 1, 1, 1), bias=True),
    dict(c=2, h=7, w=9, oc=5, k=(3, 2), s=(2, 1), p=(0, 1, 2, 0), bias=False),
    dict(c=1, h=5, w=5, oc=2, k=(5, 5), s=(1, 1), p=(0, 0, 0, 0), bias=True),
    dict(c=4, h=6, w=6, oc=3, k=(1, 1), s=(2, 2), p=(0, 0, 0, 0), bias=True),
])
def test_conv_body_exact(case):
    rng = np.random.default_rng(3)
    c, h, w, oc, k = case["c"], case["h"], case["w"], case["oc"], case["k"]
    f = ops.conv_function("t0", (c, h, w), oc, k, case["s"], case["p"], has_bias=case["bias"])
    ins = ["x", "w", "b"] if case["bias"] else ["x", "w"]
    node = helper.make_node("Conv", ins, ["y"], domain=ops.DOMAIN, kernel_shape=list(k), strides=list(case["s"]),
                            pads=list(case["p"]), dilations=[1, 1], group=1)
    node.overload = "t0"
    vi = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["n", c, h, w]),
          helper.make_tensor_value_info("w", TensorProto.DOUBLE, [oc, c, k[0], k[1]])]
    if case["bias"]:
        vi.append(helper.make_tensor_value_info("b", TensorProto.DOUBLE, [oc]))
    sess = _session([node], [f], vi, [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", "c", "h", "w"])])
    # Large mantissas (products up to 2**44, sums below 2**53) on fractional grids: exactness, not luck.
    xm = rng.integers(-(2 ** 20), 2 ** 20, size=(6, c, h, w))
    wm = rng.integers(-(2 ** 20), 2 ** 20, size=(oc, c, k[0], k[1]))
    bm = rng.integers(-(2 ** 40), 2 ** 40, size=oc) if case["bias"] else None
    feeds = {"x": xm * 2.0 ** -13, "w": wm * 2.0 ** -7}
    if case["bias"]:
        feeds["b"] = bm * 2.0 ** -20
    y = sess.run(None, feeds)[0]
    ref = _conv_ref(xm, wm, bm, case["s"], case["p"])
    expect = np.vectorize(lambda v: float(Fraction(int(v)) * Fraction(2) ** -20))(ref).astype(np.float64)
    assert y.shape == expect.shape
    assert np.array_equal(y, expect)
    torch_y = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.from_numpy(feeds["x"]), (case["p"][1], case["p"][3], case["p"][0], case["p"][2])),
        torch.from_numpy(feeds["w"]), torch.from_numpy(feeds["b"]) if case["bias"] else None, case["s"])
    assert torch_y.shape == y.shape
    COUNT["n"] += y.size


def test_conv_rejects_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="group"):
        ops.conv_function("g", (4, 4, 4), 4, (3, 3), (1, 1), (1, 1, 1, 1), group=3)


def test_reciprocal():
    for n in range(1, 70):
        for r in (1, 4, 8, 16, 30):
            m, t = ops.avgpool_reciprocal(n, r)
            exact = Fraction(1, n) * 2 ** t.frac_bits
            assert 0 <= m <= t.raw_max
            if exact <= t.raw_max:
                assert abs(m - exact) <= Fraction(1, 2)
                if abs(m - exact) == Fraction(1, 2):
                    assert m % 2 == 0
            else:
                assert m == t.raw_max
    assert ops.avgpool_reciprocal_value(4, 16) == 0.25
    assert ops.avgpool_reciprocal_value(1, 16) == 1.0
    assert ops.avgpool_reciprocal_value(3, 4) == 0.3125  # ap_ufixed<4,0>: 5/16 (nearest to 1/3)
    assert ops.avgpool_reciprocal_value(1, 1) == 1.0


@pytest.mark.parametrize("kind,k,s,shape,recip", [
    ("avg", (2, 2), (2, 2), (3, 8, 8), 16), ("avg", (3, 3), (1, 2), (2, 7, 8), 12),
    ("avg", (3, 3), (3, 3), (1, 6, 6), 5), ("global", None, None, (4, 3, 5), 16),
    ("global", None, None, (2, 8, 8), 16), ("global", None, None, (3, 1, 1), 8)])
def test_pool_bodies_exact(kind, k, s, shape, recip):
    rng = np.random.default_rng(5)
    c, h, w = shape
    if kind == "avg":
        f = ops.avgpool_function("p0", shape, k, s, recip)
        node = helper.make_node("AveragePool", ["x"], ["y"], domain=ops.DOMAIN, kernel_shape=list(k),
                                strides=list(s), pads=[0, 0, 0, 0], recip_bits=recip)
        n = k[0] * k[1]
    else:
        f = ops.global_avgpool_function("p0", shape, recip)
        node = helper.make_node("GlobalAveragePool", ["x"], ["y"], domain=ops.DOMAIN, recip_bits=recip)
        k, s, n = (h, w), (1, 1), h * w
    node.overload = "p0"
    sess = _session([node], [f], [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["n", c, h, w])],
                    [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", "c", "h", "w"])])
    xm = rng.integers(-(2 ** 24), 2 ** 24, size=(5, c, h, w))
    y = sess.run(None, {"x": xm * 2.0 ** -10})[0]
    rm, rt = ops.avgpool_reciprocal(n, recip)
    r = Fraction(rm) * Fraction(2) ** -rt.frac_bits
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    expect = np.zeros((5, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xm[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].astype(object)
            sums = win.sum(axis=(2, 3))
            expect[:, :, i, j] = np.vectorize(lambda v: float(Fraction(int(v)) * Fraction(2) ** -10 * r))(sums)
    assert y.shape == expect.shape
    assert np.array_equal(y, expect)
    COUNT["n"] += y.size
