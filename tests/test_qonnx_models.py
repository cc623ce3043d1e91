"""Brevitas models of the kinds users bring, exported with export_qonnx, against the QONNX reference executor.

Each model: the IR interpreter on 200 inputs on the input grid equals the executor except in counted float32
cases (rows where the same executor run in float64 agrees with us: the float32 reference rounded across a
rounding boundary, or a float output's float32 accumulation), never otherwise; on the compiled design's
test vectors every difference is again such a case, and a quantized output agrees value for value (a float
output's float32 sums can break exact ties of binary-weight logits differently: counted); four models
also go through ``qfx-compile --csim`` (g++ against the ap_types headers), one with ``--input-type``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import qonnx_models as Q
from qfx_compile.backend.project import interpreter_vectors
from qfx_compile.frontend import load_model
from qfx_compile.ir.interpret import run, to_float64
from qfx_compile.ir.passes import run_default_passes

pytestmark = pytest.mark.xdist_group("qonnx")

CSIM = {"tfc_w1a1", "tfc_w2a2", "kws_w3a3", "cnv_w1a2"}
#: exact ops a model's IR must contain (the float scales really took the exact path)
EXPECT = {"tfc_w1a1": "multithreshold", "tfc_w1a2": "multithreshold", "tfc_w2a2": "multithreshold",
          "kws_w3a3": "multithreshold", "cnv_w1a2": "multithreshold"}
COUNTS = {}


@pytest.mark.parametrize("name", sorted(Q.MODELS))
def test_model_equals_qonnx_executor(tmp_path, name, capsys):
    path, inputs, input_type = Q.build(name, tmp_path / f"{name}.onnx")
    g = load_model(path, input_type=input_type)
    assert EXPECT[name] in [n.op for n in g.nodes]
    t_out = g.tensors[g.outputs[0]].type
    rng = np.random.default_rng(11)
    x = inputs(200, rng)
    ours = to_float64(run(g, x_float=x), t_out)
    # the Python API applies the same input boundary (float pre-processing, scaled quantizer) exactly
    from qfx_compile import load
    assert np.array_equal(load(path, input_type=input_type).predict(x), ours)
    r32, r64 = Q.reference(path, x), Q.reference64(path, x)
    c, a = Q.compare(ours, r32, r64), Q.compare(ours, r32, r64, argmax=True)
    COUNTS[name] = (c, a)
    with capsys.disabled():
        print(f"\n{name}: values {c}; argmax {a}")
    assert c["unexplained"] == 0 and a["unexplained"] == 0, (c, a)
    assert c["exact"] + c["float32_cases"] == 200

    # the test vectors the compiled design is checked on: expected outputs from the interpreter
    gp = run_default_passes(g)
    v = interpreter_vectors(gp, 60)
    xv = Q.preimage(gp, np.asarray(v.input_raw))
    want = to_float64(v.output_raw, t_out)
    v32, v64 = Q.reference(path, xv), Q.reference64(path, xv)
    cv, av = Q.compare(want, v32, v64), Q.compare(want, v32, v64, argmax=True)
    with capsys.disabled():
        print(f"{name} test vectors: values {cv}; argmax {av}")
    assert cv["unexplained"] == 0 and av["unexplained"] == 0, (cv, av)
    if name.startswith("kws"):  # a quantized output: every value equals the executor's, float32 or not
        assert cv["exact"] == cv["rows"], cv

    if name in CSIM:
        from qfx_compile.cli import main
        out = tmp_path / "hls"
        args = [path, "-o", str(out), "--csim", "-q", "--vectors", "60"]
        if input_type:
            args += ["--input-type", input_type]
        assert main(args) == 0
        rep = json.loads((out / "report.json").read_text())
        assert rep["csim"]["passed"] == 60 and rep["csim"]["failed"] == 0
        assert any("exact value" in n for n in rep["notes"])  # the output has no quantizer in the file: said so


def test_final_softmax_becomes_argmax(tmp_path, capsys):
    """A final Softmax: refused with advice; with --softmax argmax the design outputs the decision, equal to the
    executor's argmax (every difference a float32 case), and the C simulation agrees (report says which)."""
    import torch
    from qfx_compile.frontend import ModelError

    make, shape, inputs, _ = Q.MODELS["tfc_w1a2"]
    path = Q.export(torch.nn.Sequential(make(), torch.nn.Softmax(dim=1)), shape, tmp_path / "sm.onnx",
                    calib=lambda: torch.from_numpy(inputs(32, np.random.default_rng(5))))
    with pytest.raises(ModelError, match=r"final Softmax.*--softmax argmax"):
        load_model(path)
    g = load_model(path, softmax="argmax")
    assert g.nodes[-1].op == "argmax" and "replaced by ArgMax" in g.metadata["qfx.notes"]
    x = inputs(200, np.random.default_rng(11))
    ours = run(g, x_float=x).reshape(-1)
    r32, r64 = Q.reference(path, x), Q.reference64(path, x)
    same, same64 = ours == r32.argmax(axis=1), ours == r64.argmax(axis=1)
    assert same64.all(), int((~same64).sum())  # every difference is the float32 reference's
    with capsys.disabled():
        print(f"\nsoftmax->argmax: {int(same.sum())}/200 equal to the float32 executor, "
              f"{int((~same).sum())} float32 cases")
    from qfx_compile.cli import main
    out = tmp_path / "hls"
    assert main([path, "-o", str(out), "--csim", "-q", "--vectors", "40", "--softmax", "argmax"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["csim"]["passed"] == 40 and any("ArgMax" in n for n in rep["notes"])

