"""Benchmark: ``qfx_compile.load(...).predict`` (exact) against float32 PyTorch eval of the same network.

Model: bench_compile's ResNet-20 (3x32x32, 16/32/64 channels, 8-bit types), exported to ONNX once
(--out). The float twin is the same architecture in plain torch.nn (Conv2d, BatchNorm2d, ReLU, the
residual add, AdaptiveAvgPool2d, Linear), float32, eval mode, its weights copied from the QFX model.
``--model cnn``: peers.py's small CNN (1x28x28, every type ap_fixed<16,6>) and its float network.
One batch of --batch inputs; the exact predict and the float twin alternate, --repeat calls each,
median. The predict output is checked equal to the integer interpreter (ir.interpret) on the first
16 inputs before timing. torch appears only here, never in the compiler.
Usage: python bench/bench_predict.py [--model resnet20|cnn] [--batch 512] [--repeat 5] [--threads N] [--out build/bench_predict]
       [--baseline REF --rounds 3]: also the library at git commit REF, in alternating processes (bench/baseline.py)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import baseline  # noqa: E402  (bench/baseline.py: before/after in one run)

baseline.use_pkg(sys.argv)
import qfx_compile  # noqa: E402,F401  (first: the tree --pkg names, before bench_compile puts ROOT first)
import machine  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench_compile import calibrated_resnet20, machine_line  # noqa: E402


class FloatBlock(nn.Module):
    def __init__(self, q):
        super().__init__()
        self.conv1, self.bn1 = _conv(q.conv1), _bn(q.bn1)
        self.conv2, self.bn2 = _conv(q.conv2), _bn(q.bn2)
        self.short = None if q.short is None else _conv(q.short)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu((x if self.short is None else self.short(x)) + y)


class FloatResNet20(nn.Module):
    """The float32 twin of bench_compile.ResNet20 (same layers and shapes, its weights)."""

    def __init__(self, q):
        super().__init__()
        self.stem, self.bn = _conv(q.stem), _bn(q.bn)
        self.blocks = nn.Sequential(*[FloatBlock(b) for b in q.blocks])
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)
        with torch.no_grad():
            self.fc.weight.copy_(q.fc.weight)
            self.fc.bias.copy_(q.fc.bias)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(self.gap(x), 1))


def _conv(q) -> nn.Conv2d:
    c = nn.Conv2d(q.in_channels, q.out_channels, q.kernel_size, stride=q.stride, padding=q.padding, bias=False)
    with torch.no_grad():
        c.weight.copy_(q.weight)
    return c


def _bn(q) -> nn.BatchNorm2d:
    b = nn.BatchNorm2d(q.num_features)
    b.load_state_dict({k: v for k, v in q.state_dict().items() if k in b.state_dict()}, strict=False)
    return b


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--out", default="build/bench_predict")
    ap.add_argument("--model", choices=("resnet20", "cnn"), default="resnet20",
                    help="cnn: peers.py's small CNN (1x28x28, ap_fixed<16,6>) and its float weights")
    ap.add_argument("--baseline", metavar="REF", help="also time qfx_compile at git commit REF, alternately")
    ap.add_argument("--rounds", type=int, default=3, help="processes per tree with --baseline")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pkg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.baseline:
        args = ["--model", a.model, "--batch", str(a.batch), "--repeat", str(a.repeat), "--out", a.out] + \
            (["--threads", str(a.threads)] if a.threads else [])
        load0 = machine.load()
        before, after, commit = baseline.compare(__file__, args, a.baseline, a.rounds)
        print(f"`{baseline.command(sys.argv)}` on {machine_line()}, torch {torch.__version__}, load average {load0} "
              f"-> {machine.load()}; batch {a.batch}, {a.repeat} calls each alternating, median; {a.rounds} "
              "processes per tree, alternating, median:\n")
        print("| | float32 samples/s | exact predict samples/s | predict time / float time |\n|---|---:|---:|---:|")
        for name, r in ((f"before ({commit})", before), (f"after ({baseline.head()})", after)):
            print(f"| {name} | {r['float32_samples_per_s']:.0f} | {r['predict_samples_per_s']:.0f} | "
                  f"{r['predict_over_float_time']:.2f}x |")
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    from qfx_compile.ir import interpret
    from qfx_compile.qfx.export import export_onnx

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    if a.model == "resnet20":
        model, data = calibrated_resnet20()
        twin = FloatResNet20(model).eval()
        x = rng.normal(size=(a.batch, 3, 32, 32)).clip(-3.5, 3.5).astype(np.float32)
        what = "ResNet-20 (bench_compile), 3x32x32"
    else:
        from peers import float_cnn, qfx_twin

        torch.manual_seed(0)
        twin = float_cnn().eval()
        model = qfx_twin(twin)
        x = (rng.normal(size=(a.batch, 1, 28, 28)) * 2).astype(np.float32)
        data = torch.from_numpy(x[:4])
        what = "small CNN (peers.py), 1x28x28, ap_fixed<16,6>"
    onnx_path = out / f"{a.model}.onnx"
    if not onnx_path.exists():
        export_onnx(model, data[:4], str(onnx_path), vectors=4)
    m = qfx_compile.load(onnx_path)
    want = interpret.to_float64(interpret.run(m.graph, x_float=x[:16]), m.output_type)
    assert np.array_equal(m.predict(x[:16]), want), "predict differs from the integer interpreter"
    xt = torch.from_numpy(x)

    def run_float():
        with torch.no_grad():
            twin(xt)

    run_float()
    m.predict(x[:32])
    tf, tq = [], []
    for _ in range(a.repeat):  # alternated
        tf.append(timed(run_float))
        tq.append(timed(lambda: m.predict(x)))
    f, q = statistics.median(tf), statistics.median(tq)
    res = {
        "model": f"{what}, exact predict vs float32 torch twin", "batch": a.batch,
        "repeat": a.repeat, "torch_threads": torch.get_num_threads(),
        "float32_samples_per_s": round(a.batch / f, 1), "predict_samples_per_s": round(a.batch / q, 1),
        "predict_over_float_time": round(q / f, 2),
        "runs_s": {"float32": [round(t, 3) for t in tf], "predict": [round(t, 3) for t in tq]},
        "machine": machine_line(), "load_after": machine.load(), "torch": torch.__version__,
    }
    if a.json:
        print(json.dumps(res))
        return 0
    print(json.dumps(res, indent=2))
    (out / "bench_predict.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
