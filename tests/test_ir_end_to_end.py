"""Every zoo model: PyTorch eval output == onnxruntime on the exported file == IR interpreter (exact)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from qfx_compile.frontend import load_model
from qfx_compile.ir.interpret import run, to_float64
from qfx_compile.ir.passes import run_default_passes
from qfx_compile.qfx.export import export_onnx, load_vectors
from qfx_compile.testing.models import ZOO, build

pytestmark = pytest.mark.xdist_group("ir")


@pytest.mark.parametrize("name", sorted(ZOO))
def test_torch_ort_ir_equal(name, tmp_path):
    model, example = build(name)
    path = export_onnx(model, example, tmp_path / f"{name}.onnx", vectors=100)
    vec = load_vectors(path)
    x = vec["input"]
    assert len(x) >= 100
    with torch.no_grad():
        y_torch = model.eval()(torch.from_numpy(x)).to(torch.float64).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    g = load_model(path)
    out_t = g.tensors[g.outputs[0]].type
    y_raw = run(g, x_float=x)
    y_ir = to_float64(y_raw, out_t).reshape(y_torch.shape)
    assert np.array_equal(y_torch, y_ort)
    assert np.array_equal(y_ir, y_torch)
    assert np.array_equal(y_raw, vec["output_raw"])
    assert np.array_equal(run(g, vec["input_raw"]), vec["output_raw"])
    g2 = run_default_passes(g)
    assert np.array_equal(run(g2, vec["input_raw"]), vec["output_raw"])
