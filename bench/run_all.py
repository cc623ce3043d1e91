"""Run every benchmark in bench/ in turn (``make bench``), each as its own process with its defaults.

Each script prints its machine line and its table (the README's figures come from these
runs). ``--list`` shows the scripts; ``--only NAME ...`` runs some of them. The long
campaigns (the 10,000-case fuzzer, the yosys calibration sweep) are left out unless
``--all`` is given. A script that fails is reported and the others still run; the exit
status is the number of failures (0: all ran).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Scripts that take long (minutes to an hour on 2 cores): run with --all or --only.
LONG = {"fuzz.py", "calibrate_yosys.py"}
#: Not benchmarks: helpers imported by the scripts.
HELPERS = {"machine.py", "baseline.py", "run_all.py"}


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name not in HELPERS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="list the benchmark scripts and exit")
    ap.add_argument("--all", action="store_true", help=f"include the long ones ({', '.join(sorted(LONG))})")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (name with or without .py)")
    a = ap.parse_args()
    todo = scripts()
    if a.list:
        for p in todo:
            doc = (p.read_text(encoding="utf-8").split('"""')[1].strip().splitlines() or [""])[0]
            print(f"{p.name:<24} {'(long) ' if p.name in LONG else ''}{doc}")
        return 0
    if a.only:
        want = {n if n.endswith(".py") else n + ".py" for n in a.only}
        unknown = want - {p.name for p in todo}
        if unknown:
            print(f"no such benchmark: {', '.join(sorted(unknown))}; see --list", file=sys.stderr)
            return 2
        todo = [p for p in todo if p.name in want]
    elif not a.all:
        todo = [p for p in todo if p.name not in LONG]
    failed = []
    for p in todo:
        print(f"\n===== {p.name}", flush=True)
        t = time.time()
        rc = subprocess.run([sys.executable, str(p)], cwd=HERE.parent).returncode
        print(f"===== {p.name}: exit {rc}, {time.time() - t:.0f} s", flush=True)
        if rc != 0:
            failed.append(p.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
