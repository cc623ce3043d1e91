"""The long fuzz campaign (issue 9): N mutated models through the real CLI, a sample of the exit-0 projects
through ``make csim``; prints the table and writes it into README.md (section "Fuzzing").

    python bench/fuzz.py --cases 10000 --csim-every 40 --workers 2 [--readme]

Mutations and run options (per-layer --config, --explore): qfx_compile/testing/fuzz.py. Outcomes that count
as findings: any exit other than 0 or 2, a traceback or control character printed, exit 2 leaving OUTDIR
written or temporaries behind, exit 0 without a complete project, a sampled exit-0 project whose ``make csim``
fails to build, crashes or mismatches, and an exit-0 model whose ``qfx_compile.load(path).predict_raw`` /
``predict`` differ from the IR interpreter on random inputs (checked on every exit-0 case).
Failing cases are kept under --keep (default build/fuzz_findings) for reproduction.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
BASES = ("mlp", "cnn", "resnet", "per_channel", "khot_csd", "khot_binary", "khot_sp2", "all_modes")

_bases: dict[str, bytes] = {}


def _init(bases):
    _bases.update(bases)


def _work(args):
    i, seed, csim_every, keep, only = args
    from qfx_compile.testing import fuzz

    rng = random.Random(seed * 1_000_003 + i)
    names = sorted(_bases)
    base = names[(i + i // csim_every if csim_every else i) % len(names)]  # every base among the csim sample
    data, kinds = fuzz.make_case(_bases[base], rng, only)
    options = fuzz.make_options(data, kinds, rng)
    with tempfile.TemporaryDirectory(prefix="qfxfuzz") as d:
        o = fuzz.run_case(data, kinds, Path(d) / "c", options=options)
        csim = predict = None
        if o.rc == 0 and not o.problems:
            err = fuzz.check_predict(Path(d) / "c" / "case.onnx", rng)
            predict = "pass" if err is None else "fail"
            if err is not None:
                o.problems.append("predict: " + err)
        if o.rc == 0 and not o.problems and csim_every and i % csim_every == 0:
            err = fuzz.csim(o.project)
            csim = "pass" if err is None else "fail"
            if err is not None:
                o.problems.append("csim: " + err[-600:])
        if o.problems and keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / f"case{i}.onnx").write_bytes(data)
            (Path(keep) / f"case{i}.txt").write_text(f"{base} {kinds}\n" + "\n".join(o.problems) + "\n")
            if options["config"] is not None:
                (Path(keep) / f"case{i}.json").write_text(options["config"])
    return i, base, kinds, o.rc, csim, predict, o.problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--csim-every", type=int, default=40, help="make csim on every k-th case that exits 0")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", default=str(ROOT / "build" / "fuzz_findings"))
    ap.add_argument("--readme", action="store_true", help="write the table into README.md")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop after this long; the table then reports the cases that ran")
    ap.add_argument("--kinds", default=None, help="draw mutations only from these (comma-separated KINDS)")
    a = ap.parse_args(argv)

    import machine  # bench/machine.py

    def describe() -> str:
        return f"{machine.cpu_model()}, {os.cpu_count()} CPUs, load {machine.load()}, {machine.compiler()}"
    from qfx_compile.testing.models import export_zoo_model

    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        bases = {n: open(export_zoo_model(n, d, vectors=8), "rb").read() for n in BASES}
    only = a.kinds.split(",") if a.kinds else None
    from qfx_compile.testing.fuzz import KINDS
    if only and set(only) - set(KINDS):
        ap.error(f"--kinds: unknown {sorted(set(only) - set(KINDS))}; choose from {', '.join(KINDS)}")
    jobs = [(i, a.seed, a.csim_every, a.keep, only) for i in range(a.cases)]
    rcs, csims, predicts, findings, per_kind = Counter(), Counter(), Counter(), [], Counter()
    with mp.get_context("fork").Pool(a.workers, initializer=_init, initargs=(bases,)) as pool:
        for n, (i, base, kinds, rc, csim, predict, problems) in enumerate(pool.imap_unordered(_work, jobs,
                                                                                            chunksize=8)):
            rcs[rc] += 1
            if csim:
                csims[csim] += 1
            if predict:
                predicts[predict] += 1
            for k in set(kinds):
                per_kind[(k, rc)] += 1
            if problems:
                findings.append((i, base, kinds, problems))
            if (n + 1) % 250 == 0:
                print(f"{n + 1} cases, {dict(rcs)}, csim {dict(csims)}, predict {dict(predicts)}, "
                      f"findings {len(findings)}, "
                      f"{time.time() - t0:.0f} s", flush=True)
            if a.max_minutes is not None and time.time() - t0 > 60 * a.max_minutes:
                print(f"stopping after {a.max_minutes:g} minutes", flush=True)
                for w in pool._pool:  # SIGKILL: the CLI in a worker turns terminate()'s SIGTERM into exit 143
                    w.kill()
                pool.terminate()
                break
    wall = time.time() - t0
    done = sum(rcs.values())
    exit1 = sum(v for k, v in rcs.items() if k not in (0, 2))
    failing_builds = sum(1 for f in findings if any(p.startswith("csim") for p in f[3]))
    failing_predicts = sum(1 for f in findings if any(p.startswith("predict") for p in f[3]))
    kinds = sorted({k for k, _ in per_kind})
    rows = [
        "| cases | exit 0 | exit 2 | other exits (exit 1: bug) | exit 0 projects run through `make csim` "
        "| of those failing | `load(path).predict` checked against the interpreter | of those differing "
        "| other findings | wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {done:,} | {rcs[0]:,} | {rcs[2]:,} | {exit1} | {sum(csims.values())} | {failing_builds} | "
        f"{sum(predicts.values()):,} | {failing_predicts} | {len(findings) - failing_builds - failing_predicts} "
        f"| {wall / 60:.0f} min ({a.workers} workers) |",
        "",
        "| mutation | cases | exit 0 | exit 2 |",
        "|---|---:|---:|---:|",
    ] + [f"| {k} | {per_kind[(k, 0)] + per_kind[(k, 2)] + sum(v for (kk, rc), v in per_kind.items() if kk == k and rc not in (0, 2))} "
         f"| {per_kind[(k, 0)]} | {per_kind[(k, 2)]} |" for k in kinds]
    table = "\n".join(rows)
    print(describe())
    print(table)
    for f in findings[:20]:
        print("FINDING", f)
    if a.readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        block = (f"<!-- fuzz-table -->\n`python bench/fuzz.py --cases {a.cases} --seed {a.seed} --csim-every "
                 f"{a.csim_every} --workers {a.workers}"
                 + (f" --max-minutes {a.max_minutes:g}" if a.max_minutes else "")
                 + (f" --kinds {a.kinds}" if a.kinds else "")
                 + f"` on {describe()}:\n\n{table}\n<!-- /fuzz-table -->")
        # the latest campaign's block; the earlier campaigns' text stays as written
        block = block.replace("fuzz-table -->", "fuzz-latest -->")
        if "<!-- fuzz-latest -->" in text:
            text = re.sub(r"<!-- fuzz-latest -->.*?<!-- /fuzz-latest -->", lambda _: block, text, flags=re.S)
            readme.write_text(text)
        elif "<!-- /fuzz-table -->" in text and "\n## Layout" in text:
            readme.write_text(text.replace("\n## Layout", f"\n{block}\n\n## Layout", 1))
        else:
            print("README.md has no <!-- fuzz-table --> marker; table not written")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
