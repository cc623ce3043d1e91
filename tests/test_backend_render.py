"""Rendering: determinism, atomic writes, OUTDIR refusal / --force, adversarial names from the ONNX file."""
from pathlib import Path

import onnx
import pytest

from qfx_compile.backend import csim, names
from qfx_compile.backend.outdir import MARKER
from qfx_compile.cli import main

pytestmark = pytest.mark.xdist_group("backend")


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model

    return Path(export_zoo_model("mlp", tmp_path_factory.mktemp("mlp"), vectors=20))


def _tree(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_deterministic(mlp_onnx, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([str(mlp_onnx), "-o", str(a), "-q"]) == 0
    assert main([str(mlp_onnx), "-o", str(b), "-q"]) == 0
    ta, tb = _tree(a), _tree(b)
    assert ta.keys() == tb.keys() and ta == tb
    assert not any(str(k).startswith("build/") for k in ta)
    for k in ("Makefile", "build.tcl", "README.md", "report.json", MARKER, "tb/testbench.cpp",
              "tb_data/inputs.txt", "tb_data/expected.txt", "firmware/qfx_top.cpp", "firmware/parameters.h"):
        assert k in ta


def test_outdir_refusal_and_force(mlp_onnx, tmp_path):
    out = tmp_path / "user_dir"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main([str(mlp_onnx), "-o", str(out), "-q"]) == 2
    assert (out / "precious.txt").read_text() == "keep me" and not (out / MARKER).exists()
    # --force does not replace a folder qfx-compile did not write either
    assert main([str(mlp_onnx), "-o", str(out), "-q", "--force"]) == 2
    assert (out / "precious.txt").read_text() == "keep me" and not (out / MARKER).exists()
    # a folder we created is replaced without --force ...
    ours = tmp_path / "ours"
    assert main([str(mlp_onnx), "-o", str(ours), "-q"]) == 0
    assert main([str(mlp_onnx), "-o", str(ours), "-q", "--vectors", "3"]) == 0
    assert len((ours / "tb_data" / "inputs.txt").read_text().splitlines()) == 3
    # ... but never a file the user added to it: the run refuses and keeps it
    (ours / "notes.txt").write_text("mine")
    assert main([str(mlp_onnx), "-o", str(ours), "-q"]) == 2
    assert (ours / "notes.txt").read_text() == "mine"
    # an empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(mlp_onnx), "-o", str(empty), "-q"]) == 0
    # no temporary folders are left next to OUTDIR
    assert not [p for p in tmp_path.iterdir() if "qfx-tmp" in p.name or "qfx-old" in p.name]


def test_atomic_on_failure(mlp_onnx, tmp_path, monkeypatch):
    """A failure while writing leaves the previous project intact and no temporary folder."""
    from qfx_compile.backend import outdir as outdir_mod

    out = tmp_path / "prj"
    assert main([str(mlp_onnx), "-o", str(out), "-q"]) == 0
    before = _tree(out)
    real_open = open

    def failing_open(path, *a, **k):
        if str(path).endswith("README.md") and "qfx-tmp" in str(path):
            raise OSError("disk full (simulated)")
        return real_open(path, *a, **k)

    monkeypatch.setattr(outdir_mod, "open", failing_open, raising=False)
    assert main([str(mlp_onnx), "-o", str(out), "-q", "--vectors", "3"]) == 2  # an OS error is the user's: exit 2
    assert _tree(out) == before
    assert not [p for p in tmp_path.iterdir() if "qfx-" in p.name]


ADVERSARIAL = ['x"; system("rm -rf /"); //', "line1\nline2", "end */ int evil; /*", '#include "/etc/passwd"',
               "$(touch /tmp/pwned)", "`reboot`", "naïve-層-ñ", "N" * 10000, "a b", "a-b", "a.b", "a_b",
               "} ] ) ; \\", "class", "qfx_top"]


def _adversarial_model(src: Path, dst: Path) -> list[str]:
    m = onnx.load(str(src))
    g = m.graph
    used = []
    it = iter(ADVERSARIAL * 10)
    for n in g.node:
        n.name = next(it)
        used.append(n.name)
    # rename activation tensors (not initializers) consistently
    inits = {i.name for i in g.initializer}
    acts = []
    for n in g.node:
        for o in n.output:
            if o not in inits and o not in acts:
                acts.append(o)
    ren = {}
    for k, o in enumerate(acts):
        ren[o] = f"{ADVERSARIAL[(k + 3) % len(ADVERSARIAL)]}#{k}"
    for n in g.node:
        n.input[:] = [ren.get(i, i) for i in n.input]
        n.output[:] = [ren.get(o, o) for o in n.output]
    for vi in list(g.output) + list(g.value_info):
        vi.name = ren.get(vi.name, vi.name)
    g.name = "model */ $(x) \n `y`"
    onnx.save(m, str(dst))
    return used + list(ren.values()) + [g.name]


@pytest.mark.slow
def test_adversarial_names(mlp_onnx, tmp_path):
    bad = tmp_path / "bad.onnx"
    texts = _adversarial_model(mlp_onnx, bad)
    out = tmp_path / "prj"
    assert main([str(bad), "-o", str(out), "-q"]) == 0
    r = csim.build_and_run(out, expected_vectors=20, jobs=2)
    assert r.ok, r.output[-3000:]
    blobs = _tree(out)
    # '/' and spaces are kept in comments (names read as written), so 'rm -rf /' may appear inside a
    # comment; what could end the comment or start a string/command may not
    dangerous = ["*/", "$(", "`", "#include \"/etc", 'system("', "??", "\u5c64", "N" * 100]
    for name, data in blobs.items():
        if name.startswith("build/"):
            continue
        text = data.decode("ascii")  # every generated file is ASCII
        for d in ([] if name.startswith("firmware/hls_lib/") else dangerous):
            if d == "$(" and name == "Makefile":
                continue  # Make's own variables
            if d == "`" and name == "README.md":
                continue  # Markdown code spans written by the template
            assert d not in text, (name, d)
        for t in texts:
            # names that sanitizing must change (quotes, newlines, */, $, backticks, non-ASCII, ...) never
            # appear raw; plain punctuation such as 'a-b#6' or 'stem.0/Conv' may stand in a comment as written
            if len(t) > 3 and names.comment(t, 10**6) != t:
                assert t not in text, (name, t[:40])


def test_backend_refuses_graphs_the_passes_did_not_type(tmp_path):
    """Accumulator types and binary points come from the IR passes only: the backend never sizes them itself."""
    import numpy as np

    from qfx_compile.backend.plan import BackendError
    from qfx_compile.backend.project import compile_graph
    from qfx_compile.ir.graph import Const, Graph, Node, Tensor
    from qfx_compile.ir.passes import infer_shapes, run_default_passes
    from qfx_compile.fixed.types import FixedType as F

    w = Const(raw=np.arange(-6, 6).reshape(3, 4), type=F(4, 1))
    fc = Node("fc", "dense", ["x0"], ["y"], attrs={"out_type": F(8, 4, True, "AP_RND", "AP_SAT")}, params={"weight": w})
    q = Node("q", "quant", ["x"], ["x0"], attrs={"out_type": F(6, 2, True, "AP_RND_CONV", "AP_SAT")})
    g = Graph("tiny", ["x"], ["y"], [q, fc], {"x": Tensor("x", (4,)), "x0": Tensor("x0"), "y": Tensor("y")})
    with pytest.raises(BackendError, match="run_default_passes"):
        compile_graph(infer_shapes(g), tmp_path / "untyped", target="ultra96", vectors=2)
    assert not (tmp_path / "untyped").exists()
    res = compile_graph(run_default_passes(g), tmp_path / "typed", target="ultra96", vectors=2)
    assert (res.outdir / "firmware").is_dir()
