"""Benchmark: ResNet-20 (CIFAR 3x32x32, ~270k weights) through qfx-compile and the g++ C simulation.

Reports: qfx-compile time (read + passes + project generation), C simulation build time
(make -j<jobs> csim-build), testbench throughput (vectors/s, all vectors in one process),
and the machine. Usage: python bench/bench_compile.py [--vectors 100] [--jobs 2] [--out build/bench]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402
from torch import nn  # noqa: E402

import machine  # noqa: E402  (bench/machine.py: CPU model, load, compiler)
from qfx_compile import qfx
from qfx_compile.qfx import nn as qnn

A = "ap_fixed<8,4,AP_RND,AP_SAT>"
ACC = "ap_fixed<10,5,AP_RND,AP_SAT>"


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = qnn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, output_type=ACC)
        self.bn1 = qnn.BatchNorm2d(cout, output_type=A)
        self.relu1 = qnn.ReLU()
        self.conv2 = qnn.Conv2d(cout, cout, 3, padding=1, bias=False, output_type=ACC)
        self.bn2 = qnn.BatchNorm2d(cout, output_type=A)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = qnn.Conv2d(cin, cout, 1, stride=stride, bias=False, output_type=A)
        self.add = qnn.Add("ap_fixed<9,5,AP_RND_CONV,AP_SAT>")
        self.relu2 = qnn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        s = x if self.short is None else self.short(x)
        return self.relu2(self.add(s, y))


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
        self.stem = qnn.Conv2d(3, 16, 3, padding=1, bias=False, output_type=ACC)
        self.bn = qnn.BatchNorm2d(16, output_type=A)
        self.relu = qnn.ReLU()
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.gap = qnn.AdaptiveAvgPool2d(1, output_type="ap_fixed<10,4,AP_RND_CONV,AP_SAT>")
        self.flatten = qnn.Flatten()
        self.fc = qnn.Linear(64, 10, output_type="ap_fixed<12,5,AP_RND,AP_SAT>")

    def forward(self, x):
        x = self.relu(self.bn(self.stem(self.inp(x))))
        return self.fc(self.flatten(self.gap(self.blocks(x))))


def calibrated_resnet20() -> tuple[ResNet20, torch.Tensor]:
    """The benchmarks' ResNet-20 (seed 0), calibrated on 64 random inputs (seed 1), in eval mode; and those inputs."""
    torch.manual_seed(0)
    model = ResNet20()
    data = torch.randn((64, 3, 32, 32), generator=torch.Generator().manual_seed(1)).clamp(-3.5, 3.5)
    qfx.calibrate(model, data)
    return model.eval(), data


def machine_line() -> str:
    return (f"{machine.cpu_model()}; {os.cpu_count()} CPUs visible; load {machine.load()}; {machine.compiler()}; "
            f"Python {platform.python_version()}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="build/bench")
    ap.add_argument("--target", default="zcu102")
    ap.add_argument("--compile-only", action="store_true", help="stop after qfx-compile (estimates only)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model, data = calibrated_resnet20()
    nweights = sum(p.numel() for n, p in model.named_parameters() if "weight" in n and p.dim() > 1)
    from qfx_compile.qfx.export import export_onnx

    t0 = time.perf_counter()
    onnx_path = export_onnx(model, data[:4], str(out / "resnet20.onnx"), vectors=a.vectors)
    t_export = time.perf_counter() - t0

    from qfx_compile.cli import main as cli_main

    prj = out / "resnet20_hls"
    t0 = time.perf_counter()
    rc = cli_main([onnx_path, "--target", a.target, "-o", str(prj), "--force", "-q", "--vectors", str(a.vectors)])
    t_compile = time.perf_counter() - t0
    if rc != 0:
        print("qfx-compile failed", file=sys.stderr)
        return 1
    tot = json.loads((prj / "report.json").read_text())["totals"]
    est = {k: tot[k] for k in ("dsp_estimate", "dsp_budget", "part_dsp", "lut_estimate", "interval_cycles",
                               "samples_per_s", "latency_us", "weight_bram18")}
    if a.compile_only:
        print(json.dumps({"target": a.target, "qfx_compile_s": round(t_compile, 2), "estimate": est}, indent=2))
        return 0
    subprocess.run(["make", "clean"], cwd=prj, capture_output=True)
    t0 = time.perf_counter()
    p = subprocess.run(["make", "-s", f"-j{a.jobs}", "csim-build"], cwd=prj, capture_output=True, text=True)
    t_build = time.perf_counter() - t0
    if p.returncode != 0:
        print(p.stdout + p.stderr, file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    p = subprocess.run(["./build/csim"], cwd=prj, capture_output=True, text=True)
    t_run = time.perf_counter() - t0
    verdict = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "(no output)"
    res = {
        "model": "ResNet-20 (3x32x32, 16/32/64 channels, 1x1 projection shortcuts)",
        "weights": nweights, "vectors": a.vectors, "export_s": round(t_export, 2),
        "qfx_compile_s": round(t_compile, 2), "csim_build_s": round(t_build, 2), "csim_jobs": a.jobs,
        "csim_run_s": round(t_run, 3), "vectors_per_s": round(a.vectors / t_run, 1), "testbench": verdict,
        "csim_exit": p.returncode, "target": a.target, "estimate": est, "machine": machine_line(),
    }
    print(json.dumps(res, indent=2))
    (out / "bench_compile.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0 if p.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
