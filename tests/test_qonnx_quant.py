"""Every QONNX Quant mode (signed x narrow x rounding_mode, zero points, 1-bit bipolar), BipolarQuant and Trunc,
on a typed input and as the input boundary, against the QONNX executor, exactly (inputs where ties occur);
the exact step-function machinery against brute force; every blocker in one message."""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qfx_compile.frontend import ModelError, load_model
from qfx_compile.ir.exact_real import Q2, Quantizer, Steps, fit_mul_shift, step_function
from qfx_compile.ir.interpret import input_codes, run, to_float64

pytestmark = pytest.mark.xdist_group("qonnx")

QD = "qonnx.custom_op.general"
MODES = ("ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")
N = 256


def init(name, v, dt=np.float32):
    return numpy_helper.from_array(np.asarray(v, dtype=dt), name)


def quant_model(nodes, inits, shape=(N, 8), qonnx_opset=1):
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QD, qonnx_opset)])


def executor(m, x):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model
    mw = cleanup_model(ModelWrapper(m))
    return execute_onnx(mw, {mw.graph.input[0].name: x})[mw.graph.output[0].name]


def grid_inputs():
    """Every value of ap_fixed<8,3> (k/32), in a (256, 8) batch: x / 0.09375 = k/3 and x / 0.125 = k/4 hit ties
    and exact integers."""
    k = np.arange(-128, 128)
    return np.stack([np.roll(k, 7 * j) for j in range(8)], axis=1).astype(np.float32) / 32


@pytest.mark.parametrize("typed", [True, False])
@pytest.mark.parametrize("scale", [0.09375, 0.125])  # a float scale (exact reals); a power of two (ap_fixed casts)
def test_every_quant_mode_is_exact(tmp_path, typed, scale):
    x = grid_inputs()
    n_cases = 0
    for signed, narrow, mode, z, bits in itertools.product((0, 1), (0, 1), MODES, (0.0, 2.0), (1, 3)):
        if bits == 1 and (narrow or not signed or z):
            continue
        inits = [init("s", scale), init("z", z), init("b", bits)]
        node = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], domain=QD, name="q", signed=signed,
                                narrow=narrow, rounding_mode=mode)
        m = quant_model([node], inits)
        p = tmp_path / "q.onnx"
        onnx.save(m, p)
        g = load_model(p, input_type="ap_fixed<8,3>" if typed else None)
        ours = to_float64(run(g, x_float=x), g.tensors[g.outputs[0]].type)
        ref = executor(m, x)
        assert np.array_equal(ours.astype(np.float32), ref) and np.array_equal(ours, ref.astype(np.float64)), \
            (signed, narrow, mode, z, bits)
        lo, hi, step = input_codes(g)
        if not typed and bits > 1:  # the boundary's codes: exactly the quantizer's range
            qmin = -(1 << (bits - 1)) + narrow if signed else 0
            qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - narrow
            assert (lo, hi, step) == (qmin, qmax, 1)
        n_cases += 1
    assert n_cases == 2 * 2 * 7 * 2 + 7 * 1  # 3-bit: all; 1-bit signed wide z=0 (bipolar)


def test_bipolar_and_trunc_are_exact(tmp_path):
    x = grid_inputs()
    for kind in ("bipolar", "trunc1", "trunc2"):
        if kind == "bipolar":
            nodes = [helper.make_node("BipolarQuant", ["x", "s"], ["y"], domain=QD, name="bq")]
            inits = [init("s", 0.3)]
        elif kind == "trunc1":
            nodes = [helper.make_node("Trunc", ["x", "s", "z", "ib", "ob"], ["y"], domain=QD, name="t",
                                      rounding_mode="FLOOR")]
            inits = [init("s", 1 / 32), init("z", 0.0), init("ib", 8.0), init("ob", 5.0)]
        else:
            nodes = [helper.make_node("Trunc", ["x", "s", "z", "ib", "os", "ob"], ["y"], domain=QD, name="t",
                                      rounding_mode="ROUND", signed=1, narrow=0)]
            inits = [init("s", 1 / 32), init("z", 0.0), init("ib", 8.0), init("os", 0.25), init("ob", 4.0)]
        m = quant_model(nodes, inits, qonnx_opset=2 if kind == "trunc2" else 1)  # the executor's Trunc version
        p = tmp_path / f"{kind}.onnx"
        onnx.save(m, p)
        g = load_model(p, input_type="ap_fixed<8,3>")
        ours = to_float64(run(g, x_float=x), g.tensors[g.outputs[0]].type)
        assert np.array_equal(ours.astype(np.float32), executor(m, x)), kind


def _brute(fn, lo, hi):
    return np.array([fn(m) for m in range(lo, hi + 1)])


@pytest.mark.parametrize("slope,offset,scale,mode", [
    (Fraction(3, 7), Fraction(1, 5), Fraction(2, 3), "ROUND"), (Fraction(-5, 3), Fraction(0), Fraction(1, 2), "FLOOR"),
    (Fraction(0), Fraction(7, 3), Fraction(1), "HALF_UP"), (Fraction(11, 2), Fraction(-1, 4), Fraction(3), "CEIL")])
def test_step_function_and_mul_shift_equal_brute_force(slope, offset, scale, mode):
    """Thresholds (and, where found, floor(a*m + b) with saturation) equal the exact quantizer on every m."""
    q = Quantizer([scale], [Fraction(0)], -4, 3, mode)
    sq = Q2.sqrt(Fraction(2))  # an irrational factor too: slope * sqrt(2) / sqrt(2) keeps the rational case
    for A in (Q2(slope), Q2(slope) * sq):

        def fn(m, c):
            return q.code(A * Fraction(m) + offset, c)

        def fn_float(m, c):
            return q.code_float(np.asarray(m, dtype=np.float64) * float(A) + float(offset), c)

        lo, hi = -60, 60
        steps = step_function(fn, fn_float, 1, lo, hi)
        want = _brute(lambda m: fn(m, 0), lo, hi)
        ms = np.arange(lo, hi + 1)
        assert np.array_equal(steps.eval(ms, 0), want)
        fit = fit_mul_shift(steps, [A / scale], -4, 3)
        if fit is not None:
            sh, (M,), (B,) = fit
            got = np.clip([(M * m + B) >> sh for m in range(lo, hi + 1)], -4, 3)
            assert np.array_equal(got, want)
    assert isinstance(steps, Steps)


def test_all_blockers_in_one_message(tmp_path):
    nodes = [helper.make_node("Sin", ["x"], ["a"], name="first"), helper.make_node("Cos", ["a"], ["b"], name="dep"),
             helper.make_node("Tan", ["x"], ["c"], name="second"), helper.make_node("Add", ["b", "c"], ["y"])]
    p = tmp_path / "bad.onnx"
    onnx.save(quant_model(nodes, []), p)
    with pytest.raises(ModelError) as e:
        load_model(p)
    msg = str(e.value)
    assert msg.count(str(p)) == 1 and "'first' (Sin)" in msg and "'second' (Tan)" in msg
    assert "'dep'" not in msg  # a node fed by a blocked node adds nothing
    assert msg.count("supported operators:") == 1 and "np." not in msg and "array(" not in msg


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
def test_channels_last_flatten_becomes_a_weight_permutation(tmp_path, flatten):
    """Transpose(perm=[0,2,3,1]) -> flatten -> Quant -> MatMul (tf2onnx/QKeras style): exact, Transpose gone."""
    rng = np.random.default_rng(3)
    x = (rng.integers(-128, 128, (N, 2, 3, 3)) / 32).astype(np.float32)
    w = rng.standard_normal((18, 4)).astype(np.float32)
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], domain=QD, name="qin", signed=1, narrow=0,
                              rounding_mode="ROUND"),
             helper.make_node("Transpose", ["xq"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Flatten", ["t"], ["f"], name="flat") if flatten == "Flatten" else
             helper.make_node("Reshape", ["t", "shp"], ["f"], name="flat"),
             helper.make_node("Quant", ["f", "s2", "z", "b"], ["fq"], domain=QD, name="qf", signed=1, narrow=0,
                              rounding_mode="ROUND"),
             helper.make_node("Quant", ["w", "sw", "z", "b3"], ["wq"], domain=QD, name="qw", signed=1, narrow=1,
                              rounding_mode="ROUND"),
             helper.make_node("MatMul", ["fq", "wq"], ["y"], name="fc")]
    inits = [init("s", 0.03125), init("s2", 0.1875), init("z", 0.0), init("b", 8), init("b3", 3), init("w", w),
             init("sw", [[0.375, 0.75, 0.625, 0.5]]), init("shp", [-1, 18], np.int64)]
    g = helper.make_graph(nodes, "cl", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QD, 1)])
    p = tmp_path / "cl.onnx"
    onnx.save(m, p)
    gr = load_model(p)
    assert "channels-last flatten" in gr.metadata["qfx.notes"]
    ours = to_float64(run(gr, x_float=x), gr.tensors[gr.outputs[0]].type)
    ref = executor(m, x)
    # float32 sums of 18 products of short mantissas (scales of 3 significant bits) are exact: all equal
    assert np.array_equal(ours.astype(np.float32), ref)


def test_thresholds_after_a_flatten_compile(tmp_path):
    """Conv -> float BatchNorm -> Flatten -> Quant: per-feature thresholds after the flatten (the backend streams
    HWC and re-orders them); interpreter == executor, and the C simulation agrees."""
    import json
    from qfx_compile.cli import main
    rng = np.random.default_rng(4)
    n = 64
    x = (rng.integers(-128, 128, (n, 2, 4, 4)) / 32).astype(np.float32)
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b8"], ["xq"], domain=QD, name="qin", signed=1, narrow=0,
                              rounding_mode="ROUND"),
             helper.make_node("Quant", ["w", "sw", "z", "b2"], ["wq"], domain=QD, name="qw", signed=1, narrow=1,
                              rounding_mode="ROUND"),
             helper.make_node("Conv", ["xq", "wq"], ["c"], name="conv", kernel_shape=[3, 3], pads=[0, 0, 0, 0]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["bn"], name="bn"),
             helper.make_node("Flatten", ["bn"], ["f"], name="flat"),
             helper.make_node("Quant", ["f", "sa", "z", "b2"], ["y"], domain=QD, name="qa", signed=0, narrow=0,
                              rounding_mode="ROUND")]
    inits = [init("s", 0.03125), init("z", 0.0), init("b8", 8), init("b2", 2), init("b3", 3),
             init("w", rng.standard_normal((3, 2, 3, 3))), init("sw", 0.4),
             init("g", rng.uniform(0.5, 1.5, 3)), init("be", rng.uniform(-1, 1, 3)), init("mu", rng.uniform(-1, 1, 3)),
             init("var", rng.uniform(0.5, 2, 3)), init("sa", 0.37)]
    g = helper.make_graph(nodes, "cf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QD, 1)])
    p = tmp_path / "cf.onnx"
    onnx.save(m, p)
    gr = load_model(p)
    ops = [nd.op for nd in gr.nodes]
    assert ops.index("flatten") < ops.index("multithreshold")
    ours = to_float64(run(gr, x_float=x), gr.tensors[gr.outputs[0]].type)
    import qonnx_models as Q
    c = Q.compare(ours, Q.reference(p, x), Q.reference64(p, x))
    assert c["unexplained"] == 0 and c["exact"] + c["float32_cases"] == n, c
    out = tmp_path / "hls"
    assert main([str(p), "-o", str(out), "--csim", "-q", "--vectors", "30"]) == 0
    assert json.loads((out / "report.json").read_text())["csim"]["failed"] == 0


def test_decomposed_batchnorm_and_negative_scale(tmp_path):
    """A BatchNorm1d decomposed into Sub, Pow (of constants: folded as the executor computes it), Div, Mul, Add,
    then a Quant with a negative scale (a decreasing step function): equal to the executor except counted
    float32 cases (its float64 run agrees with us)."""
    import qonnx_models as Q
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("Sub", ["x", "mu"], ["a"], name="sub"),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="ve"),
             helper.make_node("Pow", ["ve", "half"], ["sd"], name="pow"),
             helper.make_node("Div", ["a", "sd"], ["b"], name="div"),
             helper.make_node("Mul", ["b", "gam"], ["c"], name="mul"),
             helper.make_node("Add", ["c", "bet"], ["d"], name="add"),
             helper.make_node("Quant", ["d", "s", "z", "b4"], ["y"], domain=QD, name="q", signed=1, narrow=1,
                              rounding_mode="HALF_UP")]
    inits = [init("mu", rng.uniform(-1, 1, (1, 8))), init("var", rng.uniform(0.2, 2, (1, 8))), init("eps", 1e-5),
             init("half", 0.5), init("gam", rng.uniform(-1.5, 1.5, (1, 8))), init("bet", rng.uniform(-1, 1, (1, 8))),
             init("s", -0.3), init("z", 0.0), init("b4", 4)]
    g = helper.make_graph(nodes, "bn1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QD, 1)])
    p = tmp_path / "bn1d.onnx"
    onnx.save(m, p)
    gr = load_model(p, input_type="ap_fixed<8,3>")
    assert [n.op for n in gr.nodes][0] in ("multithreshold", "batchnorm")
    x = grid_inputs()
    ours = to_float64(run(gr, x_float=x), gr.tensors[gr.outputs[0]].type)
    c = Q.compare(ours, Q.reference(p, x), Q.reference64(p, x))
    assert c["unexplained"] == 0 and c["exact"] + c["float32_cases"] == N, c


@pytest.mark.parametrize("mode", MODES)
def test_quantized_constants_fast_path_is_exact(mode):
    """Weights quantized in float64 with the error bound (exact arithmetic near boundaries) equal the exact
    quantizer element by element, with exact ties (w = (k + 1/2) * s) and values right at the clamp."""
    from qfx_compile.frontend.casts import quantize_constant
    from qfx_compile.frontend.values import CFloat

    class R:
        vals = {}

        def err(self, msg):
            return ValueError(msg)

    rng = np.random.default_rng(12)
    s = np.float32(rng.uniform(0.01, 0.2, (6, 1)))
    k = rng.integers(-9, 9, (6, 40)).astype(np.float64)
    w = np.where(rng.random((6, 40)) < 0.3, (k + 0.5) * s, rng.standard_normal((6, 40)) * 0.5)
    w = w.astype(np.float32).astype(np.float64)
    q = Quantizer([Fraction(1)], [Fraction(0)], -7, 7, mode)
    r = R()
    quantize_constant(r, "o", CFloat(w), q, {"scale": s.astype(np.float64), "zeropt": np.float64(0.0)})
    got = r.vals["o"].arr
    for i in range(6):
        qq = Quantizer([Fraction(float(s[i, 0]))], [Fraction(0)], -7, 7, mode)
        for j in range(40):
            want = qq.code(Q2(Fraction(float(w[i, j]))), 0) * Fraction(float(s[i, 0]))
            assert Fraction(float(got[i, j])) == want, (mode, i, j)


def test_rank1_float_weight_is_a_user_error(tmp_path, capsys):
    """A Gemm whose float weight is a vector (a fuzzing find: an internal error) is refused with exit 2."""
    from qfx_compile.cli import main
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], domain=QD, name="qin", signed=1, narrow=0,
                              rounding_mode="ROUND"),
             helper.make_node("Gemm", ["xq", "w"], ["y"], name="fc", transB=1)]
    inits = [init("s", 0.25), init("z", 0.0), init("b", 8), init("w", np.array([0.5, -0.75, 0.25, 1.0], np.float32))]
    g = helper.make_graph(nodes, "r1", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QD, 1)])
    p = tmp_path / "rank1.onnx"
    onnx.save(m, p)
    assert main([str(p), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "'fc'" in err and "weight" in err and "internal error" not in err
