"""Benchmark: a cold ``qfx-compile`` (a fresh Python process) on the MNIST demo model, before and after.

"Before" is a git revision (default: 77945ea, the last commit before the torch-free core)
checked out into a temporary worktree; "after" is this working tree. Each run is a new
interpreter that imports the CLI, reads the model, runs the passes and writes the project
(no C simulation), so the figure includes import time: the compiler side no longer loads
torch. Runs alternate between the two, ``--repeat`` times each; the median is reported.

Usage: python bench/bench_cold_compile.py [--model build/demo/mnist_8bit.onnx] [--baseline 77945ea]
(the model is made with ``python examples/mnist_demo.py --out build/demo`` when missing).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/machine.py)

SCRIPT = ("import sys, time; t = time.perf_counter(); from qfx_compile.cli import main; "
          "rc = main([sys.argv[1], '-o', sys.argv[2], '-q', '--force']); "
          "print('torch' in sys.modules, file=sys.stderr); sys.exit(rc)")


def one_run(src: Path, model: Path, out: Path) -> tuple[float, bool]:
    env = dict(os.environ, PYTHONPATH=str(src))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(model), str(out)], cwd=src, env=env,
                       capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"qfx-compile failed in {src} (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return dt, p.stderr.strip().splitlines()[-1] == "True"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "build/demo/mnist_8bit.onnx")
    ap.add_argument("--baseline", default="77945ea")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    if not a.model.exists():
        subprocess.run([sys.executable, str(ROOT / "examples/mnist_demo.py"), "--out", str(a.model.parent)],
                       check=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), a.baseline],
                       check=True)
        try:
            times: dict[str, list[float]] = {"before": [], "after": []}
            torch_loaded = {}
            for _ in range(a.repeat):  # alternate, so load changes hit both alike
                for label, src in (("before", base), ("after", ROOT)):
                    dt, tl = one_run(src, a.model, Path(tmp) / f"out_{label}")
                    times[label].append(dt)
                    torch_loaded[label] = tl
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(f"machine: {machine.cpu_model()}, {os.cpu_count()} cores, load {machine.load()}")
    print(f"model: {a.model.name}; {a.repeat} cold runs each, alternating; median (min-max)")
    print("| code | cold qfx-compile | torch imported |")
    print("|---|---|---|")
    for label, rev in (("before", a.baseline), ("after", "this tree")):
        ts = times[label]
        print(f"| {label} ({rev}) | {statistics.median(ts):.2f} s ({min(ts):.2f}-{max(ts):.2f}) | "
              f"{'yes' if torch_loaded[label] else 'no'} |")


if __name__ == "__main__":
    main()
