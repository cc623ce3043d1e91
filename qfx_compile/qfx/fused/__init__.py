"""The fused CPU cast kernel (``cast.cpp``, also eval max pooling and BatchNorm's training dx): built at first use, cached, optional.

``kernel()`` returns the loaded library, or None when it cannot be used: no C++
compiler (``$CXX``, else ``c++`` / ``g++`` / ``clang++`` on PATH), a failed build,
or ``QFX_FUSED=0`` in the environment. Callers then run the pure-torch kernels of
:mod:`..quantize`, which give identical results (tests/test_fused_cast.py).

The library is a plain C ABI called through ctypes (no Python headers, no torch
headers: a build takes seconds). It is compiled with ``-O3`` (OpenMP when the
compiler has it, AVX-512 and AVX2 clones on x86-64 GCC, picked at load by the CPU) into the user cache directory
(``$QFX_CACHE_DIR``, else ``$XDG_CACHE_HOME/qfx-compile``, else
``~/.cache/qfx-compile``) under a name hashing the source, the compiler's
version and the flags, so a changed source or compiler builds afresh and every
later process loads the cached file. Each call runs on torch's intra-op thread count, or on
``$QFX_FUSED_THREADS`` threads when set (the results do not depend on it). ``QFX_FUSED`` and
``QFX_FUSED_THREADS`` are read once, when the first caller asks for the kernel.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cast.cpp")
_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
_lock = threading.Lock()
_state: dict = {}


def cache_dir() -> Path:
    """Where built kernels are kept (see module doc)."""
    if os.environ.get("QFX_CACHE_DIR"):
        return Path(os.environ["QFX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qfx-compile"


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX`` if set (None if it does not run), else the first on PATH."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _build(cxx: str) -> Path:
    """The cached library for this source and compiler, built (with the most OpenMP the compiler has) if absent."""
    version = _run([cxx, "--version"]).stdout
    src = SOURCE.read_bytes()
    out_dir = cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    candidates = []
    for extra in (["-fopenmp"], ["-fopenmp-simd"], []):
        flags = _FLAGS + extra
        key = hashlib.sha256(src + version.encode() + " ".join(flags).encode() + platform.machine().encode())
        candidates.append((flags, out_dir / f"qfx_cast_{key.hexdigest()[:16]}.so"))
    for _, lib in candidates:
        if lib.exists():
            _state["built"] = False
            return lib
    for flags, lib in candidates:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            r = _run([cxx, *flags, str(SOURCE), "-o", tmp])
            if r.returncode == 0:
                os.replace(tmp, lib)  # atomic: a concurrent build of the same key writes the same file
                _state["built"] = True
                return lib
            _state["log"] = r.stderr
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError(f"building {SOURCE.name} with {cxx} failed:\n{_state.get('log', '')}")


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, i32, p = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.qfx_cast.argtypes = [p, p, i64, i32, i32, i32, i32, i32, i32, ctypes.c_double, i32, i32]
    lib.qfx_cast.restype = i32
    lib.qfx_add_cast.argtypes = [p, p, p, i64, i32, i32, i32, i32, i32, ctypes.c_double, i32, i32]
    lib.qfx_add_cast.restype = i32
    lib.qfx_cast_backward.argtypes = [p] * 4 + [i64, ctypes.c_float, ctypes.c_float] + [i32] * 4 + [p, p]
    lib.qfx_cast_backward.restype = None
    lib.qfx_bn_cast_backward.argtypes = [p] * 6 + [i64, i64, i64, ctypes.c_float, ctypes.c_float] + [i32] * 4 + [
        p, p, p]
    lib.qfx_bn_cast_backward.restype = None
    f64 = ctypes.c_double
    lib.qfx_bn_param_forward.argtypes = [p, i64, i32, f64, f64] + [p] * 8 + [i32, i64, i64, i32, i64, i64, i64] + [p] * 6
    lib.qfx_bn_param_forward.restype = i32
    lib.qfx_bn_param_backward.argtypes = [p] * 6 + [i64] * 4 + [p] * 3 + [i64, i64, i32] + [p] * 6
    lib.qfx_bn_param_backward.restype = None
    lib.qfx_maxpool2d.argtypes = [p, p, i32, i64] + [i32] * 11
    lib.qfx_maxpool2d.restype = None
    lib.qfx_bn_dx.argtypes = [p] * 6 + [i64, i64, i64, i32]
    lib.qfx_bn_dx.restype = None
    lib.qfx_affine_cast.argtypes = [p] * 4 + [i64, i64, i64, i32, i32, i32, i32, i32, ctypes.c_double, i32, i32]
    lib.qfx_affine_cast.restype = i32
    lib.qfx_bn_dx_cast_backward.argtypes = [p] * 7 + [i64, i64, i64, ctypes.c_float, ctypes.c_float, i32, i32, i32,
                                                    p]
    lib.qfx_bn_dx_cast_backward.restype = None
    lib.qfx_cast_channel_sums.argtypes = [p, p, i64, i64, i64, i32, i32, i32, i32, i32, ctypes.c_double, i32, p]
    lib.qfx_cast_channel_sums.restype = i32
    lib.qfx_pc_fq_forward.argtypes = [p] * 4 + [i64, i64, i64, i32, i64, i64]
    lib.qfx_pc_fq_forward.restype = None
    lib.qfx_pc_fq_backward.argtypes = [p] * 5 + [i64, i64, i64, i64, i64]
    lib.qfx_pc_fq_backward.restype = None
    return lib


def kernel() -> ctypes.CDLL | None:
    """The loaded kernel library, built on first use; None when unavailable (see module doc; the environment is
    read on the first call)."""
    lib = _state.get("lib", _state)
    if lib is not _state:
        return lib
    with _lock:
        if "lib" not in _state:
            lib = None
            cxx = compiler()
            threads = os.environ.get("QFX_FUSED_THREADS")
            _state["threads"] = int(threads) if threads else None
            if os.environ.get("QFX_FUSED", "1") == "0":
                _state["error"] = "QFX_FUSED=0 in the environment"
            elif cxx is not None:
                try:
                    path = _build(cxx)
                    lib = _bind(ctypes.CDLL(str(path)))
                    _state["path"] = path
                except (OSError, subprocess.SubprocessError) as e:
                    _state["error"] = str(e)
            else:
                _state["error"] = "no C++ compiler ($CXX, c++, g++ or clang++)"
            _state["lib"] = lib
    return _state["lib"]


def threads() -> int:
    """Threads for a kernel call: ``$QFX_FUSED_THREADS`` if it was set at the first :func:`kernel` call, else
    torch's intra-op count."""
    return _state.get("threads") or torch.get_num_threads()


def info() -> dict:
    """``{"path", "built" (compiled by this process), "error"}`` of the last :func:`kernel` call."""
    return {k: _state.get(k) for k in ("path", "built", "error")}


def f32(v: torch.Tensor) -> torch.Tensor:
    """``v`` as a contiguous float32 CPU tensor for a kernel to read through ``data_ptr``: ``v`` itself where it is
    one (no detached copy or view: the kernel only reads), else a converted copy."""
    if v.dtype == torch.float32 and v.is_contiguous():
        return v
    return v.detach().to(torch.float32).contiguous()


# torch's switch for deterministic mode's NaN fill (what torch.utils.deterministic.fill_uninitialized_memory reads
# and sets), called directly: empty() runs hundreds of times a training step
_get_fill = getattr(torch._C, "_get_deterministic_fill_uninitialized_memory", None)
_set_fill = getattr(torch._C, "_set_deterministic_fill_uninitialized_memory", None)


def unfilled(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with deterministic mode's NaN fill of fresh tensors off, for a call that writes
    every element of what it allocates (the fill would only be overwritten: the results are the same)."""
    if _get_fill is None or _set_fill is None or not _get_fill() or not torch.are_deterministic_algorithms_enabled():
        return fn(*args, **kwargs)
    _set_fill(False)
    try:
        return fn(*args, **kwargs)
    finally:
        _set_fill(True)


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty`` without the NaN fill of deterministic mode (for outputs a kernel writes in full)."""
    return unfilled(torch.empty, shape, dtype=dtype)


def max_pool2d(x: torch.Tensor, kernel_size, stride, padding) -> torch.Tensor | None:
    """Eval max pooling of a CPU float32 / float64 (N, C, H, W) or (C, H, W) tensor into float64 on the kernel:
    ``F.max_pool2d``'s values (padding never wins); None where the kernel does not apply."""
    lib = kernel()
    if lib is None or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() not in (3, 4):
        return None
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    h, w = x.shape[-2:]
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1 or not (0 <= ph <= kh // 2 and 0 <= pw <= kw // 2):
        return None  # torch's own message for bad geometry
    x = x.contiguous()
    out = empty(tuple(x.shape[:-2]) + (oh, ow), torch.float64)
    lib.qfx_maxpool2d(x.data_ptr(), out.data_ptr(), int(x.dtype == torch.float32), x.numel() // (h * w), h, w, kh, kw,
                      sh, sw, ph, pw, oh, ow, threads())
    return out


def bn_dx(g: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
          out: torch.Tensor | None = None) -> torch.Tensor:
    """``(x * b_c + c_c) + g * a_c`` for float32 (N, C, ...) ``g``, ``x`` and [C] ``a``, ``b``, ``c``, every
    operation rounded in float32 in that order: one pass on the kernel (CPU) into ``out`` (a contiguous float32
    tensor of x's shape) or a new tensor, else four torch passes (a new tensor)."""
    lib = kernel()
    shape = [1, -1] + [1] * (x.dim() - 2)
    if lib is None or x.device.type != "cpu" or x.dtype != torch.float32 or g.dtype != torch.float32:
        return (x * b.reshape(shape)).add_(c.reshape(shape)).add_(g * a.reshape(shape))
    g, x = g.contiguous(), x.contiguous()
    a, b, c = (f32(v) for v in (a, b, c))
    out = empty(x.shape, torch.float32) if out is None else out
    n, ch = x.shape[0], x.shape[1]
    lib.qfx_bn_dx(g.data_ptr(), x.data_ptr(), a.data_ptr(), b.data_ptr(), c.data_ptr(), out.data_ptr(), n, ch,
                  x.numel() // max(1, n * ch), threads())
    return out
