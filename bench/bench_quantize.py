"""Throughput of qfx.quantize (exact ap_fixed cast) against a bare torch.round(x * s) / s.

Run: python bench/bench_quantize.py [--n 10000000] [--threads 2] [--repeat 3]
Prints a markdown table (Melem/s, slowdown versus the bare round) and the machine.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

if __package__ in (None, ""):  # run as a script from a checkout
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qfx_compile.qfx.quantize import quantize
from qfx_compile.qfx.types import ROUNDING_MODES, FixedType


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _best(fn, repeat: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, generator=gen, dtype=torch.float32) * 4
    s = 2.0 ** 5
    base = _best(lambda: torch.round(x * s) / s, args.repeat)
    rows = [("bare `torch.round(x * s) / s`", "-", base)]
    with torch.no_grad():
        for o in ("AP_SAT", "AP_WRAP"):
            for q in ROUNDING_MODES:
                t = FixedType(8, 3, True, q, o)
                rows.append((q, o, _best(lambda: quantize(x, t), args.repeat)))
    print(f"qfx.quantize on {args.n:,} float32 elements, ap_fixed<8,3,Q,O>, {args.threads} threads, "
          f"best of {args.repeat}\n")
    print("| rounding | overflow | Melem/s | time vs bare round |")
    print("|---|---|---:|---:|")
    for q, o, sec in rows:
        print(f"| {q} | {o} | {args.n / sec / 1e6:.0f} | {sec / base:.1f}x |")
    print(f"\nmachine: {_cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"Python {platform.python_version()}")


if __name__ == "__main__":
    main()
