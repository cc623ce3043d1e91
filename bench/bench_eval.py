"""Samples/s of the exact QFX eval mode against float32 eval of the same small CNN (issue 13, item 1).

CNN: 1x28x28 -> conv 8 (3x3) -> ReLU -> maxpool 2 -> conv 16 (3x3) -> ReLU -> maxpool 2 -> linear 10,
every type ``ap_fixed<16,6>`` (AP_TRN, AP_WRAP: the ap_fixed defaults), binary points as declared.
Batch of ``--batch`` inputs (default 1,000), float32 and QFX timed alternately in one process
(median of ``--repeat``). Prints the machine, the seed and both rates. ``--baseline REF`` also times the
library at git commit REF, in alternating processes (bench/baseline.py); ``--readme`` writes that table
into README.md (between the eval markers).

    python bench/bench_eval.py [--batch 1000] [--repeat 7] [--threads 1] [--seed 0]
                               [--baseline REF --rounds 3 [--readme]]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline  # noqa: E402  (bench/baseline.py: before/after in one run)
baseline.use_pkg(sys.argv)
import machine  # noqa: E402  (bench/machine.py: CPU model, load, compiler)
from qfx_compile import qfx  # noqa: E402

T16 = "ap_fixed<16,6>"


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 5 * 5, 10))


def seed_all(seed: int):
    if hasattr(qfx, "seed_everything"):
        qfx.seed_everything(seed)
    else:  # an older tree (--baseline)
        import random

        import numpy as np
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)


def build(seed: int):
    seed_all(seed)
    fmodel = small_cnn().eval()
    cfg = qfx.QFXConfig(weight=T16, bias=T16, activation=T16, input=T16, learn_int_bits=False)
    qmodel = qfx.quantize_model(small_cnn().eval(), cfg)
    with torch.no_grad():  # same weights as the float model
        for (n, p) in fmodel.named_parameters():
            qmodel.get_submodule(n.rsplit(".", 1)[0]).get_parameter(n.rsplit(".", 1)[1]).copy_(p)
    return fmodel, qmodel.eval()


def measure(batch: int, repeat: int, seed: int):
    fmodel, qmodel = build(seed)
    x = torch.rand(batch, 1, 28, 28)
    tf, tq = [], []
    with torch.no_grad():
        fmodel(x), qmodel(x)  # warm up
        for _ in range(repeat):
            t0 = time.perf_counter()
            fmodel(x)
            t1 = time.perf_counter()
            qmodel(x)
            t2 = time.perf_counter()
            tf.append(t1 - t0)
            tq.append(t2 - t1)
    return batch / statistics.median(tf), batch / statistics.median(tq)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", metavar="REF", help="also time qfx_compile at git commit REF, alternately")
    ap.add_argument("--rounds", type=int, default=3, help="processes per tree with --baseline")
    ap.add_argument("--readme", action="store_true", help=f"with --baseline: write the table into README.md")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pkg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load0 = machine.load()
    if a.baseline:
        args = ["--batch", str(a.batch), "--repeat", str(a.repeat), "--threads", str(a.threads), "--seed", str(a.seed)]
        before, after, commit = baseline.compare(__file__, args, a.baseline, a.rounds)
        lines = [f"`{baseline.command(sys.argv)}` on {machine.cpu_model()}, {a.threads} thread(s), torch "
                 f"{torch.__version__}, load average {load0} -> {machine.load()}, seed {a.seed}; small CNN (1x28x28, "
                 f"conv8-pool-conv16-pool-fc10), ap_fixed<16,6>, batch {a.batch}, {a.repeat} runs each alternating, "
                 f"median; {a.rounds} processes per tree, alternating, median; fused cast kernel (after): "
                 f"{'yes' if after.get('fused') else 'no'}:", "",
                 "| | float32 eval samples/s | QFX exact eval samples/s | QFX time / float time |",
                 "|---|---:|---:|---:|"]
        for name, r in ((f"before ({commit})", before), (f"after ({baseline.head()})", after)):
            lines.append(f"| {name} | {r['float']:.0f} | {r['qfx']:.0f} | {r['ratio']:.2f}x |")
        print("\n".join(lines))
        if a.readme:
            baseline.write_readme("eval", "\n".join(lines))
        return
    f, q = measure(a.batch, a.repeat, a.seed)
    if a.json:
        print(json.dumps({"float": f, "qfx": q, "ratio": f / q, "fused": machine.fused_kernel()}))
        return
    print(f"machine: {machine.cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load average {load0} -> {machine.load()}, seed {a.seed}")
    print(f"small CNN, ap_fixed<16,6>, batch {a.batch}, {a.repeat} runs each, alternating (median)")
    print(f"float32 eval   : {f:10.0f} samples/s")
    print(f"QFX exact eval : {q:10.0f} samples/s")
    print(f"ratio: {f / q:.2f}x float time (target <= 2x); fused cast kernel: "
          f"{'yes' if machine.fused_kernel() else 'no'}")


if __name__ == "__main__":
    main()
