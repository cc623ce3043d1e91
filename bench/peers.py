"""Side by side with hls4ml 1.3.0: the same models, the same ap_fixed<16,6> types, measured in one run, alternating.

Models: MLP 16-64-32-32-5 (ReLU) and a small CNN 1x28x28: conv 3x3 8 -> ReLU -> maxpool 2 -> conv 3x3 16 ->
ReLU -> maxpool 2 -> flatten -> fc 10. Every weight, bias and activation ap_fixed<16,6> (AP_TRN, AP_WRAP: the
hls4ml default), io_parallel for hls4ml. For each model and each of --reps rounds, in turn:
- project generation: hls4ml ``convert_from_pytorch_model`` + ``write()`` / ``qfx-compile`` on the exported
  ONNX file (read, passes, render; the export itself is reported apart);
- C++ build: hls4ml ``_compile()`` (its g++ shared library) / ``make csim-build`` of our project;
- compiled-model throughput on --samples inputs: hls4ml ``predict`` (its C++ through ctypes) / our
  C simulation binary (one process, and one per core);
- Python exact path: ``qfx_compile.load(...).predict`` beside float32 PyTorch eval of the same network
  (hls4ml has no Python path: its predict is the C++ above).
Usage: python bench/peers.py [--samples 1000] [--reps 2] [--out build/peers]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import machine  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

T = "ap_fixed<16,6>"


def float_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 5))


def float_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 5 * 5, 10))


def qfx_twin(f: nn.Module) -> nn.Module:
    """The same network as QFX layers, ap_fixed<16,6> everywhere, the float weights copied in."""
    from qfx_compile.qfx import nn as qnn

    layers = [qnn.QuantInput(T)]
    for m in f:
        if isinstance(m, nn.Linear):
            q = qnn.Linear(m.in_features, m.out_features, weight_type=T, bias_type=T, output_type=T,
                           per_channel=False, learnable=False)
        elif isinstance(m, nn.Conv2d):
            q = qnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, bias=True, weight_type=T, bias_type=T,
                           output_type=T, per_channel=False, learnable=False)
        elif isinstance(m, nn.ReLU):
            layers.append(qnn.ReLU())
            continue
        elif isinstance(m, nn.MaxPool2d):
            layers.append(qnn.MaxPool2d(m.kernel_size))
            continue
        elif isinstance(m, nn.Flatten):
            layers.append(qnn.Flatten())
            continue
        else:
            raise TypeError(m)
        with torch.no_grad():
            q.weight.copy_(m.weight)
            q.bias.copy_(m.bias)
        layers.append(q)
    return nn.Sequential(*layers).eval()


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def hls4ml_round(f, shape, x, out: Path) -> dict:
    import hls4ml

    def convert():
        cfg = hls4ml.utils.config_from_pytorch_model(f, (None,) + shape, granularity="model",
                                                     default_precision=T)
        m = hls4ml.converters.convert_from_pytorch_model(f, hls_config=cfg, output_dir=str(out), backend="Vitis",
                                                         io_type="io_parallel")
        m.write()
        return m

    gen, m = timed(convert)
    build, _ = timed(m._compile)
    xin = x if len(shape) == 1 else np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # hls4ml: channels last
    run, y = timed(lambda: m.predict(xin))
    return {"generate_s": gen, "build_s": build, "samples_per_s": len(x) / run}


def qfx_round(qmodel, x, out: Path, onnx_path: Path, first: bool) -> dict:
    from qfx_compile.backend import csim
    from qfx_compile.backend.project import compile_graph
    from qfx_compile.cli import main as cli_main
    from qfx_compile.fixed.cast import float_to_raw
    from qfx_compile.ir import interpret

    gen, rc = timed(lambda: cli_main([str(onnx_path), "-o", str(out), "--force", "-q", "--target", "zcu102",
                                      "--vectors", "10"]))
    if rc:
        raise SystemExit("qfx-compile failed")
    subprocess.run(["make", "clean"], cwd=out, capture_output=True)
    build = csim.build(out, jobs=2)
    # the throughput vectors: the same inputs, expected outputs from the exact model (checked by the testbench)
    import qfx_compile

    m = qfx_compile.load(onnx_path)
    xr = float_to_raw(x, m.input_type)
    yr = m.predict_raw(xr)
    hwc = xr if xr.ndim == 2 else xr.transpose(0, 2, 3, 1).reshape(len(xr), -1)
    vin, vexp = out.with_name(out.name + "_in.txt"), out.with_name(out.name + "_exp.txt")  # outside the project
    vin.write_text("\n".join(" ".join(map(str, r)) for r in hwc) + "\n")
    vexp.write_text("\n".join(" ".join(map(str, r)) for r in yr.reshape(len(x), -1)) + "\n")
    res = {"generate_s": gen, "build_s": build}
    for tag, w in (("1", 1), ("all", None)):
        r = csim.run(out, expected_vectors=len(x), inputs=str(vin), expected=str(vexp),
                     workers=w)
        if not r.ok:
            raise SystemExit(r.output[-2000:])
        res[f"csim_{tag}_samples_per_s"] = len(x) / r.run_s
    # the Python exact path (load once, then predict) beside float32 torch eval
    lt, em = timed(lambda: qfx_compile.load(onnx_path))
    em.predict(x[:4])
    assert np.array_equal(em.predict(x), interpret.to_float64(yr, em.output_type))
    pt = best_of(lambda: em.predict(x))
    res["load_s"] = lt
    res["predict_samples_per_s"] = len(x) / pt
    return res


def best_of(fn, k: int = 3) -> float:
    """The shortest of k timed calls (the others pay for page faults and other jobs)."""
    return min(timed(fn)[0] for _ in range(k))


def torch_eval(f, x) -> float:
    xt = torch.from_numpy(x)
    with torch.no_grad():
        f(xt[:4])
        return len(x) / best_of(lambda: f(xt))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default="build/peers")
    ap.add_argument("--models", default="mlp,cnn")
    a = ap.parse_args()
    from qfx_compile.qfx.export import export_onnx

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in a.models.split(","):
        torch.manual_seed(0)
        f = (float_mlp() if name == "mlp" else float_cnn()).eval()
        shape = (16,) if name == "mlp" else (1, 28, 28)
        rng = np.random.default_rng(0)
        x = (rng.normal(size=(a.samples,) + shape) * 2).astype(np.float32)
        q = qfx_twin(f)
        export_s, onnx_path = timed(lambda: export_onnx(q, torch.from_numpy(x[:4]), str(out / f"{name}.onnx"),
                                                       vectors=10))
        rows = {"hls4ml": [], "qfx": [], "torch_float32_samples_per_s": []}
        for r in range(a.reps):  # alternating
            rows["hls4ml"].append(hls4ml_round(f, shape, x, out / f"{name}_hls4ml"))
            rows["qfx"].append(qfx_round(q, x, out / f"{name}_qfx", Path(onnx_path), r == 0))
            rows["torch_float32_samples_per_s"].append(torch_eval(f, x))
        med = {k: {m: statistics.median(d[m] for d in v) for m in v[0]} for k, v in rows.items() if k != "torch_float32_samples_per_s"}
        med["torch_float32_samples_per_s"] = statistics.median(rows["torch_float32_samples_per_s"])
        med["qfx_export_s"] = export_s
        results[name] = {k: ({m: round(v, 2) for m, v in d.items()} if isinstance(d, dict) else round(d, 2))
                         for k, d in med.items()}
        print(name, json.dumps(results[name], indent=2), flush=True)
    res = {"samples": a.samples, "reps": a.reps, "results": results,
           "machine": (f"{machine.cpu_model()}; {os.cpu_count()} CPUs; load {machine.load()}; {machine.compiler()}; "
                       f"Python {platform.python_version()}; torch {torch.__version__}; torch threads "
                       f"{torch.get_num_threads()}")}
    print(json.dumps(res, indent=2))
    (out / "peers.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
