"""Fuzzing: >= 500 mutated or truncated valid files each end in ModelError or a correct result."""
from __future__ import annotations

import base64
import io
import random
import time

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qfx_compile.frontend import ModelError, load_model, read_model_proto
from qfx_compile.ir.interpret import run
from qfx_compile.qfx.export import export_onnx
from qfx_compile.testing.models import build

pytestmark = pytest.mark.xdist_group("ir")


def _mutations(m: onnx.ModelProto, rng: random.Random):
    g = m.graph
    k = rng.randrange(8)
    if k == 0 and len(g.initializer):  # remove an initializer
        del g.initializer[rng.randrange(len(g.initializer))]
    elif k == 1 and len(g.node):  # wrong attribute type
        n = g.node[rng.randrange(len(g.node))]
        if len(n.attribute):
            a = n.attribute[rng.randrange(len(n.attribute))]
            n.attribute.remove(a)
            n.attribute.append(helper.make_attribute(a.name, rng.choice([1.5, "x", [1, 2], 7])))
    elif k == 2 and len(g.node) > 2:  # cycle: feed a later output into an earlier node
        i = rng.randrange(len(g.node) - 1)
        j = rng.randrange(i + 1, len(g.node))
        g.node[i].input[0] = g.node[j].output[0]
    elif k == 3 and len(g.initializer):  # absurd shape
        t = g.initializer[rng.randrange(len(g.initializer))]
        t.dims[:] = [10 ** 6, 10 ** 6]
    elif k == 4 and len(g.node):  # swap an op type
        g.node[rng.randrange(len(g.node))].op_type = rng.choice(["Sub", "Softmax", "Conv", "Relu", "Add", "Gemm"])
    elif k == 5:  # dynamic input shape
        d = g.input[0].type.tensor_type.shape.dim
        d[rng.randrange(len(d))].dim_param = "n"
    elif k == 6 and len(g.node):  # remove a node
        del g.node[rng.randrange(len(g.node))]
    elif k == 7 and len(g.node):  # corrupt an attribute value
        n = g.node[rng.randrange(len(g.node))]
        for a in n.attribute:
            if a.type == onnx.AttributeProto.INT:
                a.i = rng.choice([-1, 0, 5000, 2 ** 40])
            elif a.type == onnx.AttributeProto.STRING:
                a.s = rng.choice([b"AP_WRAP_SM", b"", b"\xff"])
    return m


def _npz(**arrays) -> str:
    b = io.BytesIO()
    np.savez(b, **arrays)
    return base64.b64encode(b.getvalue()).decode()


def _mutations2(m: onnx.ModelProto, rng: random.Random):
    """Further mutation kinds (each found a crash class or a silent misreading while writing the frontend)."""
    g = m.graph
    names = [o for n in g.node for o in n.output] + [t.name for t in g.initializer] + [g.input[0].name, ""]
    node = g.node[rng.randrange(len(g.node))] if len(g.node) else None
    t = g.initializer[rng.randrange(len(g.initializer))] if len(g.initializer) else None
    k = rng.randrange(14)
    if k == 0 and t is not None and t.raw_data:  # payload shorter than its dims
        t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data))]
    elif k == 1 and t is not None:  # element type changed (unknown, string, bool, ...)
        t.data_type = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 99])
    elif k == 2 and t is not None:  # another shape / dtype / value (huge, NaN, negative, fractional)
        shp = rng.choice([(), (1,), (3,), (2, 1), (1, 3, 1, 1), (4, 1, 1, 1), (0,)])
        val = rng.choice([0.0, 1.0, -3.0, 7.0, 1e300, 2.5, -1e-300, float(2 ** 62), float("nan")])
        dt = rng.choice([np.float64, np.float32, np.int64])
        a = np.full(shp, val)
        a = a.astype(dt) if dt != np.int64 or np.isfinite(val) and abs(val) < 2 ** 62 else a
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    elif k == 3 and node is not None:  # an input dropped, added, or rewired
        c = rng.randrange(3)
        if c == 0 and len(node.input):
            node.input.pop()
        elif c == 1:
            node.input.append(rng.choice(names))
        elif len(node.input):
            node.input[rng.randrange(len(node.input))] = rng.choice(names)
    elif k == 4:  # graph input: element type, a dimension, rank
        tt = g.input[0].type.tensor_type
        c = rng.randrange(3)
        if c == 0:
            tt.elem_type = rng.choice([1, 6, 7, 10, 11])
        elif c == 1:
            d = tt.shape.dim
            d[rng.randrange(len(d))].dim_value = rng.choice([0, 1, 3, 100000])
        else:
            tt.shape.dim.add().dim_value = 2
    elif k == 5:  # test vectors: garbage, truncated, wrong dtype/shape/count
        for p in m.metadata_props:
            if p.key == "qfx.vectors":
                p.value = rng.choice(["", "!!", base64.b64encode(b"xx").decode(),
                                      _npz(input_raw=np.zeros((2, 3))),
                                      _npz(input_raw=np.zeros((2, 3), np.int64), output_raw=np.zeros(2, np.int64)),
                                      _npz(input_raw=np.array(5), output_raw=np.array(5)),
                                      _npz(input_raw=np.array(["a"]), output_raw=np.array([1.5])),
                                      p.value[:rng.randrange(len(p.value) + 1)]])
    elif k == 6 and node is not None:  # domain changed
        node.domain = rng.choice(["", "qfx", "qonnx.custom_op.general", "ai.onnx", "foo"])
    elif k == 7 and node is not None:  # window / perm / k_hot lists of any length and value
        key = rng.choice(["kernel_shape", "pads", "strides", "dilations", "perm", "k_hot"])
        for a in list(node.attribute):
            if a.name == key:
                node.attribute.remove(a)
        vals = [rng.choice([-1, 0, 1, 2, 3, 2 ** 40]) for _ in range(rng.randrange(6))] or [1]
        node.attribute.append(helper.make_attribute(key, vals))
    elif k == 8 and node is not None:  # a duplicated node (tensor written twice)
        c = onnx.NodeProto()
        c.CopyFrom(node)
        g.node.append(c)
    elif k == 9 and node is not None and len(node.output):  # an output renamed (dangling / clashing)
        node.output[0] = rng.choice(names + ["dangling"])
    elif k == 10 and node is not None and len(node.attribute):  # attribute of a tensor/floats/strings/bytes
        a = node.attribute[rng.randrange(len(node.attribute))]
        name = a.name
        node.attribute.remove(a)
        node.attribute.append(rng.choice([helper.make_attribute(name, numpy_helper.from_array(np.ones(2))),
                                          helper.make_attribute(name, [1.5, 2.5]),
                                          helper.make_attribute(name, ["a", "b"]),
                                          helper.make_attribute(name, b"\xff\xfe")]))
    elif k == 11 and node is not None:  # another (often supported) op type on the same inputs
        node.op_type = rng.choice(["MatMul", "Mul", "Reshape", "Flatten", "Transpose", "Clip", "MaxPool",
                                   "AveragePool", "GlobalAveragePool", "Cast", "Identity", "Constant",
                                   "BatchNormalization", "Quant", "FixedPoint", "Conv", "Gemm", "Add", "Relu"])
    elif k == 12 and len(g.node) > 1:  # two inputs swapped between nodes
        a, b = g.node[rng.randrange(len(g.node))], g.node[rng.randrange(len(g.node))]
        if len(a.input) and len(b.input):
            i, j = rng.randrange(len(a.input)), rng.randrange(len(b.input))
            a.input[i], b.input[j] = b.input[j], a.input[i]
    elif k == 13 and node is not None and len(node.input) and node.input[0]:  # a node inserted before another
        op = rng.choice(["Relu", "Identity", "Cast", "Flatten", "Clip", "Transpose"])
        new = helper.make_node(op, [node.input[0]], [node.input[0] + "_ins"], name="inserted",
                               **({"to": rng.choice([1, 11, 7])} if op == "Cast" else {}))
        node.input[0] = new.output[0]
        g.node.append(new)
    return m


def _check(fn, expect):
    try:
        g = fn()
    except ModelError:
        return "error"
    if g.vectors is not None and expect is not None:
        assert np.array_equal(run(g, g.vectors.input_raw[:4]), g.vectors.output_raw[:4])
    return "ok"


def test_fuzz_500(tmp_path):
    rng = random.Random(1234)
    bases = []
    for name in ("mlp", "resnet"):
        model, ex = build(name)
        p = export_onnx(model, ex, tmp_path / f"{name}.onnx", vectors=4)
        bases.append(open(p, "rb").read())
    t0 = time.time()
    results = {"ok": 0, "error": 0}
    for i in range(520):
        data = bases[i % 2]
        if i % 3 == 0:  # bytes: truncate or flip
            b = bytearray(data)
            if rng.random() < 0.5:
                b = b[:rng.randrange(len(b))]
            else:
                for _ in range(rng.randrange(1, 20)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
            p = tmp_path / "fuzz.onnx"
            p.write_bytes(bytes(b))
            results[_check(lambda: load_model(p), None)] += 1
        else:
            m = onnx.ModelProto()
            m.ParseFromString(data)
            m = _mutations(m, rng)
            results[_check(lambda: read_model_proto(m, "fuzz.onnx"), None)] += 1
    assert results["error"] > 200, results
    assert time.time() - t0 < 120


def test_fuzz_more_mutations(tmp_path):
    """>= 500 files, fixed seed: stacked mutations of five zoo models end in ModelError or in a graph that
    the IR interpreter runs (no other exception from either)."""
    rng = random.Random(2024)
    bases = []
    for name in ("mlp", "resnet", "cnn", "per_channel", "khot_csd"):
        model, ex = build(name)
        bases.append(open(export_onnx(model, ex, tmp_path / f"{name}.onnx", vectors=4), "rb").read())
    t0 = time.time()
    results = {"ok": 0, "error": 0}
    for i in range(600):
        m = onnx.ModelProto()
        m.ParseFromString(bases[i % len(bases)])
        for _ in range(rng.choice([1, 1, 2, 3])):
            m = _mutations2(m, rng) if rng.random() < 0.75 else _mutations(m, rng)
        try:
            g = read_model_proto(m, "fuzz.onnx")
        except ModelError:
            results["error"] += 1
            continue
        if g.vectors is not None:
            run(g, g.vectors.input_raw[:2])
        results["ok"] += 1
    assert results["error"] > 300 and results["ok"] > 20, results
    assert time.time() - t0 < 60


def test_error_messages_name_node_and_op(tmp_path):
    model, ex = build("mlp")
    p = export_onnx(model, ex, tmp_path / "mlp.onnx", vectors=2)
    m = onnx.load(p)
    m.graph.node[3].op_type = "Softmax"
    with pytest.raises(ModelError, match=r"unsupported operator \S*Softmax; supported:") as e:
        read_model_proto(m, "x.onnx")
    assert "x.onnx" in str(e.value) and repr(m.graph.node[3].name) in str(e.value)
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ModelError):
        load_model(tmp_path / "bad.onnx")
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "missing.onnx")
