"""Benchmark: qfx-compile --explore, default design vs searched design, and the search's own time.

Models: the MNIST demo's SmallResNet (examples/common.py) with the demo's 8-bit types
(examples/mnist_qfx.py CONFIGS["8bit"]) and the CIFAR-shaped ResNet-20 of bench/bench_compile.py.
Both are untrained and calibrated on random inputs: the estimates depend on the architecture and
the types, not on accuracy. For each target: the compiler's default design (reuse for 80% of the
DSPs, mul_impl auto) and the searched one (default budget: 80% of DSP, LUT, FF, BRAM18), priced by
backend/estimate.py with the same accounting (datapath + LUTRAM of small constants + FIFOs; BRAM18 of
the constants and of the FIFOs), and each design's share of the part's roofline (estimate.Roofline: DSPs x
products per DSP + LUTs / LUTs per product, per clock; achieved = MACs per sample x samples/s). Then the search
time on ResNet-20 for zcu102 (median of --repeat runs).

Usage: python bench/bench_explore.py [--out build/bench_explore] [--repeat 5] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
import torch  # noqa: E402

import machine  # noqa: E402
from qfx_compile import qfx  # noqa: E402
from qfx_compile.backend.explore import ExploreError, explore  # noqa: E402
from qfx_compile.frontend import load_model  # noqa: E402
from qfx_compile.ir.passes import run_default_passes  # noqa: E402
from qfx_compile.targets import get_target  # noqa: E402

TARGETS = ("pynq-z2", "ultra96", "kv260", "zcu102")


def mnist_model():
    from common import SmallResNet, bits_config
    torch.manual_seed(0)
    m = qfx.quantize_model(SmallResNet().train(), bits_config(8, unsigned_relu=True))
    data = torch.rand((256, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    qfx.calibrate(m, data)
    return m.eval(), data[:2]


def resnet20_model():
    from bench_compile import ResNet20
    torch.manual_seed(0)
    m = ResNet20()
    data = torch.randn((64, 3, 32, 32), generator=torch.Generator().manual_seed(1)).clamp(-3.5, 3.5)
    qfx.calibrate(m, data)
    return m.eval(), data[:2]


def fmt(d) -> dict:
    return None if d is None else {"dsp": d.dsp, "lut": d.lut, "bram18": d.bram18,
                                   "samples_per_s": round(d.samples_per_s), "latency_cycles": d.latency,
                                   "macs_per_s": round(d.macs_per_s),
                                   "roofline_share": d.roofline_share}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/bench_explore")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    rows, graphs = [], {}
    for name, build in (("MNIST demo ResNet (8-bit)", mnist_model), ("ResNet-20 CIFAR (8-bit)", resnet20_model)):
        model, x = build()
        path = qfx.export_onnx(model, x, str(out / (name.split()[0].lower() + ".onnx")))
        g = run_default_passes(load_model(path))
        graphs[name] = g
        for tn in TARGETS:
            try:
                r = explore(g, get_target(tn))
            except ExploreError as e:
                rows.append({"model": name, "target": tn, "default": None, "searched": None, "error": str(e)})
                continue
            rows.append({"model": name, "target": tn, "default": fmt(r.default), "default_error": r.default_error,
                         "searched": fmt(r.chosen), "search_s": round(r.seconds, 3),
                         "roofline": r.roofline.as_dict()})
    times = []
    g = graphs["ResNet-20 CIFAR (8-bit)"]
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        explore(g, get_target("zcu102"))
        times.append(time.perf_counter() - t0)
    mline = (f"{machine.cpu_model()}; {os.cpu_count()} CPUs visible; load {machine.load()}; "
             f"Python {platform.python_version()}")

    def cell(d):
        return f"{d['dsp']:,} | {d['lut']:,} | {d['bram18']} | {d['samples_per_s']:,} | {d['roofline_share']:.2%}"

    def peak(r):
        rf = r.get("roofline")
        return "" if rf is None else (f"{rf['peak_macs_per_s'] / 1e9:,.0f} ({rf['products_per_dsp']}/DSP, "
                                      f"{rf['luts_per_product']} LUT)")

    print("| model | target | roofline GMAC/s | default DSP | LUT | BRAM18 | samples/s | roofline | searched DSP | "
          "LUT | BRAM18 | samples/s | roofline |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        d = cell(r["default"]) if r["default"] else "does not fit | | | |"
        sch = cell(r["searched"]) if r["searched"] else "does not fit | | | |"
        print(f"| {r['model']} | {r['target']} | {peak(r)} | {d} | {sch} |")
    for r in rows:
        if r.get("error"):
            print(f"\n{r['model']} on {r['target']}: {r['error']}")
    print(f"\nsearch time, ResNet-20 on zcu102: median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, {a.repeat} runs)")
    print(f"machine: {mline}")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "search_s": times, "machine": mline}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
