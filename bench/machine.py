"""What the bench scripts print about the machine they ran on (figures mean nothing without it)."""
from __future__ import annotations

import os
import platform
import subprocess


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    """The 1/5/15-minute load averages: other work on the cores skews every timing."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def compiler() -> str:
    try:
        return subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "g++ not found"


def fused_kernel() -> int:
    """1 if the qfx_compile tree in use runs its fused C++ cast kernel (qfx/fused), else 0."""
    try:
        from qfx_compile.qfx import fused
    except ImportError:  # a tree before the kernel (--baseline)
        return 0
    return int(fused.kernel() is not None)
