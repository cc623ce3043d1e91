"""Fuzzing: >= 500 mutated or truncated valid files each end in ModelError or a correct result."""
from __future__ import annotations

import copy
import random
import time

import numpy as np
import onnx
import pytest
from onnx import helper

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
