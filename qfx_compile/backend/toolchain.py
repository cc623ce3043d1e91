"""Finds the Xilinx ap_types headers and compiles C++ against them with g++.

Search order for the headers (the directory holding ``ap_fixed.h``):

1. ``$QFX_AP_TYPES`` (an explicit override),
2. ``$XILINX_HLS/include`` (a Vitis HLS install),
3. ``hls4ml/templates/vivado/ap_types`` inside the installed ``hls4ml`` package
   (Xilinx's open-source HLS_arbitrary_Precision_Types, Apache-2.0).

The headers are never copied into this repository or into generated projects.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path


class ToolchainError(RuntimeError):
    """A required external tool or header set is missing or failed."""


def find_ap_types() -> Path:
    """Directory that contains ``ap_fixed.h``; raises :class:`ToolchainError` with what to do."""
    tried = []
    override = os.environ.get("QFX_AP_TYPES")
    if override:
        p = Path(override)
        if (p / "ap_fixed.h").is_file():
            return p
        tried.append(f"$QFX_AP_TYPES={override}")
    xilinx = os.environ.get("XILINX_HLS")
    if xilinx:
        p = Path(xilinx) / "include"
        if (p / "ap_fixed.h").is_file():
            return p
        tried.append(f"$XILINX_HLS/include={p}")
    spec = importlib.util.find_spec("hls4ml")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            p = Path(root) / "templates" / "vivado" / "ap_types"
            if (p / "ap_fixed.h").is_file():
                return p
            tried.append(str(p))
    else:
        tried.append("the hls4ml package (not installed)")
    raise ToolchainError(
        "cannot find the Xilinx ap_types headers (ap_fixed.h). Looked in: " + "; ".join(tried) +
        ". Install them with 'pip install hls4ml' (they ship inside it), set XILINX_HLS to a Vitis HLS "
        "install, or point QFX_AP_TYPES at a directory holding ap_fixed.h.")


def find_cxx() -> str:
    cxx = os.environ.get("CXX") or "g++"
    path = shutil.which(cxx)
    if path is None:
        raise ToolchainError(f"C++ compiler {cxx!r} not found on PATH: install g++ (Debian: apt-get install g++)")
    return path


def compile_cpp(sources: list[str | Path], output: str | Path, *, include_dirs: list[str | Path] = (),
                opt: str = "-O1", std: str = "c++14", extra_flags: list[str] = (), timeout: float = 1800,
                cwd: str | Path | None = None) -> Path:
    """Compile and link ``sources`` into ``output`` with the ap_types headers on the include path.

    Raises :class:`ToolchainError` with the compiler's messages when it fails.
    """
    cmd = [find_cxx(), f"-std={std}", opt, "-I", str(find_ap_types())]
    for d in include_dirs:
        cmd += ["-I", str(d)]
    cmd += list(extra_flags) + [str(s) for s in sources] + ["-o", str(output)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise ToolchainError(f"g++ did not finish within {timeout:.0f} s: {' '.join(cmd)}") from e
    if proc.returncode != 0:
        raise ToolchainError(f"g++ failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(output)


def compile_cached(sources: dict[str, str], build_dir: str | Path, name: str, *, opt: str = "-O0",
                   std: str = "c++14", extra_flags: list[str] = (), jobs: int = 2,
                   timeout: float = 1800) -> Path:
    """Compile generated C++ (``{file name: text}``) once; reuse the binary while nothing changed.

    The binary lives in ``build_dir/<name>-<hash>/<name>``, the hash covering the
    sources, the flags, the compiler and the header directory, so any change
    rebuilds. Translation units are compiled in parallel (``jobs``), then linked.
    The result is moved into place atomically, so concurrent callers are safe.
    """
    import concurrent.futures
    import hashlib
    import tempfile

    cxx, headers = find_cxx(), find_ap_types()
    h = hashlib.sha256()
    for part in [cxx, str(headers), opt, std, *extra_flags]:
        h.update(part.encode() + b"\0")
    for fname in sorted(sources):
        h.update(fname.encode() + b"\0" + sources[fname].encode() + b"\0")
    final_dir = Path(build_dir) / f"{name}-{h.hexdigest()[:16]}"
    binary = final_dir / name
    if binary.is_file():
        return binary
    Path(build_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=build_dir))
    try:
        paths = []
        for fname, text in sources.items():
            (tmp / fname).write_text(text)
            paths.append(tmp / fname)
        cpp = [p for p in paths if p.suffix in (".cpp", ".cc", ".cxx")]
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            objs = list(pool.map(
                lambda p: compile_cpp([p], p.with_suffix(".o"), include_dirs=[tmp], opt=opt, std=std,
                                      extra_flags=["-c", *extra_flags], timeout=timeout), cpp))
        compile_cpp(objs, tmp / name, opt=opt, std=std, timeout=timeout)
        try:
            tmp.rename(final_dir)
        except OSError:  # another process finished first: use its binary
            if not binary.is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return binary
