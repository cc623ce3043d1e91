"""Builds and runs the generated testbench (``make csim``) and reads its verdict.

Every tool's exit status is checked: a failed build is a :class:`CsimError`
carrying the compiler's messages; a testbench run yields a :class:`CsimResult`
whose ``ok`` is true only when the final line says ``N passed, 0 failed``
with N equal to the number of vectors *and* the exit status is 0.

The testbench spreads the vectors over the machine's cores (one forked process
per contiguous range, reports merged in vector order); ``run(workers=n)`` sets
how many (``QFX_CSIM_JOBS``; 1 = one process).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .toolchain import ToolchainError, find_ap_types, find_cxx

_SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed\s*$")


class CsimError(RuntimeError):
    """The C simulation could not be built or run."""


@dataclasses.dataclass
class CsimResult:
    passed: int
    failed: int
    exit_code: int
    expected_vectors: int | None
    build_s: float
    run_s: float
    output: str

    @property
    def ok(self) -> bool:
        return (self.exit_code == 0 and self.failed == 0 and self.passed > 0 and
                (self.expected_vectors is None or self.passed == self.expected_vectors))

    @property
    def vectors_per_s(self) -> float:
        """Vectors simulated per second of testbench run time (reading the files included)."""
        n = self.passed + self.failed
        return n / self.run_s if n and self.run_s > 0 else 0.0

    def mismatch_lines(self, n: int = 10) -> list[str]:
        return [ln for ln in self.output.splitlines() if ln.startswith("MISMATCH")][:n]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "failed": self.failed, "exit_code": self.exit_code, "ok": self.ok,
                "build_s": round(self.build_s, 2), "run_s": round(self.run_s, 3),
                "vectors_per_s": round(self.vectors_per_s, 1),
                "first_mismatches": self.mismatch_lines()}


def parse_summary(output: str) -> tuple[int, int] | None:
    """The last ``N passed, M failed`` line of the testbench output, or None."""
    found = None
    for line in output.splitlines():
        m = _SUMMARY.match(line.strip())
        if m:
            found = (int(m.group(1)), int(m.group(2)))
    return found


def _make() -> str:
    path = shutil.which("make")
    if path is None:
        raise ToolchainError("'make' not found on PATH: install make (Debian: apt-get install make)")
    return path


def build(project: str | Path, *, jobs: int | None = None, timeout: float = 1800, env: dict | None = None) -> float:
    """``make csim-build``; returns the seconds it took. Raises :class:`CsimError` on failure."""
    project = Path(project)
    e = dict(os.environ if env is None else env)
    e.setdefault("AP_TYPES", str(find_ap_types()))
    e.setdefault("CXX", find_cxx())
    jobs = jobs or max(1, min(os.cpu_count() or 1, 8))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([_make(), "-s", f"-j{jobs}", "csim-build"], cwd=project, capture_output=True,
                              text=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired as ex:
        raise CsimError(f"building the C simulation in {project} took more than {timeout:.0f} s") from ex
    if proc.returncode != 0:
        raise CsimError(f"building the C simulation in {project} failed (make exit {proc.returncode}):\n"
                        f"{(proc.stdout + proc.stderr)[-4000:]}")
    return time.perf_counter() - t0


def run(project: str | Path, *, expected_vectors: int | None = None, timeout: float = 1800,
        inputs: str | None = None, expected: str | None = None, build_s: float = 0.0,
        workers: int | None = None) -> CsimResult:
    """Runs the built testbench binary; never raises on mismatches (see ``CsimResult.ok``).

    ``workers``: processes the testbench forks (default: ``$QFX_CSIM_JOBS``, else one per core)."""
    project = Path(project)
    exe = project / "build" / "csim"
    if not exe.is_file():
        raise CsimError(f"{exe} does not exist: build it first (make csim-build)")
    cmd = [str(exe.resolve()), inputs or "tb_data/inputs.txt", expected or "tb_data/expected.txt"]
    t0 = time.perf_counter()
    env = None
    if workers is not None:
        env = dict(os.environ, QFX_CSIM_JOBS=str(int(workers)))
    try:
        proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as ex:
        raise CsimError(f"the testbench in {project} ran longer than {timeout:.0f} s") from ex
    run_s = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    summary = parse_summary(proc.stdout)
    if summary is None:
        passed, failed = 0, 0
        if proc.returncode == 0:
            # a testbench that exits 0 without a verdict is itself a failure
            return CsimResult(0, 0, 3, expected_vectors, build_s, run_s, out)
    else:
        passed, failed = summary
    return CsimResult(passed, failed, proc.returncode, expected_vectors, build_s, run_s, out)


def build_and_run(project: str | Path, *, expected_vectors: int | None = None, jobs: int | None = None) -> CsimResult:
    b = build(project, jobs=jobs)
    return run(project, expected_vectors=expected_vectors, build_s=b)
