"""qfx.heap: the first QFX training forward sets glibc's heap thresholds, so that a training step reuses freed
memory instead of faulting fresh pages in; each check runs in a fresh process (the thresholds are per process)."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")

PROBE = r"""
import ctypes, json, torch
from qfx_compile.qfx import heap, nn as qnn

class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                  "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print(json.dumps({"skip": "no mallinfo2"}))
    raise SystemExit
libc.mallinfo2.restype = MI2
before = heap.status
conv = qnn.Conv2d(2, 3, 3).train()
conv(torch.randn(1, 2, 5, 5)).sum().backward()
mapped = libc.mallinfo2().hblkhd
t = torch.empty(4 << 20)  # 16 MiB: above glibc's starting mmap threshold, below the one set
grew = libc.mallinfo2().hblkhd - mapped
print(json.dumps({"before": before, "status": heap.status, "mapped": grew >= 16 << 20}))
"""


def _probe(**env):
    full = {**os.environ, **env}
    if "GLIBC_TUNABLES" not in env:
        full.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=full, timeout=300,
                         check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if "skip" in r:
        pytest.skip(r["skip"])
    return r


def test_first_training_forward_keeps_freed_memory_on_the_heap():
    """Before any QFX forward nothing is set; after a training step a 16 MiB tensor comes from the heap (glibc's
    starting thresholds would map it afresh)."""
    r = _probe(QFX_KEEP_FREED_MEMORY="1")
    assert r["before"] is None
    assert r["status"] == "applied"
    assert not r["mapped"]


def test_switched_off_by_the_environment():
    """QFX_KEEP_FREED_MEMORY=0 leaves glibc's thresholds alone: the same tensor is mapped afresh."""
    r = _probe(QFX_KEEP_FREED_MEMORY="0")
    assert r["status"] == "off: QFX_KEEP_FREED_MEMORY=0"
    assert r["mapped"]


def test_user_malloc_tunables_stand():
    """Where GLIBC_TUNABLES sets a malloc tunable, the user's setting stands (here: a 1 MiB mmap threshold)."""
    r = _probe(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576")
    assert r["status"] == "off: GLIBC_TUNABLES sets malloc tunables"
    assert r["mapped"]
