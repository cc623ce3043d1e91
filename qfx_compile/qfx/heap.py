"""glibc's heap thresholds for training on CPU: freed memory reused instead of fresh pages faulted in.

glibc's malloc serves requests above its mmap threshold with fresh mappings, and returns the top of its heap to
the system once more than its trim threshold is free there (``mallopt(3)``). Both thresholds start small
(128 KiB) and grow only with chunks the process maps and frees. A QFX training step leaves few freed temporaries
in its forward (the casts are fused), so each convolution's gradients in the backward grow the heap top, and the
next layer's node frees that memory again: under the starting thresholds those pages went back to the system and
were faulted in again every step, up to tens of thousands of page faults per ResNet-20 step (README, "Page
faults and the allocator").

:func:`keep_freed_memory` sets the mmap threshold to 32 MiB (the largest value glibc's own rule reaches) and the
trim threshold to 64 MiB (twice that, as that rule sets it). Tensors up to 32 MiB then come from the heap, and at
most 64 MiB of free heap top is kept instead of being returned. The first training or calibration forward of a
QFX layer calls it (``QFXModule``). It does nothing where the C library is not glibc, where ``GLIBC_TUNABLES``
already sets a malloc tunable (the user's choice stands), or where ``QFX_KEEP_FREED_MEMORY=0``. It changes how
fast steps run, never a value.
"""
from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h

#: The outcome of the first call (None before it): "applied", or why not.
status: str | None = None


def keep_freed_memory() -> str:
    """Set glibc's mmap and trim thresholds for this process (module doc), once; returns the outcome: "applied",
    or the reason it was not (the environment is read at the first call)."""
    global status
    if status is None:
        status = _apply()
    return status


def _apply() -> str:
    if os.environ.get("QFX_KEEP_FREED_MEMORY", "1") == "0":
        return "off: QFX_KEEP_FREED_MEMORY=0"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "off: GLIBC_TUNABLES sets malloc tunables"
    try:
        libc = ctypes.CDLL(None)
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return "off: the C library is not glibc"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "off: mallopt refused the thresholds"
    return "applied"
