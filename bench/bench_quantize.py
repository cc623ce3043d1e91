"""Throughput of qfx.quantize (exact ap_fixed cast) against a bare torch.round(x * s) / s.

Run: python bench/bench_quantize.py [--n 10000000] [--threads 2] [--repeat 5]
Prints a markdown table (Melem/s, median slowdown versus the bare round timed alternately) and the machine.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

if __package__ in (None, ""):  # run as a script from a checkout
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402  (bench/machine.py: CPU model, load, compiler)
from qfx_compile.qfx.quantize import quantize
from qfx_compile.fixed.types import ROUNDING_MODES, FixedType


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _paired(fn, base, repeat: int) -> tuple[float, float]:
    """Median seconds of ``fn`` and median ratio fn / base, the two timed alternately (shared load)."""
    fn(), base()  # warm up
    ts, ratios = [], []
    for _ in range(repeat):
        b, t = _time(base), _time(fn)
        ts.append(t)
        ratios.append(t / b)
    return statistics.median(ts), statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, generator=gen, dtype=torch.float32) * 4
    s = 2.0 ** 5
    load0 = machine.load()

    def bare():
        return torch.round(x * s) / s

    rows = [("bare `torch.round(x * s) / s`", "-", *_paired(bare, bare, args.repeat))]
    with torch.no_grad():
        for o in ("AP_SAT", "AP_WRAP"):
            for q in ROUNDING_MODES:
                t = FixedType(8, 3, True, q, o)
                rows.append((q, o, *_paired(lambda: quantize(x, t), bare, args.repeat)))
    print(f"qfx.quantize on {args.n:,} float32 elements, ap_fixed<8,3,Q,O>, {args.threads} threads, "
          f"median of {args.repeat}, each run alternated with the bare round\n")
    print("| rounding | overflow | Melem/s | time vs bare round |")
    print("|---|---|---:|---:|")
    for q, o, sec, ratio in rows:
        print(f"| {q} | {o} | {args.n / sec / 1e6:.0f} | {ratio:.1f}x |")
    print(f"\nmachine: {machine.cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"Python {platform.python_version()}, load average {load0} -> {machine.load()}")


if __name__ == "__main__":
    main()
