"""Benchmark: ResNet-20 C simulation before and after the native-mantissa kernels and the parallel testbench.

One generated project, built twice in the same run: "before" with every hls_lib header and the testbench
template of git revision --before (default: the commit before the C simulation work), "after" as
generated from the working tree.
Both builds use the project's Makefile, "before" with rev's default CXXFLAGS; runs alternate, median of --reps:
before (one process, as it was), after in one process (QFX_CSIM_JOBS=1), after on all cores.
Every run must print "N passed, 0 failed". Wall time and CPU time (the testbench and its workers,
getrusage) are both reported: on a shared machine the CPU time is the steadier figure.
Usage: python bench/bench_csim.py [--vectors 100] [--reps 3] [--before 0f47834] [--out build/bench_csim]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import machine  # noqa: E402
from bench_compile import calibrated_resnet20, machine_line  # noqa: E402


def git_show(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def before_files(rev: str) -> list[str]:
    """Every header of hls_lib at rev (kernels, casts, helpers): the C simulation as it was. Headers added
    later stay in the copy but are not included by rev's qfx.h."""
    out = subprocess.run(["git", "ls-tree", "--name-only", rev, "hls_lib/"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return [n for n in out if n.endswith(".h")]


ZERO = "template <class T>\ninline T zero() {\n    return from_raw<T>(0);\n}\n\n"


def make_before(after: Path, before: Path, rev: str) -> None:
    """A copy of the project with rev's hls_lib headers, rev's testbench template rendered in and rev's
    default compiler flags in its Makefile."""
    import jinja2

    if before.exists():
        shutil.rmtree(before)
    shutil.copytree(after, before, ignore=shutil.ignore_patterns("build"))
    for n in before_files(rev):
        text = git_show(rev, n)
        if n == "hls_lib/qfx_types.h" and "inline T zero()" not in text:
            # headers added later (qfx_straight.h, which every project's qfx_gen.h includes) use zero<T>()
            text = text.replace("}  // namespace qfx", ZERO + "}  // namespace qfx")
        (before / "firmware" / "hls_lib" / Path(n).name).write_text(text)
    rep = json.loads((after / "report.json").read_text())
    out_t = rep["output"]["type"]
    width = int(out_t.split("<")[1].split(",")[0])
    top = next(p.stem for p in (after / "firmware").glob("*.h")
               if p.read_text().lstrip().startswith(f"// {p.stem}.h: the top function"))
    tb = jinja2.Template(git_show(rev, "templates/tb/testbench.cpp.j2")).render(
        top=top, output={"signed": out_t.startswith("ap_fixed"), "width": width})
    (before / "tb" / "testbench.cpp").write_text(tb)
    flags = next(ln for ln in git_show(rev, "templates/Makefile.j2").splitlines() if ln.startswith("CXXFLAGS ?="))
    mk = before / "Makefile"
    mk.write_text("\n".join(flags if ln.startswith("CXXFLAGS ?=") else ln for ln in mk.read_text().splitlines()) + "\n")


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def build(project: Path, jobs: int) -> tuple[float, float]:
    from qfx_compile.backend.toolchain import find_ap_types

    env = dict(os.environ, AP_TYPES=str(find_ap_types()))
    subprocess.run(["make", "clean"], cwd=project, capture_output=True, env=env)
    c0, t0 = cpu_children(), time.perf_counter()
    p = subprocess.run(["make", "-s", f"-j{jobs}", "csim-build"], cwd=project, capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"build of {project} failed:\n{(p.stdout + p.stderr)[-3000:]}")
    return time.perf_counter() - t0, cpu_children() - c0


def run(project: Path, n: int, workers: int | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the testbench and its workers)."""
    env = dict(os.environ)
    if workers is not None:
        env["QFX_CSIM_JOBS"] = str(workers)
    c0, t0 = cpu_children(), time.perf_counter()
    p = subprocess.run(["./build/csim"], cwd=project, capture_output=True, text=True, env=env)
    dt, cpu = time.perf_counter() - t0, cpu_children() - c0
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode or last != f"{n} passed, 0 failed":
        raise SystemExit(f"{project}: {last or p.stderr[-2000:]}")
    return dt, cpu


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="make -j for the builds")
    ap.add_argument("--before", default="0f47834", help="git revision of the 'before' kernels and testbench")
    ap.add_argument("--out", default="build/bench_csim")
    ap.add_argument("--target", default="zcu102")
    a = ap.parse_args()
    from qfx_compile.cli import main as cli_main
    from qfx_compile.qfx.export import export_onnx

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model, data = calibrated_resnet20()
    onnx_path = export_onnx(model, data[:4], str(out / "resnet20.onnx"), vectors=a.vectors)
    after = out / "after"
    if cli_main([onnx_path, "--target", a.target, "-o", str(after), "--force", "-q", "--vectors", str(a.vectors)]):
        return 1
    before = out / "before"
    make_before(after, before, a.before)
    builds = {"before": [], "after": []}
    for _ in range(2):  # alternated
        builds["before"].append(build(before, a.jobs))
        builds["after"].append(build(after, a.jobs))
    cores = os.cpu_count() or 1
    runs = {"before (1 process)": [], "after (1 process)": [], f"after ({cores} processes)": []}
    for _ in range(a.reps):
        runs["before (1 process)"].append(run(before, a.vectors, 1))
        runs["after (1 process)"].append(run(after, a.vectors, 1))
        runs[f"after ({cores} processes)"].append(run(after, a.vectors, None))
    wall = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    base = a.vectors / wall["before (1 process)"]
    res = {
        "model": "ResNet-20 (3x32x32, 16/32/64 channels), zcu102 project", "vectors": a.vectors,
        "before_revision": a.before,
        "csim_build_wall_s": {k: round(statistics.median(t for t, _ in v), 1) for k, v in builds.items()},
        "csim_build_cpu_s": {k: round(statistics.median(c for _, c in v), 1) for k, v in builds.items()},
        "vectors_per_s_wall": {k: round(a.vectors / t, 1) for k, t in wall.items()},
        "vectors_per_cpu_s": {k: round(a.vectors / c, 1) for k, c in cpu.items()},
        "speedup_wall_vs_before": {k: round(a.vectors / t / base, 1) for k, t in wall.items()},
        "runs_wall_cpu_s": {k: [(round(t, 2), round(c, 2)) for t, c in v] for k, v in runs.items()},
        "machine": machine_line(), "load_after": machine.load(),
    }
    print(json.dumps(res, indent=2))
    (out / "bench_csim.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
