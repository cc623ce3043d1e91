"""A non-editable install ships templates/ and hls_lib/ and finds them at run time."""
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("packaging")


def test_every_subpackage_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qfx_compile").rglob("__init__.py")}
    missing = found - listed
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("src")
    # Build from a copy so that the checkout's build/ and egg-info stay untouched.
    subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                   capture_output=True)
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            dst = build / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(build)], check=True)
    (whl,) = out.glob("qfx_compile-*.whl")
    return whl


def test_wheel_contains_templates_and_kernels(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    repo_templates = sorted(p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*.j2"))
    repo_kernels = sorted(p.relative_to(ROOT / "hls_lib").as_posix() for p in (ROOT / "hls_lib").rglob("*.h"))
    assert repo_templates and repo_kernels
    for t in repo_templates:
        assert f"qfx_compile/templates/{t}" in names
    for k in repo_kernels:
        assert f"qfx_compile/hls_lib/{k}" in names


def test_installed_wheel_finds_its_resources(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    code = ("from qfx_compile import resources as r; import sys; "
            "print(r.templates_dir()); print(r.hls_lib_dir())")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    assert all(Path(p).resolve().is_relative_to(target.resolve()) for p in out), out
    assert (Path(out[1]) / "qfx.h").is_file()
