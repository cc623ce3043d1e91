"""Build the C-simulation testbenches of several projects at once (test suites): one ``make -j`` job server
runs every project's ``csim-build`` (the projects' Makefiles as generated), all sharing one precompiled
header of the ap_types headers, so both cores stay busy and nothing is compiled twice."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..backend.toolchain import find_ap_types

#: The flags of the precompiled header and of every translation unit (they must agree for g++ to use it).
FLAGS = "-std=c++14 -O1"


def precompiled_header(folder: Path) -> Path:
    """``folder/qfx_pch.h`` and its ``.gch`` (``folder`` without spaces: CXXFLAGS is split at spaces)."""
    pch = Path(folder) / "qfx_pch.h"
    pch.write_text("#include <ap_fixed.h>\n#include <ap_int.h>\n#include <hls_stream.h>\n")
    subprocess.run(["g++", *FLAGS.split(), "-isystem", str(find_ap_types()), "-x", "c++-header", str(pch), "-o",
                    str(pch) + ".gch"], check=True, timeout=300)
    return pch


def build_testbenches(outs, root: Path, pch: Path, jobs: int = 2, timeout: float = 1200) -> None:
    """``make csim-build`` in every project folder of ``outs`` (paths may hold spaces) under one
    ``make -j<jobs>`` started in ``root`` (a parent Makefile is written there); AssertionError with the
    output's tail when a build fails."""
    outs = list(outs)
    mk = ["all:" + "".join(f" p{i}" for i in range(len(outs)))]
    for i, out in enumerate(outs):
        mk.append(f"p{i}:\n\t+$(MAKE) -s -C '{out}' csim-build")
    (Path(root) / "Makefile").write_text("\n".join(mk) + "\n")
    env = dict(os.environ, AP_TYPES=str(find_ap_types()), CXXFLAGS=f"{FLAGS} -include {pch}")
    p = subprocess.run(["make", "-s", f"-j{jobs}"], cwd=root, capture_output=True, text=True, timeout=timeout,
                       env=env)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
