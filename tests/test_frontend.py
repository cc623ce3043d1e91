"""Hand-built ONNX files (onnx.helper): each frontend error path on its own, and the positive paths
checked against an exact Fraction computation through the IR interpreter."""
from __future__ import annotations

import base64
import io
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qfx_compile.frontend import ModelError, load_model, read_model_proto
from qfx_compile.ir.ops.onnx_table import IMPORTERS, Importer
from qfx_compile.ir.interpret import run
from qfx_compile.fixed.types import FixedType

pytestmark = pytest.mark.xdist_group("ir")

RNG = np.random.default_rng(7)
IN_T = FixedType(8, 3, True, "AP_RND_CONV", "AP_SAT")  # input: ap_fixed<8,3>, F = 5


# ------------------------------------------------------------------ builders
def fp(x, ib, out, name, width=8, signed=1, rounding="AP_RND_CONV", overflow="AP_SAT", **extra):
    """A qfx.FixedPoint node (int_bits is the name of an initializer)."""
    return helper.make_node("FixedPoint", [x, ib], [out], name=name, domain="qfx", width=width, signed=signed,
                            rounding=rounding, overflow=overflow, **extra)


def init(name, arr, dtype=np.float64):
    return numpy_helper.from_array(np.asarray(arr, dtype=dtype), name)


def model(nodes, inits, in_shape=(4,), out="y", metadata=None, in_dims=None):
    dims = in_dims if in_dims is not None else ["N", *in_shape]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, dims)],
                          [helper.make_tensor_value_info(out, TensorProto.DOUBLE, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("qfx", 1)])
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def quant_in(in_shape=(4,)):
    """Input cast to IN_T: nodes, initializers."""
    return [fp("x", "ib_in", "xq", "in/FixedPoint", 8)], [init("ib_in", 3, np.int64)]


def dense_model(with_matmul=False, per_channel_w=None, per_channel_b=None, relu=False):
    """x(4) -> FixedPoint -> dense 3 (Gemm or MatMul+Add) with bias -> FixedPoint(ap_fixed<12,5>)."""
    n, i = quant_in()
    w_ib = np.asarray(per_channel_w if per_channel_w is not None else 1, dtype=np.int64)
    b_ib = np.asarray(per_channel_b if per_channel_b is not None else 2, dtype=np.int64)
    wf = w_ib.reshape(-1)[:, None] if w_ib.ndim else np.full((3, 1), int(w_ib))
    w = RNG.integers(-128, 128, (3, 4)) * np.exp2(-(8 - wf.astype(float)))
    bf = b_ib.reshape(-1) if b_ib.ndim else np.full(3, int(b_ib))
    b = RNG.integers(-128, 128, 3) * np.exp2(-(8 - bf.astype(float)))
    i += [init("w", w if not with_matmul else w.T), init("w_ib", w_ib if not with_matmul or w_ib.ndim == 0
                                                         else w_ib.reshape(1, -1), np.int64),
          init("b", b), init("b_ib", b_ib, np.int64), init("o_ib", 5, np.int64)]
    n += [fp("w", "w_ib", "wq", "fc/w"), fp("b", "b_ib", "bq", "fc/b")]
    if with_matmul:
        n += [helper.make_node("MatMul", ["xq", "wq"], ["mm"], name="fc/MatMul"),
              helper.make_node("Add", ["mm", "bq"], ["acc"], name="fc/Add")]
    else:
        n += [helper.make_node("Gemm", ["xq", "wq", "bq"], ["acc"], name="fc/Gemm", transB=1)]
    if relu:
        n += [helper.make_node("Relu", ["acc"], ["r"], name="fc/Relu")]
    n += [fp("r" if relu else "acc", "o_ib", "y", "fc/out", 12)]
    return model(n, i), w, b


def exact_cast(v: Fraction, t: FixedType) -> int:
    """Round half to even, saturate: AP_RND_CONV / AP_SAT as a Fraction computation."""
    s = v * 2 ** t.frac_bits
    q = round(s)  # Fraction.__round__: half to even
    return min(max(q, t.raw_min), t.raw_max)


def inputs_raw(shape, n=64):
    return RNG.integers(IN_T.raw_min, IN_T.raw_max + 1, (n, *shape))


def fr(raw, frac):
    return Fraction(int(raw)) / 2 ** frac


def load(m, tmp_path, name="m.onnx"):
    p = tmp_path / name
    onnx.save(m, p)
    return load_model(p), str(p)


def expect_error(m, tmp_path, match, node=None, op=None):
    """load_model raises ModelError naming the file, node and op, matching ``match``."""
    p = tmp_path / "bad.onnx"
    onnx.save(m, p)
    with pytest.raises(ModelError, match=match) as e:
        load_model(p)
    msg = str(e.value)
    assert str(p) in msg and e.value.path == str(p)
    if node is not None:
        assert repr(node) in msg and e.value.node == node
    if op is not None:
        assert f"({op})" in msg
    return msg


# ------------------------------------------------------------------ error paths, one each
def test_unsupported_op_lists_supported(tmp_path):
    n, i = quant_in()
    n.append(helper.make_node("Sin", ["xq"], ["y"], name="head/Sin"))
    msg = expect_error(model(n, i), tmp_path, r"unsupported operator Sin; supported: .*Conv.*Gemm", "head/Sin",
                       "Sin")
    assert "re-export" in msg


def test_float_batchnorm_at_the_output_rejected_with_advice(tmp_path):
    """A float BatchNorm's exact value (a division by sqrt(var + eps)) is no fixed-point number: the graph output
    needs a quantizer after it."""
    n, i = quant_in()
    i += [init(k, v) for k, v in (("g", [1.0] * 4), ("be", [0.0] * 4), ("mu", [0.0] * 4), ("var", [2.0] * 4))]
    n.append(helper.make_node("BatchNormalization", ["xq", "g", "be", "mu", "var"], ["y"], name="bn"))
    expect_error(model(n, i), tmp_path, r"not a fixed-point number.*end the graph with a Quant")


def test_arithmetic_on_float_input(tmp_path):
    n = [helper.make_node("Relu", ["x"], ["r"], name="act"), fp("r", "ib", "y", "q")]
    msg = expect_error(model(n, [init("ib", 3, np.int64)]), tmp_path, "cannot cast the real-valued result of 'act'",
                       "q", "qfx.FixedPoint")
    assert "use a QONNX Quant" in msg


def test_weight_without_fixed_point_type(tmp_path):
    n, i = quant_in()
    i += [init("w", np.ones((3, 4))), init("o", 5, np.int64)]
    n += [helper.make_node("Gemm", ["xq", "w"], ["acc"], name="fc", transB=1), fp("acc", "o", "y", "q", 12)]
    expect_error(model(n, i), tmp_path, "cannot cast the real-valued result of 'fc'", "q", "qfx.FixedPoint")


def test_output_without_cast_is_the_exact_sum(tmp_path):
    """No cast at the end: the output is the exact accumulator (its type from the weights' interval)."""
    n, i = quant_in()
    w = RNG.integers(-3, 4, (3, 4)) / 4
    i += [init("w", w), init("wib", 2, np.int64)]
    n += [fp("w", "wib", "wq", "w/q"), helper.make_node("Gemm", ["xq", "wq"], ["y"], name="fc", transB=1)]
    g, _ = load(model(n, i), tmp_path)
    xr = inputs_raw((4,))
    got = run(g, xr)
    t = g.tensors[g.outputs[0]].type
    for k in range(xr.shape[0]):
        for j in range(3):
            exact = sum(fr(xr[k, c], IN_T.frac_bits) * Fraction(float(w[j, c])) for c in range(4))
            assert Fraction(int(got[k, j])) / 2 ** t.frac_bits == exact
    assert "exact" in g.metadata.get("qfx.notes", "")


def test_dynamic_shape(tmp_path):
    n, i = quant_in()
    msg = expect_error(model(n, i, out="xq", in_dims=["N", "F"]), tmp_path, "dynamic or unknown dimension")
    assert "static shape" in msg


def test_type_wider_than_supported(tmp_path):
    n, i = quant_in()
    i.append(init("ib", 3, np.int64))
    n.append(fp("xq", "ib", "y", "wide/FixedPoint", width=5000))
    msg = expect_error(model(n, i), tmp_path, r"width 5000 outside the supported 1\.\.1024", "wide/FixedPoint",
                       "qfx.FixedPoint")
    assert "use a width" in msg


@pytest.mark.parametrize("lo,hi,match", [(0.0, 0.3, r"Clip max 0\.3 is not on the grid.*e\.g\. 0\.3125"),
                                          (-1.01, 1.0, r"Clip min -1\.01 is not on the grid"),
                                          (5.0, 6.0, r"Clip min 5\.0 lies outside the range"),
                                          (1.0, 0.5, "Clip min is greater than max")])
def test_clip_bounds_off_grid(tmp_path, lo, hi, match):
    n, i = quant_in()
    i += [init("lo", lo), init("hi", hi)]
    n.append(helper.make_node("Clip", ["xq", "lo", "hi"], ["y"], name="clip"))
    expect_error(model(n, i), tmp_path, match, "clip", "Clip")


def npz_b64(**arrays):
    b = io.BytesIO()
    np.savez(b, **arrays)
    return base64.b64encode(b.getvalue()).decode()


@pytest.mark.parametrize("value,match", [
    ("not base64 !!", "not a base64 .npz"),
    (base64.b64encode(b"PK\x03\x04 truncated").decode(), "not a base64 .npz"),
    (npz_b64(input_raw=np.zeros((2, 4), np.int64)), "not a base64 .npz"),  # no output_raw
    (npz_b64(input_raw=np.zeros((2, 3), np.int64), output_raw=np.zeros((2, 4), np.int64)), r"shaped \(N, 4\)"),
    (npz_b64(input_raw=np.zeros((2, 4)), output_raw=np.zeros((2, 4), np.int64)), "must be integers"),
    (npz_b64(input_raw=np.zeros((2, 4), np.int64), output_raw=np.zeros((1, 4), np.int64)), "different counts"),
    (npz_b64(input_raw=np.full((2, 4), 999, np.int64), output_raw=np.zeros((2, 4), np.int64)), "outside"),
])
def test_malformed_vectors(tmp_path, value, match):
    n, i = quant_in()
    msg = expect_error(model(n, i, out="xq", metadata={"qfx.vectors": value}), tmp_path, match)
    assert "re-export with qfx.export_onnx" in msg


@pytest.mark.parametrize("shape", [(4, 1), (2, 1, 1, 1), (1, 3), (5,)])
def test_per_channel_int_bits_wrong_shape(tmp_path, shape):
    n, i = quant_in()
    i += [init("w", np.ones((3, 4))), init("wib", np.full(shape, 2), np.int64), init("o", 5, np.int64)]
    n += [fp("w", "wib", "wq", "fc/w"), helper.make_node("Gemm", ["xq", "wq"], ["acc"], name="fc", transB=1),
          fp("acc", "o", "y", "q", 12)]
    expect_error(model(n, i), tmp_path, r"binary point|does not broadcast", "fc/w", "qfx.FixedPoint")


def test_per_channel_on_activation(tmp_path):
    n, i = quant_in()
    i.append(init("ib", [1, 2, 3, 4], np.int64))
    n.append(fp("xq", "ib", "y", "act/q"))
    expect_error(model(n, i), tmp_path, "only supported for constants", "act/q", "qfx.FixedPoint")


def test_missing_initializer(tmp_path):
    n, i = quant_in()
    i.append(init("o", 5, np.int64))
    n += [fp("w", "wib", "wq", "fc/w"), helper.make_node("Gemm", ["xq", "wq"], ["acc"], name="fc", transB=1),
          fp("acc", "o", "y", "q", 12)]
    msg = expect_error(model(n, i), tmp_path, r"'w' is neither computed by a node nor an initializer", "fc/w",
                       "qfx.FixedPoint")
    assert "save the model with all its initializers" in msg


@pytest.mark.parametrize("key,value", [("width", 8.0), ("rounding", 3), ("signed", "yes"), ("overflow", [1, 2])])
def test_wrong_attribute_type(tmp_path, key, value):
    n, i = quant_in()
    i.append(init("ib", 3, np.int64))
    node = fp("xq", "ib", "y", "q2")
    for a in list(node.attribute):
        if a.name == key:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(key, value))
    n.append(node)
    expect_error(model(n, i), tmp_path, rf"attribute '{key}' has type \w+, expected \w+; write it", "q2",
                 "qfx.FixedPoint")


def test_missing_attribute(tmp_path):
    n, i = quant_in()
    i.append(init("ib", 3, np.int64))
    node = fp("xq", "ib", "y", "q2")
    node.attribute.remove(next(a for a in node.attribute if a.name == "width"))
    n.append(node)
    expect_error(model(n, i), tmp_path, "missing attribute 'width'; add it", "q2", "qfx.FixedPoint")


def test_cycle(tmp_path):
    n, i = quant_in()
    n += [helper.make_node("Relu", ["xq", "c"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["c"], name="r2"),
          helper.make_node("Identity", ["c"], ["y"], name="id")]
    # r1 has 2 inputs: Relu's input check would fire first, so build the cycle with Add instead
    n[1] = helper.make_node("Add", ["xq", "c"], ["a"], name="r1")
    expect_error(model(n, i), tmp_path, "cycle through 3 node", "r1", "Add")


def test_tensor_written_twice(tmp_path):
    n, i = quant_in()
    n += [helper.make_node("Relu", ["xq"], ["y"], name="r1"), helper.make_node("Relu", ["xq"], ["y"], name="r2")]
    expect_error(model(n, i), tmp_path, "written twice", "r2", "Relu")


def test_extra_inputs(tmp_path):
    n, i = quant_in()
    n.append(helper.make_node("Relu", ["xq", "xq"], ["y"], name="r"))
    expect_error(model(n, i), tmp_path, "at most 1 inputs", "r", "Relu")


def test_khot_claim_checked(tmp_path):
    n, i = quant_in()
    i += [init("w", np.full((3, 4), 7 / 64)), init("wib", 2, np.int64), init("o", 5, np.int64)]  # 7 = 0b111
    n += [fp("w", "wib", "wq", "fc/w", k_hot=[2], digits="binary"),
          helper.make_node("Gemm", ["xq", "wq"], ["acc"], name="fc", transB=1), fp("acc", "o", "y", "q", 12)]
    expect_error(model(n, i), tmp_path, r"not \[2\]-hot \(binary\)", "fc/w", "qfx.FixedPoint")


def test_relu_before_bias_add_is_not_merged(tmp_path):
    """Gemm -> Relu -> Add(bias) is relu(s) + b, not relu(s + b): it must not be read as a biased dense."""
    n, i = quant_in()
    i += [init("w", np.ones((3, 4)) / 4), init("wib", 2, np.int64), init("b", [0.5] * 3), init("bib", 2, np.int64),
          init("o", 5, np.int64)]
    n += [fp("w", "wib", "wq", "fc/w"), fp("b", "bib", "bq", "fc/b"),
          helper.make_node("Gemm", ["xq", "wq"], ["s"], name="fc", transB=1),
          helper.make_node("Relu", ["s"], ["r"], name="relu"), helper.make_node("Add", ["r", "bq"], ["a"], name="add"),
          fp("a", "o", "y", "q", 12)]
    expect_error(model(n, i), tmp_path, "no fixed-point type", "add", "Add")


# ------------------------------------------------------------------ files
def test_truncated_file(tmp_path):
    m, _, _ = dense_model()
    data = m.SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as e:
        load_model(p)
    assert str(p) in str(e.value) and ("cannot be parsed" in str(e.value) or "not an ONNX" in str(e.value)
                                       or "node" in str(e.value))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelError, match="the file is empty") as e:
        load_model(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("data", [b"\x00garbage\xff\xff\xff", b"hello, this is text\n", b"\x89PNG\r\n\x1a\n" + bytes(40)])
def test_non_onnx_file(tmp_path, data):
    p = tmp_path / "x.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelError, match="not an ONNX model") as e:
        load_model(p)
    assert str(p) in str(e.value) and "qfx.export_onnx" in str(e.value)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match="does not exist; check the path") as e:
        load_model(p)
    assert str(p) in str(e.value)


def test_directory(tmp_path):
    with pytest.raises(ModelError, match="is a directory") as e:
        load_model(tmp_path)
    assert str(tmp_path) in str(e.value)


# ------------------------------------------------------------------ internal errors are not hidden
def test_internal_error_propagates_with_a_note(tmp_path, monkeypatch):
    from qfx_compile.frontend import onnx_reader

    def boom(r, out):
        raise KeyError("a frontend bug")

    monkeypatch.setitem(IMPORTERS, ("", "Relu"), Importer(boom, 1, 1, "Relu"))
    n, i = quant_in()
    n.append(helper.make_node("Relu", ["xq"], ["y"], name="act"))
    with pytest.raises(KeyError) as e:  # not ModelError: the user's file is fine
        read_model_proto(model(n, i), "f.onnx")
    assert not isinstance(e.value, ModelError)
    assert any("internal error while reading f.onnx" in s and "'act' (Relu)" in s for s in e.value.__notes__)


def test_cli_reports_internal_error_with_exit_1(tmp_path, monkeypatch, capsys):
    from qfx_compile import cli
    from qfx_compile.frontend import onnx_reader

    def boom(r, out):
        raise KeyError("a frontend bug")

    monkeypatch.setitem(IMPORTERS, ("", "Relu"), Importer(boom, 1, 1, "Relu"))
    monkeypatch.delenv("QFX_DEBUG", raising=False)
    n, i = quant_in()
    n.append(helper.make_node("Relu", ["xq"], ["y"], name="act"))
    p = tmp_path / "m.onnx"
    onnx.save(model(n, i), p)
    rc = cli.main([str(p), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "internal error: KeyError" in err and "Traceback" not in err


# ------------------------------------------------------------------ positive paths, exact
def _dense_reference(xr, w, b, relu=False):
    """Exact y = cast(x*w + b, ap_fixed<12,5>) (relu before the cast) from Fractions."""
    t = FixedType(12, 5, True, "AP_RND_CONV", "AP_SAT")
    out = np.zeros((xr.shape[0], w.shape[0]), dtype=np.int64)
    for n in range(xr.shape[0]):
        for j in range(w.shape[0]):
            s = sum((fr(xr[n, k], IN_T.frac_bits) * Fraction(float(w[j, k])) for k in range(w.shape[1])), Fraction(0))
            s += Fraction(float(b[j]))
            out[n, j] = exact_cast(max(s, Fraction(0)) if relu else s, t)
    return out


@pytest.mark.parametrize("with_matmul", [False, True])
def test_dense_with_bias_exact(tmp_path, with_matmul):
    m, w, b = dense_model(with_matmul)
    g, _ = load(m, tmp_path)
    assert [n.op for n in g.nodes] == ["quant", "dense"] and "bias" in g.nodes[1].params
    xr = inputs_raw((4,))
    assert np.array_equal(run(g, xr), _dense_reference(xr, w, b))


def test_dense_relu_then_cast_exact(tmp_path):
    m, w, b = dense_model(relu=True)
    g, _ = load(m, tmp_path)
    xr = inputs_raw((4,))
    assert np.array_equal(run(g, xr), _dense_reference(xr, w, b, relu=True))


def test_one_result_cast_twice(tmp_path):
    """One exact result feeding two different casts (then added) reads as two nodes, exactly."""
    m, w, b = dense_model()
    g0 = m.graph
    for node in g0.node:
        if node.output[0] == "y":
            node.output[0] = "y1"
    g0.initializer.append(init("o2", 2, np.int64))
    g0.node.append(fp("acc", "o2", "y2", "fc/out2", 6))
    g0.node.append(helper.make_node("Add", ["y1", "y2"], ["s"], name="sum"))
    g0.node.append(fp("s", "o2", "y", "sum/q", 12, rounding="AP_TRN"))
    g, _ = load(m, tmp_path)
    assert [n.op for n in g.nodes] == ["quant", "dense", "dense", "add"]
    xr = inputs_raw((4,))
    t1 = FixedType(12, 5, True, "AP_RND_CONV", "AP_SAT")
    t2 = FixedType(6, 2, True, "AP_RND_CONV", "AP_SAT")
    t3 = FixedType(12, 2, True, "AP_TRN", "AP_SAT")
    want = np.zeros((xr.shape[0], 3), dtype=np.int64)
    for n in range(xr.shape[0]):
        for j in range(3):
            s = sum((fr(xr[n, k], 5) * Fraction(float(w[j, k])) for k in range(4)), Fraction(float(b[j])))
            v = fr(exact_cast(s, t1), t1.frac_bits) + fr(exact_cast(s, t2), t2.frac_bits)
            want[n, j] = min(max(int(np.floor(v * 2 ** t3.frac_bits)), t3.raw_min), t3.raw_max)
    assert np.array_equal(run(g, xr), want)


@pytest.mark.parametrize("w_ib,b_ib", [([0, 1, 2], [1, 2, 3]), (2, [0, 1, 2])])
def test_dense_per_channel_int_bits_exact(tmp_path, w_ib, b_ib):
    """Per-channel int_bits: weight [C,1] (Gemm) / [1,C] (MatMul, weight (in, out)), bias [C]."""
    for with_matmul in (False, True):
        wi = np.asarray(w_ib, dtype=np.int64)
        m, w, b = dense_model(with_matmul, per_channel_w=wi.reshape(-1, 1) if wi.ndim else wi,
                              per_channel_b=np.asarray(b_ib))
        g, _ = load(m, tmp_path)
        node = g.nodes[1]
        if wi.ndim:
            assert node.params["weight"].int_bits.tolist() == list(w_ib)
        assert node.params["bias"].int_bits.tolist() == list(b_ib)
        xr = inputs_raw((4,))
        assert np.array_equal(run(g, xr), _dense_reference(xr, w, b))


def conv_model(per_channel: bool, standard: bool, bn_shape=None, flatten="Reshape"):
    """x(2,5,5) -> FixedPoint -> Conv 3x3 (3 out, pad 1, bias) -> FixedPoint -> [Mul/Add BN] -> flatten."""
    n, i = quant_in()
    ibw = np.array([0, 1, 2], dtype=np.int64).reshape(3, 1, 1, 1) if per_channel else np.array(1, np.int64)
    fw = 8 - np.broadcast_to(ibw.reshape(-1), (3,))
    w = RNG.integers(-128, 128, (3, 2, 3, 3)) * np.exp2(-fw.astype(float)).reshape(3, 1, 1, 1)
    b = RNG.integers(-128, 128, 3) * 2.0 ** -6
    i += [init("w", w), init("wib", ibw, np.int64), init("b", b), init("bib", 2, np.int64), init("o", 4, np.int64)]
    conv = helper.make_node("Conv" if standard else "Conv", ["xq", "wq", "bq"], ["acc"], name="conv",
                            domain="" if standard else "qfx", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                            strides=[1, 1])
    n += [fp("w", "wib", "wq", "conv/w"), fp("b", "bib", "bq", "conv/b"), conv, fp("acc", "o", "c", "conv/out", 10)]
    last, params = "c", {}
    if bn_shape is not None:
        a_ib = np.array([1, 2, 3], np.int64).reshape(bn_shape)
        sh_ib = np.array([0, 1, 2], np.int64).reshape(bn_shape)
        fa = 8 - np.array([1, 2, 3])
        fs = 8 - np.array([0, 1, 2])
        a = RNG.integers(-128, 128, 3) * np.exp2(-fa.astype(float))
        sh = RNG.integers(-128, 128, 3) * np.exp2(-fs.astype(float))
        i += [init("a", a.reshape(bn_shape)), init("aib", a_ib, np.int64), init("s", sh.reshape(bn_shape)),
              init("sib", sh_ib, np.int64), init("bo", 3, np.int64)]
        n += [fp("a", "aib", "aq", "bn/a"), fp("s", "sib", "sq", "bn/s"),
              helper.make_node("Mul", ["c", "aq"], ["m"], name="bn/Mul"),
              helper.make_node("Add", ["m", "sq"], ["bs"], name="bn/Add"), fp("bs", "bo", "bnq", "bn/out", 8)]
        last, params = "bnq", {"a": a, "s": sh}
    if flatten == "Reshape":
        i.append(init("shape", [1, -1], np.int64))
        n.append(helper.make_node("Reshape", [last, "shape"], ["y"], name="flat"))
    else:
        n.append(helper.make_node("Flatten", [last], ["y"], name="flat", axis=1))
    return model(n, i, in_shape=(2, 5, 5)), w, b, params


def _conv_reference(xr, w, b, params):
    t = FixedType(10, 4, True, "AP_RND_CONV", "AP_SAT")
    tb = FixedType(8, 3, True, "AP_RND_CONV", "AP_SAT")
    n_, c_, h_, w_ = xr.shape
    xp = np.zeros((n_, c_, h_ + 2, w_ + 2), dtype=object)
    xp[:, :, 1:-1, 1:-1] = [[[[fr(v, 5) for v in row] for row in ch] for ch in img] for img in xr]
    wf = np.vectorize(lambda v: Fraction(float(v)), otypes=[object])(w)
    out = []
    for n in range(n_):
        ys = []
        for o in range(3):
            for yy in range(h_):
                for xx in range(w_):
                    s = (xp[n, :, yy:yy + 3, xx:xx + 3] * wf[o]).sum() + Fraction(float(b[o]))
                    r = exact_cast(s, t)
                    if params:
                        v = fr(r, t.frac_bits) * Fraction(float(params["a"][o])) + Fraction(float(params["s"][o]))
                        r = exact_cast(v, tb)
                    ys.append(r)
        out.append(ys)
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("standard,per_channel,bn_shape,flatten", [
    (True, False, None, "Reshape"), (False, True, None, "Flatten"), (True, True, (3, 1, 1), "Reshape"),
    (True, False, (3, 1, 1), "Flatten"), (False, False, (1, 3, 1, 1), "Reshape")])
def test_conv_exact(tmp_path, standard, per_channel, bn_shape, flatten):
    """Standard Conv (or qfx.Conv) -> FixedPoint, per-channel weight [C,1,1,1], BatchNorm scale/shift in each
    accepted per-channel shape, Reshape (N, -1) / Flatten as flatten."""
    m, w, b, params = conv_model(per_channel, standard, bn_shape, flatten)
    g, _ = load(m, tmp_path)
    ops = [n.op for n in g.nodes]
    assert ops == ["quant", "conv2d"] + (["batchnorm"] if bn_shape else []) + ["flatten"]
    if per_channel:
        assert g.nodes[1].params["weight"].int_bits.tolist() == [0, 1, 2]
    if bn_shape:
        assert g.nodes[2].params["scale"].int_bits.tolist() == [1, 2, 3]
        assert g.nodes[2].params["shift"].int_bits.tolist() == [0, 1, 2]
    xr = inputs_raw((2, 5, 5), n=6)
    assert np.array_equal(run(g, xr), _conv_reference(xr, w, b, params))


def test_batchnorm_scale_along_width_rejected(tmp_path):
    """A (C,) scale on a (C, H, W) map broadcasts along W in ONNX, not per channel."""
    m, *_ = conv_model(False, True, (3,))
    expect_error(m, tmp_path, r"does not act per channel.*expected one of", "bn/Mul", "Mul")


@pytest.mark.parametrize("shape", [(1, 2), (0, 10), (-1, -1), (2, 5)])
def test_reshape_other_than_flatten_rejected(tmp_path, shape):
    m, *_ = conv_model(False, True)
    for t in m.graph.initializer:
        if t.name == "shape":
            t.CopyFrom(init("shape", shape, np.int64))
    expect_error(m, tmp_path, r"only a Reshape to \(N, 75\)", "flat", "Reshape")


def test_clip_on_grid_exact(tmp_path):
    n, i = quant_in()
    i += [init("lo", -0.25), init("hi", 1e9)]  # hi beyond the range: never wins
    n.append(helper.make_node("Clip", ["xq", "lo", "hi"], ["y"], name="clip"))
    g, _ = load(model(n, i), tmp_path)
    assert g.nodes[1].attrs == {"lo": -8, "hi": IN_T.raw_max}
    xr = inputs_raw((4,))
    assert np.array_equal(run(g, xr), np.clip(xr, -8, IN_T.raw_max))


def test_huge_constant_saturates_exactly(tmp_path):
    """A weight far beyond its type's range (1e300) saturates (AP_SAT) or wraps to 0 (AP_WRAP) exactly."""
    n, i = quant_in()
    w = np.full((3, 4), 0.5)
    w[0, 0], w[1, 1] = 1e300, -1e300
    i += [init("w", w), init("wib", 2, np.int64), init("o", 5, np.int64)]
    n += [fp("w", "wib", "wq", "fc/w"), helper.make_node("Gemm", ["xq", "wq"], ["acc"], name="fc", transB=1),
          fp("acc", "o", "y", "q", 12)]
    g, _ = load(model(n, i), tmp_path)
    raw = g.nodes[1].params["weight"].raw
    assert raw[0, 0] == 127 and raw[1, 1] == -128 and raw[2, 2] == 32
    n[1] = fp("w", "wib", "wq", "fc/w", overflow="AP_WRAP")
    g, _ = load(model(n, i), tmp_path)
    raw = g.nodes[1].params["weight"].raw
    assert raw[0, 0] == 0 and raw[1, 1] == 0


# ------------------------------------------------------------------ input types and test vectors
def test_narrow_input_vectors_never_hold_the_lowest_code(tmp_path):
    """An AP_SAT_SYM input quantizer never produces -2**(W-1): generated test vectors must not hold it."""
    from qfx_compile.backend.project import interpreter_vectors
    n = [fp("x", "ib_in", "y", "in/FixedPoint", 8, overflow="AP_SAT_SYM")]
    g, _ = load(model(n, [init("ib_in", 3, np.int64)], out="y"), tmp_path)
    v = interpreter_vectors(g, 100)
    assert v.input_raw.min() == -127 and v.input_raw.max() == 127


def test_input_type_from_annotation_and_option(tmp_path):
    """finn_datatype INT8 on the graph input types it; --input-type overrides; a bad spelling is a ModelError."""
    n = [helper.make_node("Relu", ["x"], ["y"], name="act")]
    m = model(n, [])
    a = m.graph.quantization_annotation.add(tensor_name="x")
    a.quant_parameter_tensor_names.add(key="finn_datatype", value="INT8")
    g, p = load(m, tmp_path)
    assert g.tensors["x"].type == FixedType(8, 8, True) and [n.op for n in g.nodes] == ["relu"]
    assert run(g, np.array([[-3, 0, 5, -128]]))[0].tolist() == [0, 0, 5, 0]
    g2 = load_model(p, input_type="ap_ufixed<4,2>")
    assert g2.tensors["x"].type == FixedType(4, 2, False)
    with pytest.raises(ModelError, match="malformed fixed-point type"):
        load_model(p, input_type="ap_fixed<8")


def test_bipolar_annotation_types_the_input_and_its_codes(tmp_path):
    """finn_datatype BIPOLAR: an ap_fixed<2,2> input whose test vectors hold only -1 and +1."""
    from qfx_compile.backend.project import interpreter_vectors
    m = model([helper.make_node("Relu", ["x"], ["y"], name="act")], [])
    a = m.graph.quantization_annotation.add(tensor_name="x")
    a.quant_parameter_tensor_names.add(key="finn_datatype", value="BIPOLAR")
    g, _ = load(m, tmp_path)
    assert g.tensors["x"].type == FixedType(2, 2, True)
    v = interpreter_vectors(g, 50)
    assert set(np.unique(v.input_raw).tolist()) == {-1, 1}
