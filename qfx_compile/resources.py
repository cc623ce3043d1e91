"""Locations of the packaged Jinja2 templates and HLS kernel headers.

In the repository they live at the top level (``templates/``, ``hls_lib/``);
a wheel ships them as ``qfx_compile.templates`` and ``qfx_compile.hls_lib``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _locate(package: str, repo_dir: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if Path(loc).is_dir():
                return Path(loc)
    p = _REPO_ROOT / repo_dir
    if p.is_dir():
        return p
    raise FileNotFoundError(f"cannot find the {repo_dir}/ folder of qfx-compile (reinstall the package)")


def templates_dir() -> Path:
    return _locate("qfx_compile.templates", "templates")


def hls_lib_dir() -> Path:
    return _locate("qfx_compile.hls_lib", "hls_lib")
