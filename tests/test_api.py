"""``qfx_compile.load(...).predict``: the exact model in Python, its fast paths held equal to the IR interpreter.

References are independent of the code under test: the integer interpreter
(``ir.interpret``, every cast through ``requantize_raw``, which equals the
Xilinx headers), the PyTorch eval outputs stored in the file, and the C
simulation of the generated project.
"""
import itertools
import subprocess
from pathlib import Path

import numpy as np
import pytest

import qfx_compile
from qfx_compile import api
from qfx_compile.backend import csim
from qfx_compile.backend.project import compile_graph
from qfx_compile.fixed.cast import float_to_raw, requantize_raw
from qfx_compile.fixed.types import OVERFLOW_MODES, ROUNDING_MODES, FixedType as F
from qfx_compile.frontend import ModelError
from qfx_compile.ir import interpret
from qfx_compile.ir.graph import Const, Graph, Node, Tensor
from qfx_compile.ir.passes import run_default_passes

MODES = list(itertools.product(ROUNDING_MODES, OVERFLOW_MODES))


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model

    d = tmp_path_factory.mktemp("api_zoo")
    return {n: export_zoo_model(n, d, vectors=60) for n in ("mlp", "cnn", "resnet", "per_channel", "all_modes")}


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet", "per_channel", "all_modes"])
def test_zoo_predict_equals_pytorch_and_interpreter(zoo_files, name):
    m = qfx_compile.load(zoo_files[name])
    v = m.graph.vectors
    got = m.predict_raw(v.input_raw)
    assert np.array_equal(got, v.output_raw.reshape(got.shape))  # PyTorch eval outputs stored by export
    x = np.random.default_rng(3).normal(size=(200,) + m.input_shape) * 3
    want = interpret.to_float64(interpret.run(m.graph, x_float=x), m.output_type)
    y = m.predict(x)
    assert y.dtype == np.float64 and np.array_equal(y, want)
    assert m.input_type == interpret.input_type(m.graph) and m.output_type == interpret.output_type(m.graph)


def test_predict_equals_c_simulation(zoo_files, tmp_path):
    """The testbench of a generated project, fed predict_raw's outputs as its expected file: 0 mismatches."""
    m = qfx_compile.load(zoo_files["cnn"])
    out = tmp_path / "cnn_hls"
    res = compile_graph(m.graph, out, target="ultra96", vectors=10)
    rng = np.random.default_rng(11)
    t = m.input_type
    x_raw = rng.integers(t.raw_min, t.raw_max + 1, size=(300,) + m.input_shape)
    y_raw = m.predict_raw(x_raw)
    # stream (HWC) order, as the testbench files are written
    hwc = x_raw.transpose(0, 2, 3, 1).reshape(len(x_raw), -1)
    (out / "tb_data" / "api_in.txt").write_text("\n".join(" ".join(map(str, r)) for r in hwc) + "\n")
    (out / "tb_data" / "api_exp.txt").write_text("\n".join(" ".join(map(str, r)) for r in y_raw.reshape(300, -1)) + "\n")
    b = csim.build(res.outdir)
    r = csim.run(res.outdir, expected_vectors=300, inputs="tb_data/api_in.txt", expected="tb_data/api_exp.txt",
                 build_s=b)
    assert r.ok, r.output[-2000:]
    # and the check can fail: one wrong expected value is reported
    bad = y_raw.reshape(300, -1).copy()
    bad[7, 3] += 1
    (out / "tb_data" / "api_bad.txt").write_text("\n".join(" ".join(map(str, r)) for r in bad) + "\n")
    r = csim.run(res.outdir, expected_vectors=300, inputs="tb_data/api_in.txt", expected="tb_data/api_bad.txt")
    assert not r.ok and r.failed == 1


# ------------------------------------------------------------------ the fast cast
@pytest.mark.parametrize("rnd,ovf", MODES)
def test_fast_cast_equals_requantize_raw(rnd, ovf):
    rng = np.random.default_rng(abs(hash((rnd, ovf))) % 2**32)
    for signed in (True, False):
        for w, s in [(1, 0), (1, 3), (5, 1), (8, 4), (8, -3), (16, 9), (30, 20), (53, 8), (61, 1)]:
            t = F(w, w - 2, signed, rnd, ovf)
            src = t.frac_bits + s
            bound = (1 << min(60, w + abs(s) + 3)) - 1
            if s < 0:
                bound >>= -s
            m = rng.integers(-bound, bound + 1, size=3000, dtype=np.int64)
            if s > 0:  # ties, one below and one above, around every kept value
                k = rng.integers(-(bound >> s), (bound >> s) + 1, size=500) << s
                m = np.concatenate([m, k + (1 << (s - 1)), k + (1 << (s - 1)) - 1, k + (1 << (s - 1)) + 1, k])
            m = np.concatenate([m, [0, 1, -1, bound, -bound]])
            c = api._Cast(src, t, bound)
            assert c.ok
            assert np.array_equal(c(m), requantize_raw(m, src, t)), (t, s)


@pytest.mark.parametrize("rnd,ovf", MODES)
def test_fast_float_input_cast_equals_float_to_raw(rnd, ovf):
    rng = np.random.default_rng(5)
    for t in (F(8, 3, True, rnd, ovf), F(6, 6, False, rnd, ovf), F(12, -2, True, rnd, ovf), F(4, 9, True, rnd, ovf)):
        lsb = 2.0 ** -t.frac_bits
        x = np.concatenate([rng.normal(size=2000) * 2.0 ** t.int_bits, (rng.integers(-600, 600, 800) + 0.5) * lsb,
                            rng.integers(-600, 600, 200) * lsb, [0.0, -0.0, 1e-300, -1e-300, 1e30, -1e30]])
        for dt in (np.float32, np.float64):
            xx = x.astype(dt)
            assert np.array_equal(api._float_to_raw(xx, t), float_to_raw(xx, t)), (t, dt)


# ------------------------------------------------------------ random models
def _rand_type(rng, rnd, ovf, wmax=12, signed=None):
    w = int(rng.integers(2, wmax + 1))
    return F(w, int(rng.integers(-2, w + 3)), bool(rng.integers(0, 2)) if signed is None else signed, rnd, ovf)


def _rand_const(rng, shape, t, per_channel=False):
    raw = rng.integers(t.raw_min, t.raw_max + 1, size=shape)
    ib = rng.integers(t.int_bits - 3, t.int_bits + 3, size=shape[0]) if per_channel else None
    return Const(raw=raw, type=t, int_bits=ib)


def random_graph(seed: int, rnd: str, ovf: str) -> Graph:
    """conv -> bn -> relu -> maxpool -> conv -> quant -> flatten -> dense, random types in the given modes."""
    rng = np.random.default_rng(seed)
    c0, c1, c2 = (int(v) for v in rng.integers(1, 5, size=3))
    k = int(rng.integers(1, 4))
    pad = int(rng.integers(0, 2))
    h = 9
    nodes = [
        Node("q", "quant", ["x"], ["t0"], attrs={"out_type": _rand_type(rng, rnd, ovf)}),
        Node("conv1", "conv2d", ["t0"], ["t1"], attrs={"out_type": _rand_type(rng, rnd, ovf, 16), "kernel": (k, k),
                                                       "stride": (1, int(rng.integers(1, 3))), "pads": (pad,) * 4},
             params={"weight": _rand_const(rng, (c1, c0, k, k), _rand_type(rng, "AP_TRN", "AP_WRAP", 10, True),
                                           bool(rng.integers(0, 2))),
                     "bias": _rand_const(rng, (c1,), _rand_type(rng, "AP_TRN", "AP_WRAP", 14, True))}),
        Node("bn", "batchnorm", ["t1"], ["t2"], attrs={"out_type": _rand_type(rng, rnd, ovf)},
             params={"scale": _rand_const(rng, (c1,), _rand_type(rng, "AP_TRN", "AP_WRAP", 10, True)),
                     "shift": _rand_const(rng, (c1,), _rand_type(rng, "AP_TRN", "AP_WRAP", 10, True))}),
        Node("relu", "relu", ["t2"], ["t3"]),
        Node("pool", "maxpool", ["t3"], ["t4"], attrs={"kernel": (2, 2), "stride": (2, 2)}),
        Node("conv2", "conv2d", ["t4"], ["t5"], attrs={"out_type": _rand_type(rng, rnd, ovf, 20), "kernel": (1, 1),
                                                       "stride": (1, 1), "pads": (0, 0, 0, 0)},
             params={"weight": _rand_const(rng, (c2, c1, 1, 1), _rand_type(rng, "AP_TRN", "AP_WRAP", 24, True))}),
        Node("q2", "quant", ["t5"], ["t6"], attrs={"out_type": _rand_type(rng, rnd, ovf)}),
        Node("flat", "flatten", ["t6"], ["t7"]),
    ]
    t = {"x": Tensor("x", (c0, h, h))}
    t.update({f"t{i}": Tensor(f"t{i}") for i in range(9)})
    g = run_default_passes(Graph("rand", ["x"], ["t7"], nodes, t))
    n_flat = g.tensors["t7"].shape[0]
    g.nodes.append(Node("fc", "dense", ["t7"], ["t8"], attrs={"out_type": _rand_type(rng, rnd, ovf, 30)},
                        params={"weight": _rand_const(rng, (5, n_flat), _rand_type(rng, "AP_TRN", "AP_WRAP", 40, True)),
                                "bias": _rand_const(rng, (5,), _rand_type(rng, "AP_TRN", "AP_WRAP", 12, True))}))
    g.outputs = ["t8"]
    return run_default_passes(g)


@pytest.mark.parametrize("rnd,ovf", MODES)
def test_random_models_equal_interpreter(rnd, ovf):
    """Every rounding x overflow mode, 3 random models each: fast paths (float32/float64/int GEMM) == interpreter."""
    for seed in range(3):
        g = random_graph(hash((rnd, ovf, seed)) % 2**31, rnd, ovf)
        m = api.ExactModel(g)
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(40,) + m.input_shape) * 2.0 ** rng.integers(-2, 5)
        want = interpret.run(g, x_float=x)
        got = m.predict_raw(api._float_to_raw(x, m.input_type))
        assert np.array_equal(np.asarray(got, dtype=object), np.asarray(want, dtype=object)), seed


def residual_graph(seed: int, rnd: str, ovf: str) -> Graph:
    """quant -> conv 3x3 (padded) -> relu -> conv 1x1 -> add(relu, conv) -> bn -> maxpool -> flatten -> dense:
    the float-form layout (channel-major maps) through every planned op, random types in the given modes."""
    rng = np.random.default_rng(seed)
    c0, c1 = (int(v) for v in rng.integers(1, 5, size=2))
    wt = lambda w: _rand_type(rng, "AP_TRN", "AP_WRAP", w, True)  # noqa: E731
    nodes = [
        Node("q", "quant", ["x"], ["t0"], attrs={"out_type": _rand_type(rng, rnd, ovf)}),
        Node("conv1", "conv2d", ["t0"], ["t1"], attrs={"out_type": _rand_type(rng, rnd, ovf, 16), "kernel": (3, 3),
                                                       "stride": (1, 1), "pads": (1, 1, 1, 1)},
             params={"weight": _rand_const(rng, (c1, c0, 3, 3), wt(10), bool(rng.integers(0, 2)))}),
        Node("relu", "relu", ["t1"], ["t2"]),
        Node("conv2", "conv2d", ["t2"], ["t3"], attrs={"out_type": _rand_type(rng, rnd, ovf, 16), "kernel": (1, 1),
                                                       "stride": (1, 1), "pads": (0, 0, 0, 0)},
             params={"weight": _rand_const(rng, (c1, c1, 1, 1), wt(8)), "bias": _rand_const(rng, (c1,), wt(12))}),
        Node("add", "add", ["t2", "t3"], ["t4"], attrs={"out_type": _rand_type(rng, rnd, ovf)}),
        Node("bn", "batchnorm", ["t4"], ["t5"], attrs={"out_type": _rand_type(rng, rnd, ovf)},
             params={"scale": _rand_const(rng, (c1,), wt(10)), "shift": _rand_const(rng, (c1,), wt(10))}),
        Node("pool", "maxpool", ["t5"], ["t6"], attrs={"kernel": (2, 2), "stride": (2, 2)}),
        Node("flat", "flatten", ["t6"], ["t7"]),
    ]
    t = {"x": Tensor("x", (c0, 6, 6))}
    t.update({f"t{i}": Tensor(f"t{i}") for i in range(9)})
    g = run_default_passes(Graph("res", ["x"], ["t7"], nodes, t))
    g.nodes.append(Node("fc", "dense", ["t7"], ["t8"], attrs={"out_type": _rand_type(rng, rnd, ovf, 24)},
                        params={"weight": _rand_const(rng, (3, g.tensors["t7"].shape[0]), wt(12))}))
    g.outputs = ["t8"]
    return run_default_passes(g)


@pytest.mark.parametrize("rnd,ovf", MODES)
def test_residual_models_in_chunks_equal_interpreter(rnd, ovf):
    """Residual adds, 1x1 and padded convs, in several chunks of the batch (run in parallel): == interpreter."""
    for seed in range(3):
        g = residual_graph(1000 * seed + MODES.index((rnd, ovf)), rnd, ovf)
        m = api.ExactModel(g)
        m._chunk = 7
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(30,) + m.input_shape) * 2.0 ** rng.integers(-2, 5)
        want = interpret.run(g, x_float=x)
        got = m.predict_raw(api._float_to_raw(x, m.input_type))
        assert np.array_equal(np.asarray(got, dtype=object), np.asarray(want, dtype=object)), seed


def test_float_dtype_bounds():
    """float32 up to |k| < 2**23 and s <= 23, float64 up to 2**52, never beyond; W counts too."""
    t = F(8, 3, True, "AP_RND", "AP_SAT")
    assert api._float_dtype(2**23 - 1, 0, t) == np.float32
    assert api._float_dtype(2**23, 0, t) == np.float64
    assert api._float_dtype(2**22 - 1, -1, t) == np.float32 and api._float_dtype(2**22, -1, t) == np.float64
    assert api._float_dtype(5, 23, t) == np.float32 and api._float_dtype(5, 24, t) == np.float64
    assert api._float_dtype(5, 0, F(23, 3)) == np.float32 and api._float_dtype(5, 0, F(24, 3)) == np.float64
    assert api._float_dtype(2**52 - 1, 0, t) == np.float64 and api._float_dtype(2**52, 0, t) is None
    assert api._float_dtype(5, 200, t) is None  # 2**-200 is subnormal in float32: not planned


@pytest.mark.parametrize("rnd,ovf", MODES)
def test_cast_at_the_float32_bound_is_exact(rnd, ovf):
    """A dense layer whose sums reach the largest float32 bound (2**23 - 2048) and one whose bound is 2**23
    (must fall back to float64), with ties, both neighbours of a tie, the extremes and overflow on both
    sides: == requantize_raw of the exact integer sum."""
    t_in = F(12, 12, True)  # integer inputs -2048..2047
    for w, want_dt in (([2047, 2047, 1], np.float32), ([2048, 2047, 1], np.float64)):
        w = np.array([w])
        assert 2048 * w.sum() in (2**23 - 2048, 2**23)
        for s in (0, 3, 12):
            t_out = F(22 - s, 22, True, rnd, ovf)  # drops s bits; range below the bound: overflows
            node = Node("d", "dense", [], [], attrs={"out_type": t_out}, params={"weight": Const(w, F(13, 13))})
            lin = api._Linear(node, t_in)
            assert lin.dt == want_dt
            rng = np.random.default_rng(s)
            x = np.concatenate([rng.integers(-2048, 2048, size=(3000, 3)), [[-2048] * 3, [2047] * 3]])
            if s:  # sums on a tie and its neighbours, all over the range
                k = rng.integers(-2**(23 - s), 2**(23 - s), size=1000) << s
                tgt = np.concatenate([k + (1 << (s - 1)) + d for d in (-1, 0, 1)])
                x0 = np.clip(tgt // w[0, 0], -2048, 2047)
                x1 = np.clip((tgt - x0 * w[0, 0]) // w[0, 1], -2048, 2047)
                x2 = tgt - x0 * w[0, 0] - x1 * w[0, 1]
                ok = (x2 >= -2048) & (x2 <= 2047)
                assert ok.sum() > 1000
                x = np.concatenate([x, np.stack([x0, x1, x2], 1)[ok]])
            exact = x @ w.T
            assert np.abs(exact).max() == 2048 * w.sum()  # the bound is reached
            got = api._as_int(lin(node, x))
            assert np.array_equal(got, requantize_raw(exact, 0, t_out)), (w, s)


def test_fast_paths_are_taken_and_wide_ones_fall_back():
    """The plans use float32 for small bounds, float64 for medium, and decline beyond 2**53 (exact ints)."""
    t = F(8, 3, True)
    small = api._Linear(Node("a", "dense", [], [], attrs={"out_type": t},
                             params={"weight": Const(np.full((3, 4), 127), F(8, 1))}), t)
    assert small.fast and small.dt == np.float32  # 128 * 4 * 127 < 2**24
    mid = api._Linear(Node("b", "dense", [], [], attrs={"out_type": t},
                           params={"weight": Const(np.full((3, 4), 2**20), F(24, 1))}), t)
    assert mid.fast and mid.dt == np.float64
    wide = api._Linear(Node("c", "dense", [], [], attrs={"out_type": t},
                            params={"weight": Const(np.full((3, 4), 2**50), F(52, 1))}), t)
    assert not wide.fast  # 2**7 * 4 * 2**50 = 2**59 >= 2**53: the interpreter's int64 path
    # a partial sum of exactly 2**24 would round in float32 (2**24 + 1 is not a float32): never planned so
    x = np.full((1, 4), 2**12, dtype=np.int64)
    edge = api._Linear(Node("d", "dense", [], [], attrs={"out_type": F(40, 40)},
                            params={"weight": Const(np.array([[2**10, 2**10, 2**10, 1]]), F(12, 12))}),
                       F(14, 14))
    assert edge.dt == np.float64
    assert api._as_int(edge(None, x))[0, 0] == 3 * 2**22 + 2**12


def test_wide_output_raises_when_not_exact_in_float64():
    t_in = F(8, 8)
    g = Graph("wide", ["x"], ["y"], [
        Node("q", "quant", ["x"], ["x0"], attrs={"out_type": t_in}),
        Node("fc", "dense", ["x0"], ["y"], attrs={"out_type": F(70, 70)},
             params={"weight": Const(np.array([[2**60 + 1]], dtype=object), F(63, 63))})],
        {"x": Tensor("x", (1,)), "x0": Tensor("x0"), "y": Tensor("y")})
    m = api.ExactModel(run_default_passes(g))
    assert m.predict(np.array([[0.0]]))[0, 0] == 0.0
    with pytest.raises(ValueError, match="not exact in float64"):
        m.predict(np.array([[3.0]]))
    assert m.predict_raw(np.array([[3]]))[0, 0] == 3 * (2**60 + 1)


def test_load_errors(tmp_path, zoo_files):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not an ONNX model"):
        qfx_compile.load(bad)
    with pytest.raises(ValueError, match="malformed fixed-point type"):
        qfx_compile.load(zoo_files["mlp"], input_type="ap_fixed<16>")
    m = qfx_compile.load(zoo_files["mlp"])
    with pytest.raises(ValueError, match="expected"):
        m.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="outside"):
        m.predict_raw(np.full((1,) + m.input_shape, 10**6))


def test_input_type_is_forwarded_or_refused(zoo_files):
    import inspect

    from qfx_compile.frontend import load_model

    if "input_type" in inspect.signature(load_model).parameters:
        m = qfx_compile.load(zoo_files["mlp"], input_type="ap_fixed<16,6>")
        assert isinstance(m, api.ExactModel)
    else:
        with pytest.raises(ValueError, match="input_type is not supported"):
            qfx_compile.load(zoo_files["mlp"], input_type="ap_fixed<16,6>")
