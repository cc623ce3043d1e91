"""Milliseconds per training step: float ResNet-20 vs the same network in QFX with every tensor quantized.

CIFAR shape (3x32x32), batch 64, SGD step (forward, backward, update), 2 CPU
threads. QFX: 8-bit weights (per channel), 16-bit biases, 8-bit activations,
BatchNorm scale / shift / output, residual additions and pooling, all binary
points learned. Prints both medians, the ratio (target: QFX within 1.2x of float) and each step's
minor page faults (the operating system mapping in fresh memory: system time that belongs to neither model's
arithmetic). Seeded (Python, numpy, torch) from ``--seed`` with ``qfx.seed_everything``, as the examples
train: torch's deterministic mode, which fills every fresh tensor with NaN (about 10-16 ms of each
step, both sides). ``--baseline REF`` also times the
library at git commit REF, in alternating processes (bench/baseline.py); ``--readme`` writes that
table into README.md (between the train-step markers).

``--allocator`` shows what glibc's allocator does to the ratio: the two models alternating in one
process (the default; memory one step frees, the other reuses) and each model alone in its own
process (as a user trains one), each with glibc's default malloc and with it told to keep freed
memory (``GLIBC_TUNABLES`` trim and mmap thresholds: no page faults once warm, so the ratio is
that of the arithmetic); ``--readme`` writes that table (train-step-allocator markers). "glibc's default"
is what each process does by itself: a QFX model's first training or calibration forward sets glibc's heap
thresholds (``qfx.keep_freed_memory``), so a float-only process keeps glibc's starting thresholds.

    python bench/bench_train_step.py [--steps 20] [--threads 2] [--seed 0] [--baseline REF --rounds 3 [--readme]]
    python bench/bench_train_step.py --fusions [--steps 12]   # what the cross-module fusions buy
    python bench/bench_train_step.py --allocator [--rounds 3] [--readme]
    python bench/bench_train_step.py --keep-memory [--baseline REF ...]   # every process with freed memory kept
    python bench/bench_train_step.py --no-deterministic [...]   # seeded, deterministic mode (its NaN fill) off
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline  # noqa: E402  (bench/baseline.py: before/after in one run)
baseline.use_pkg(sys.argv)
import machine  # noqa: E402  (bench/machine.py: CPU model, load, compiler)
from qfx_compile import qfx  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def make_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t0
    return step


#: glibc told to keep the memory free() gives back (no trimming of the heap top; allocations up to 32 MiB from
#: the heap, not mmap): once warm, a step reuses pages instead of faulting fresh ones in.
KEEP_MEMORY = "glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432"


def memory_mode(a) -> str:
    mem = f"freed memory kept (GLIBC_TUNABLES={KEEP_MEMORY})" if a.keep_memory else "glibc's default malloc"
    return mem + (", deterministic mode off" if getattr(a, "no_deterministic", False) else "")


def timed(step):
    """``(seconds, minor page faults)`` of one call of ``step``."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = step()
    return t, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


def alternate(*steps, n, warmup=3):
    """``[(median ms, median page faults)]`` of step functions timed alternately (sharing background load)."""
    runs = [[] for _ in steps]
    for i in range(warmup + n):
        for r, step in zip(runs, steps):
            v = timed(step)
            if i >= warmup:
                r.append(v)
    return [(1000 * statistics.median(t for t, _ in r), statistics.median(f for _, f in r)) for r in runs]


def allocator_table(a, load0) -> str:
    """The float and QFX medians in four settings (module doc), child processes, ``a.rounds`` rounds each."""
    base = [sys.executable, __file__, "--steps", str(a.steps), "--threads", str(a.threads), "--batch", str(a.batch),
            "--seed", str(a.seed), "--json"]
    rows = []
    for memory in ("default", "keep"):
        env = dict(os.environ)
        env.pop("GLIBC_TUNABLES", None)
        if memory == "keep":
            env["GLIBC_TUNABLES"] = KEEP_MEMORY
        for where in ("one process, alternating", "each alone in its own process"):
            runs = {"float": [], "qfx": []}
            for _ in range(a.rounds):
                if where.startswith("one"):
                    out = [json.loads(subprocess.run(base, env=env, capture_output=True, text=True, check=True)
                                      .stdout.strip().splitlines()[-1])]
                else:
                    out = [json.loads(subprocess.run(base + ["--only", k], env=env, capture_output=True, text=True,
                                                     check=True).stdout.strip().splitlines()[-1]) for k in runs]
                for k in runs:
                    runs[k].append(next(o for o in out if k in o))
            med = {k: {f: statistics.median(r[f] for r in v) for f in (k, k + "_faults")} for k, v in runs.items()}
            f, q = med["float"], med["qfx"]
            rows.append(f"| {where} | {'glibc default' if memory == 'default' else 'kept (GLIBC_TUNABLES)'} | "
                        f"{f['float']:.0f} | {f['float_faults']:,.0f} | {q['qfx']:.0f} | {q['qfx_faults']:,.0f} | "
                        f"{q['qfx'] / f['float']:.2f}x |")
    head = (f"`{baseline.command(sys.argv)}` on {machine.cpu_model()}, {a.threads} thread(s), torch "
            f"{torch.__version__}, load average {load0} -> {machine.load()}, seed {a.seed}; ResNet-20, batch "
            f"{a.batch}, {a.steps} steps per process (median), {a.rounds} processes per row and model (median); "
            f"page faults: minor faults per step; kept: `GLIBC_TUNABLES={KEEP_MEMORY}`:")
    return "\n".join([head, "", "| models | memory | float ms/step | faults | QFX ms/step | faults | QFX / float |",
                      "|---|---|---:|---:|---:|---:|---:|", *rows])


def time_fusions(qmodel, x, y, steps, load0, warmup=3):
    """Median ms of the QFX step with the cross-module fusions on, the convolution-cast fusion off, and both
    off (fuse_relu too), the settings alternating step by step (the values are the same in all three)."""
    convs = [m for m in qmodel.modules() if getattr(m, "fuse_cast_into_bn", False)]
    relus = [m for m in qmodel.modules() if getattr(m, "fuse_relu", False)]
    step = make_step(qmodel, x, y)
    times = {"both on": [], "conv-cast fusion off": [], "both off": []}
    for i in range(warmup + steps):
        for k in times:
            for m in convs:
                m.fuse_cast_into_bn = k == "both on"
            for m in relus:
                m.fuse_relu = k != "both off"
            t = step()
            if i >= warmup:
                times[k].append(t)
    print(f"machine: {machine.cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load average {load0} -> {machine.load()}; ResNet-20 QFX, batch {x.shape[0]}, {steps} steps each, "
          f"alternating (median); {len(convs)} convolution casts and {len(relus)} ReLUs fusable")
    for k, v in times.items():
        print(f"{k:22s}: {1000 * statistics.median(v):7.1f} ms/step")


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", metavar="REF", help="also time qfx_compile at git commit REF, alternately")
    ap.add_argument("--rounds", type=int, default=3, help="processes per tree with --baseline")
    ap.add_argument("--readme", action="store_true", help=f"with --baseline: write the table into README.md")
    ap.add_argument("--fusions", action="store_true",
                    help="time the QFX step with the cross-module fusions (Conv2d.fuse_cast_into_bn, fuse_relu) "
                         "on, the convolution-cast fusion off, and both off, alternating step by step in this "
                         "process")
    ap.add_argument("--allocator", action="store_true",
                    help="time float and QFX with glibc's default and a memory-keeping malloc, alternating in one "
                         "process and each alone in its own (child processes, --rounds each); with --readme write "
                         "the table into README.md")
    ap.add_argument("--keep-memory", action="store_true",
                    help="run (and have every child process run) with freed memory kept (GLIBC_TUNABLES, see "
                         "--allocator): no page faults once warm, so before/after comparisons see the arithmetic")
    ap.add_argument("--no-deterministic", action="store_true",
                    help="seed, but leave torch's deterministic mode off (no NaN fill of fresh tensors: torch's "
                         "layers allocate most of the float step's tensors, the QFX layers few of theirs)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=("float", "qfx"), help=argparse.SUPPRESS)
    ap.add_argument("--pkg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.keep_memory and os.environ.get("GLIBC_TUNABLES") != KEEP_MEMORY:  # glibc reads it at process start
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": KEEP_MEMORY})
    torch.set_num_threads(a.threads)
    load0 = machine.load()
    if a.baseline:
        args = ["--steps", str(a.steps), "--threads", str(a.threads), "--batch", str(a.batch), "--seed", str(a.seed)]
        args += ["--no-deterministic"] if a.no_deterministic else []
        before, after, commit = baseline.compare(__file__, args, a.baseline, a.rounds)
        lines = [f"`{baseline.command(sys.argv)}` on {machine.cpu_model()}, {a.threads} thread(s), torch "
                 f"{torch.__version__}, {memory_mode(a)}, load average {load0} -> {machine.load()}, seed {a.seed}; "
                 f"ResNet-20, batch "
                 f"{a.batch}, 3x32x32, {a.steps} steps each alternating, median; {a.rounds} processes per tree, "
                 f"alternating, median; page faults: minor faults per step; fused cast kernel (after): "
                 f"{'yes' if after.get('fused') else 'no'}:", "",
                 "| | float ms/step | faults | QFX ms/step | faults | QFX / float |", "|---|---:|---:|---:|---:|---:|"]
        for name, r in ((f"before ({commit})", before), (f"after ({baseline.head()})", after)):
            lines.append(f"| {name} | {r['float']:.0f} | {r['float_faults']:,.0f} | {r['qfx']:.0f} | "
                         f"{r['qfx_faults']:,.0f} | {r['ratio']:.2f}x |")
        print("\n".join(lines))
        if a.readme:
            baseline.write_readme("train-step", "\n".join(lines))
        return
    if a.allocator:
        table = allocator_table(a, load0)
        print(table)
        if a.readme:
            baseline.write_readme("train-step-allocator", table)
        return
    seed_all(a.seed)
    if a.no_deterministic:
        torch.use_deterministic_algorithms(False)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.randint(0, 10, (a.batch,))
    fmodel = ResNet20()
    cfg = qfx.QFXConfig(weight="ap_fixed<8,1,AP_RND_CONV,AP_SAT>", bias="ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
                        activation="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", bn_scale="ap_fixed<8,3,AP_RND_CONV,AP_SAT>",
                        bn_shift="ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
    qmodel = qfx.quantize_model(ResNet20(), cfg, x) if a.only != "float" else None
    nq = len(qfx.quantizers(qmodel)) if qmodel is not None else 0
    if a.fusions:
        return time_fusions(qmodel, x, y, a.steps, load0)
    if a.only:
        (t, faults), = alternate(make_step(fmodel if a.only == "float" else qmodel, x, y), n=a.steps)
        print(json.dumps({a.only: t, a.only + "_faults": faults}))
        return
    (f, ff), (q, qf) = alternate(make_step(fmodel, x, y), make_step(qmodel, x, y), n=a.steps)
    if a.json:
        print(json.dumps({"float": f, "qfx": q, "ratio": q / f, "float_faults": ff, "qfx_faults": qf,
                          "fused": machine.fused_kernel()}))
        return
    print(f"machine: {machine.cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{memory_mode(a)}, load average {load0} -> {machine.load()}, seed {a.seed}")
    print(f"ResNet-20, batch {a.batch}, 3x32x32, {a.steps} steps each, alternating (median)")
    print(f"float: {f:8.1f} ms/step  ({ff:,.0f} page faults/step)")
    print(f"QFX  : {q:8.1f} ms/step  ({qf:,.0f} page faults/step; {nq} quantizers)")
    print(f"ratio: {q / f:.2f}x (target: within 1.2x); fused cast kernel: "
          f"{'yes' if machine.fused_kernel() else 'no'}")


if __name__ == "__main__":
    main()
