"""QONNX models (tests/qonnx_models.py: TFC-like 1W1A/1W2A/2W2A, KWS-like 3-bit, CNV-like) through qfx-compile and
through hls4ml 1.3.0, each against the QONNX reference executor: exact rows and argmax agreement.

    .venv/bin/python bench/qonnx_peers.py [--n 200] [--models tfc_w1a1,kws_w3a3]

Ours: the IR interpreter (equal to the C simulation: tests/test_qonnx_models.py). A row is exact when every
output equals the executor's float32 value; "f32 cases" are rows where ours differs from the float32 executor
but equals the same executor run in float64 (a float32 rounding of the reference, not an error of ours).
hls4ml: ``convert_from_onnx_model`` after qonnx's cleanup and channels-last conversion, default precision
``fixed<16,6>`` (its default), io_parallel, Vitis backend, ``compile()`` + ``predict()`` (g++ C simulation).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
warnings.filterwarnings("ignore")


def hls4ml_predict(path, x, outdir):
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    mw = cleanup_model(ModelWrapper(path))
    mw = mw.transform(ConvertToChannelsLastAndClean())
    mw = mw.transform(GemmToMatMul())
    mw = cleanup_model(mw)
    cfg = hls4ml.utils.config.config_from_onnx_model(mw, granularity="name", backend="Vitis",
                                                     default_precision="fixed<16,6>")
    hm = hls4ml.converters.convert_from_onnx_model(mw, output_dir=outdir, io_type="io_parallel", backend="Vitis",
                                                   hls_config=cfg)
    hm.compile()
    xi = x if x.ndim == 2 else np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # channels last
    y = np.asarray(hm.predict(np.ascontiguousarray(xi.astype(np.float32))))
    return y.reshape(len(x), -1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--models", default=None)
    args = ap.parse_args()
    import qonnx_models as Q
    from machine import cpu_model, load
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.interpret import run, to_float64

    names = args.models.split(",") if args.models else sorted(Q.MODELS)
    print(f"# CPU {cpu_model()}, load {load()}, {args.n} inputs per model")
    print("| model | ours: exact rows | ours: f32 cases | ours: other | ours: argmax = executor's | "
          "hls4ml: exact rows | hls4ml: argmax agrees | hls4ml note |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        with tempfile.TemporaryDirectory() as d:
            path, inputs, input_type = Q.build(name, os.path.join(d, f"{name}.onnx"))
            x = inputs(args.n, np.random.default_rng(11))
            g = load_model(path, input_type=input_type)
            ours = to_float64(run(g, x_float=x), g.tensors[g.outputs[0]].type)
            r32, r64 = Q.reference(path, x), Q.reference64(path, x)
            c, a = Q.compare(ours, r32, r64), Q.compare(ours, r32, r64, argmax=True)
            note, h_exact, h_arg = "", "-", "-"
            t0 = time.perf_counter()
            try:
                yh = hls4ml_predict(path, x, os.path.join(d, "hls4ml"))
                ref = r32.reshape(len(x), -1)
                h_exact = f"{int((yh.astype(np.float32) == ref).all(axis=1).sum())}/{len(x)}"
                h_arg = f"{int((yh.argmax(axis=1) == ref.argmax(axis=1)).sum())}/{len(x)}"
                note = f"converted + compiled in {time.perf_counter() - t0:.0f} s"
            except Exception as e:  # noqa: BLE001  a converter failure is a result of the comparison, not of this script
                note = f"fails: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
            print(f"| {name} | {c['exact']}/{c['rows']} | {c['float32_cases']} | {c['unexplained']} | "
                  f"{a['exact']}/{a['rows']} ({a['float32_cases']} f32) | {h_exact} | "
                  f"{h_arg} | {note} |", flush=True)


if __name__ == "__main__":
    main()
