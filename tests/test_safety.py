"""Issue 9 regressions, each through the CLI: every user-caused failure exits 2 with a printable message;
the output folder is replaced only when qfx-compile wrote it, never loses a user's file, never ends half
written or missing; the generated Makefile executes nothing from the environment."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from qfx_compile.cli import main

pytestmark = pytest.mark.xdist_group("backend")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model

    d = tmp_path_factory.mktemp("safety_zoo")
    return {name: Path(export_zoo_model(name, d, vectors=4)) for name in ("mlp", "cnn", "resnet")}


def _run(args, capsys):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "Traceback" not in text
    assert "\x1b" not in text and "\x07" not in text  # no escape sequence reaches the terminal
    return rc, cap.err, cap.out


def _edit(src: Path, dst: Path, fn) -> Path:
    m = onnx.load(str(src))
    fn(m)
    onnx.save(m, str(dst))
    return dst


def _set_attr(m, node_name, key, value):
    for n in m.graph.node:
        if n.name == node_name:
            for a in n.attribute:
                if a.name == key:
                    a.i = value
                    return
    raise AssertionError(f"no attribute {key} on {node_name}")


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".qfx-" in p.name)


# ------------------------------------------------------------- exit 2, never 1
def test_non_utf8_node_and_tensor_names(zoo, tmp_path, capsys):
    data = zoo["mlp"].read_bytes()
    for what, old, new in (("node", b"fc2/Gemm", b"fc2/G\xffmm"), ("tensor", b"relu1.out", b"relu1.o\xfft")):
        assert old in data
        p = tmp_path / f"{what}.onnx"
        p.write_bytes(data.replace(old, new))
        rc, err, _ = _run([p, "-o", tmp_path / f"o_{what}", "-q"], capsys)
        assert rc == 2, err
        assert "UTF-8" in err and f"{what}.onnx" in err and "\\xff" in err
        assert not (tmp_path / f"o_{what}").exists()


def test_derived_type_over_1024_bits(zoo, tmp_path, capsys):
    def wide(m):
        _set_attr(m, "fc1.out/FixedPoint", "width", 1020)
        _set_attr(m, "fc2.weight/FixedPoint", "width", 60)

    p = _edit(zoo["mlp"], tmp_path / "wide.onnx", wide)
    rc, err, _ = _run([p, "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2, err
    assert "fc2/Gemm" in err and "1024" in err


@pytest.mark.parametrize("bits", [63, 64, 1000])
def test_recip_bits_out_of_range(zoo, tmp_path, capsys, bits):
    p = _edit(zoo["cnn"], tmp_path / "r.onnx", lambda m: _set_attr(m, "pool2/AveragePool", "recip_bits", bits))
    rc, err, _ = _run([p, "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2, err
    assert "pool2/AveragePool" in err and "recip_bits" in err


def _drop_vectors(m):
    """Remove the stored test vectors (metadata ``qfx.vectors``) from model proto ``m``."""
    keep = [(p.key, p.value) for p in m.metadata_props if p.key != "qfx.vectors"]
    del m.metadata_props[:]
    for k, v in keep:
        m.metadata_props.add(key=k, value=v)


def test_wide_input_without_vectors(zoo, tmp_path, capsys):
    def f(m):
        _set_attr(m, "inp/FixedPoint", "width", 100)
        _drop_vectors(m)

    p = _edit(zoo["mlp"], tmp_path / "w.onnx", f)
    rc, err, _ = _run([p, "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2, err
    assert "64 bits" in err and not (tmp_path / "o").exists()


def test_markup_in_names_and_paths_is_plain_text(zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")

    def f(m):
        for n in m.graph.node:
            if n.name == "fc2/Gemm":
                n.name = "[bold red]fc2[/x]"

    p = _edit(zoo["mlp"], tmp_path / "m[bold]x[i].onnx", f)
    out = tmp_path / "x[/y]"
    rc, err, text = _run([p, "-o", out], capsys)  # with the progress display
    assert rc == 0, err
    assert "[bold red]fc2[/x]" in text  # shown as written, not interpreted
    assert str(out) in text and (out / "report.json").is_file()
    assert "x[/y]" in err and "m[bold]x[i].onnx" in err  # the progress lines name files literally


def test_escape_sequences_in_op_type_and_domain(zoo, tmp_path, capsys):
    def f(m):
        for n in m.graph.node:
            if n.name == "relu1/Relu":
                n.op_type = "Re\x1b[2J\x1b]0;owned\x07lu"
                n.domain = "\x1b[1;32mOK\x1b[0m"

    p = _edit(zoo["mlp"], tmp_path / "esc.onnx", f)
    rc, err, _ = _run([p, "-o", tmp_path / "o", "-q"], capsys)  # _run asserts no ESC/BEL in the output
    assert rc == 2
    assert "\\x1b[2J" in err and "relu1/Relu" in err


@pytest.mark.parametrize("text,word", [
    ("[" * 100000 + "]" * 100000, "deeper"),
    ('{"layers": ["fc1"]}', "'layers' must be an object"),
    ('{"layers": "fc1"}', "'layers' must be an object"),
    ('{"default": {"reuse": 1' + "0" * 5000 + "}}", "digits"),
    ('{"default": {"reuse": NaN}}', "JSON"),
    ('{"default": [1, 2]}', "must be an object"),
    ("\xff\xfe{", "UTF-8"),
])
def test_hostile_config_files(zoo, tmp_path, capsys, text, word):
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    rc, err, _ = _run([zoo["mlp"], "--config", cfg, "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2, err
    assert "cfg.json" in err and word in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------- the file system
def _fail_writes(monkeypatch, err_no, after=0):
    """Make the project writer's file writes fail with ``err_no`` after ``after`` files."""
    from qfx_compile.backend import outdir

    real = open
    count = {"n": 0}

    def fake(path, mode="r", *a, **k):
        if "w" in mode:
            count["n"] += 1
            if count["n"] > after:
                raise OSError(err_no, os.strerror(err_no), str(path))
        return real(path, mode, *a, **k)

    monkeypatch.setattr(outdir, "open", fake, raising=False)


@pytest.mark.parametrize("err_no,word", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission"), (errno.EFBIG, "file size limit")])
def test_os_errors_while_writing_leave_everything_as_it_was(zoo, tmp_path, capsys, monkeypatch, err_no, word):
    out = tmp_path / "prj"
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _fail_writes(monkeypatch, err_no, after=3)
    rc, err, _ = _run([zoo["mlp"], "-o", out, "-q"], capsys)
    assert rc == 2, err
    assert word in err and "Nothing was changed" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert _leftovers(tmp_path) == []


def test_file_size_limit_in_a_real_process(zoo, tmp_path):
    """ulimit -f: the kernel refuses the write (EFBIG); exit 2 and no temporary folder left."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
            "from qfx_compile.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "prj"
    p = subprocess.run([sys.executable, "-c", code, str(zoo["mlp"]), "-o", str(out), "-q"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "file size limit" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_outdir_is_the_current_folder_or_holds_the_model(zoo, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for args in (["-o", "."], ["-o", ".", "--force"], ["-o", str(tmp_path)], ["-o", "/", "--force"]):
        rc, err, _ = _run([zoo["mlp"], *args, "-q"], capsys)
        assert rc == 2, (args, err)
        assert "current folder" in err or "names no folder" in err
    assert (work / "notes.txt").read_text() == "mine"
    model = tmp_path / "inside" / "m.onnx"
    model.parent.mkdir()
    shutil.copy(zoo["mlp"], model)
    rc, err, _ = _run([model, "-o", model.parent, "--force", "-q"], capsys)
    assert rc == 2 and "model file" in err and model.is_file()


def test_second_run_on_the_same_folder_is_refused(zoo, tmp_path, capsys):
    from qfx_compile.backend import outdir

    out = tmp_path / "prj"
    code = ("import sys, time; from qfx_compile.backend import outdir; "
            "cm = outdir.lock(__import__('pathlib').Path(sys.argv[1])); cm.__enter__(); print('locked', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, err, _ = _run([zoo["mlp"], "-o", out, "-q"], capsys)
        assert rc == 2 and "another qfx-compile" in err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0  # the lock dies with its process
    assert outdir.MARKER in os.listdir(out)


# ------------------------------------------------------------- --force and user files
def test_force_never_replaces_a_folder_it_did_not_write(zoo, tmp_path, capsys):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("secret")
    rc, err, _ = _run([zoo["mlp"], "-o", home, "--force", "-q"], capsys)
    assert rc == 2 and "not written by qfx-compile" in err and "even with --force" in err
    assert (home / ".ssh" / "id_rsa").read_text() == "secret"
    link = tmp_path / "link"
    link.symlink_to(home)
    rc, err, _ = _run([zoo["mlp"], "-o", link, "--force", "-q"], capsys)
    assert rc == 2 and "symbolic link" in err and link.is_symlink()


def test_user_edits_and_added_files_are_never_lost(zoo, tmp_path, capsys):
    out = tmp_path / "prj"
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    # a re-run over an untouched project replaces it silently
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    tb = out / "tb" / "testbench.cpp"
    tb.write_text(tb.read_text() + "\n// my change\n")
    rc, err, _ = _run([zoo["mlp"], "-o", out, "-q"], capsys)
    assert rc == 2 and "edited" in err and "tb/testbench.cpp" in err
    assert tb.read_text().endswith("// my change\n")
    (out / "firmware" / "my_notes.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        rc, err, _ = _run([zoo["mlp"], "-o", out, "-q", *extra], capsys)
        assert rc == 2 and "firmware/my_notes.txt" in err and "never deleted" in err
    assert (out / "firmware" / "my_notes.txt").read_text() == "keep me"
    (out / "firmware" / "my_notes.txt").unlink()
    rc, err, _ = _run([zoo["mlp"], "-o", out, "-q", "--force"], capsys)  # --force discards edits of generated files
    assert rc == 0, err
    assert "// my change" not in tb.read_text()


def test_build_outputs_are_kept_and_report_json_may_change(zoo, tmp_path, capsys):
    out = tmp_path / "prj"
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    (out / "build").mkdir()
    (out / "build" / "csim").write_text("binary")
    (out / "vitis_hls.log").write_text("log")
    (out / ".report.json.tmp").write_text("{")  # a run killed while rewriting report.json
    rep = json.loads((out / "report.json").read_text())
    rep["csim"] = {"passed": 4}
    (out / "report.json").write_text(json.dumps(rep))
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    assert (out / "build" / "csim").read_text() == "binary" and (out / "vitis_hls.log").read_text() == "log"
    assert json.loads((out / "report.json").read_text())["csim"] is None  # written anew


def test_interrupted_by_sigterm_while_writing(zoo, tmp_path, capsys, monkeypatch):
    """SIGTERM in the middle of writing: exit 143, the old project intact, no temporary folder left."""
    from qfx_compile.backend import outdir

    out = tmp_path / "prj"
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = open
    count = {"n": 0}

    def fake(path, mode="r", *a, **k):
        if "w" in mode:
            count["n"] += 1
            if count["n"] == 5:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(path, mode, *a, **k)

    monkeypatch.setattr(outdir, "open", fake, raising=False)
    rc, err, _ = _run([zoo["mlp"], "-o", out, "-q"], capsys)
    assert rc == 128 + signal.SIGTERM and "interrupted" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_leftovers_of_a_killed_run_are_swept(zoo, tmp_path, capsys):
    """After SIGKILL: a stale temporary folder is removed; an old project whose replacement never arrived
    (killed between the two renames) is put back, then replaced."""
    from qfx_compile.backend import outdir

    out = tmp_path / "prj"
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    (out / "build").mkdir()
    (out / "build" / "obj.o").write_text("o")
    old = tmp_path / ".prj.qfx-old-123-abc"
    os.rename(out, old)
    stale = tmp_path / ".prj.qfx-tmp-123-def"
    (stale / "firmware").mkdir(parents=True)
    other = tmp_path / ".prj.qfx-old-999-zzz"  # not ours (no marker): left alone
    other.mkdir()
    outdir.sweep(out)
    assert out.is_dir() and (out / outdir.MARKER).is_file() and not old.exists() and not stale.exists()
    assert other.exists()
    shutil.rmtree(other)
    shutil.copytree(out, old)
    (stale / "x").mkdir(parents=True)
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    assert _leftovers(tmp_path) == [] and (out / "build" / "obj.o").read_text() == "o"


# ------------------------------------------------------------- bounded input
def test_vectors_that_decompress_to_gigabytes_are_refused_early(zoo, tmp_path, capsys):
    import base64

    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("input_raw.npy", "output_raw.npy"):
            with zf.open(name, "w", force_zip64=True) as f:
                n = (300 << 20) // 8
                hdr = io.BytesIO()  # magic + header of a (n,) int64 array: 300 MB of zeros
                np.lib.format.write_array_header_1_0(hdr, {"descr": "<i8", "fortran_order": False, "shape": (n,)})
                f.write(hdr.getvalue())
                zero = bytes(1 << 20)
                for _ in range(300):
                    f.write(zero)
    assert len(b.getvalue()) < 2 << 20

    def f(m):
        for p in m.metadata_props:
            if p.key == "qfx.vectors":
                p.value = base64.b64encode(b.getvalue()).decode()

    p = _edit(zoo["mlp"], tmp_path / "bomb.onnx", f)
    rc, err, _ = _run([p, "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2, err
    assert "bytes once decompressed" in err or "would take" in err


# ------------------------------------------------------------- the generated Makefile
def test_makefile_executes_nothing_from_the_environment(zoo, tmp_path, capsys):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    out = tmp_path / "prj dir"
    assert _run([zoo["mlp"], "-o", out, "-q"], capsys)[0] == 0
    mk = (out / "Makefile").read_text()
    assert "venv" not in mk and "site-packages" not in mk  # nothing baked from this machine
    pwn = tmp_path / "pwned"
    evil = f"$(shell touch {pwn}1)`touch {pwn}2`$(touch {pwn}3)';touch {pwn}4;'"
    env = dict(os.environ, XILINX_HLS=evil, AP_TYPES=evil, INPUTS=evil, EXPECTED=evil, VITIS_HLS=evil,
               QFX_AP_TYPES=evil)
    for target in ("csim", "csynth", "check-ap-types"):
        subprocess.run(["make", "-s", target], cwd=out, env=env, capture_output=True, timeout=120)
        subprocess.run(["make", "-n", target], cwd=out, env=env, capture_output=True, timeout=120)
    assert not list(tmp_path.glob("pwned*"))
    # the headers are found when make runs: given on the command line, or through hls4ml of QFX_PYTHON
    from qfx_compile.backend.toolchain import find_ap_types

    env = {k: v for k, v in os.environ.items() if k not in ("AP_TYPES", "XILINX_HLS", "QFX_AP_TYPES")}
    p = subprocess.run(["make", "-n", "check-ap-types", f"QFX_PYTHON={sys.executable}"], cwd=out, env=env,
                       capture_output=True, text=True, timeout=120)
    if "hls4ml" in str(find_ap_types()):
        assert str(find_ap_types()) in p.stdout


# ------------------------------------------------------------- bounded work
def _part(monkeypatch, name, bram36, dsp=2520, lut=274_080):
    from qfx_compile import targets

    monkeypatch.setitem(targets.TARGETS, name, targets.Target(name, name, "xczu9eg-ffvb1156-2-e", 5.0, dsp, "DSP48E2",
                                                                lut, 2 * lut, bram36, 0))


def test_weight_memory_leaves_a_margin(zoo, tmp_path, capsys, monkeypatch):
    """The ResNet's weights take 4 BRAM18: a part with exactly 4 is refused (80% share), one with 6 is not."""
    _part(monkeypatch, "b4", 2)
    _part(monkeypatch, "b6", 3)
    rc, err, _ = _run([zoo["resnet"], "--target", "b4", "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2, err
    assert "4 BRAM18 blocks for weights, more than 3 (80% of the part's 4 BRAM18" in err
    assert not (tmp_path / "o").exists()
    assert _run([zoo["resnet"], "--target", "b6", "-o", tmp_path / "o", "-q"], capsys)[0] == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["totals"]["weight_bram18"] == 4  # the figure the refusal above used


def test_weights_far_too_big_are_refused_before_decoding(zoo, tmp_path, capsys, monkeypatch):
    """The size check reads widths and element counts from the protobuf: the frontend never runs."""
    import qfx_compile.frontend as frontend

    _part(monkeypatch, "b1", 0)  # no BRAM; the MLP's two biggest weight arrays need one BRAM18 each

    def boom(*a, **k):
        raise AssertionError("the frontend decoded the weights before the size check")

    monkeypatch.setattr(frontend, "load_model", boom)
    rc, err, _ = _run([zoo["mlp"], "--target", "b1", "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2, err
    assert "do not fit b1" in err and "fc1" in err


def _redundant_relus(src: Path, dst: Path, n: int) -> Path:
    from onnx import helper

    m = onnx.load(str(src))
    g = m.graph
    nodes = list(g.node)
    i = next(k for k, x in enumerate(nodes) if x.name == "relu1/Relu")
    first = prev = nodes[i].output[0]
    extra = []
    for k in range(n):
        extra.append(helper.make_node("Relu", [prev], [f"rr{k}"], name=f"rr{k}/Relu"))
        prev = f"rr{k}"
    for x in nodes[i + 1:]:
        x.input[:] = [prev if v == first else v for v in x.input]
    del g.node[:]
    g.node.extend(nodes[:i + 1] + extra + nodes[i + 1:])
    del g.value_info[:]
    onnx.save(m, str(dst))
    return dst


def test_fold_is_linear_in_redundant_nodes(zoo, tmp_path, capsys, monkeypatch):
    """3,000 redundant ReLUs: removed in a bounded number of sweeps (shape inferences), with no deep copy of
    any weight array; through the CLI the project equals the one without them."""
    import copy

    from qfx_compile.frontend import load_model
    import importlib

    fold_mod = importlib.import_module("qfx_compile.ir.passes.fold")

    p = _redundant_relus(zoo["mlp"], tmp_path / "red.onnx", 3000)
    g = load_model(str(p))
    calls = {"infer": 0, "deepcopy": 0}
    real_infer, real_deepcopy = fold_mod.infer_shapes, copy.deepcopy

    def infer(graph):
        calls["infer"] += 1
        return real_infer(graph)

    def deepcopy(*a, **k):
        calls["deepcopy"] += 1
        return real_deepcopy(*a, **k)

    monkeypatch.setattr(fold_mod, "infer_shapes", infer)
    monkeypatch.setattr(copy, "deepcopy", deepcopy)
    out = fold_mod.fold(g)
    assert len(g.nodes) - len(out.nodes) == 3000
    assert calls["infer"] <= 3 and calls["deepcopy"] == 0, calls
    w = [n for n in g.nodes if n.params][0]
    c = g.copy()
    assert c.nodes[g.nodes.index(w)].params["weight"].raw is w.params["weight"].raw  # shared, not copied
    assert c.nodes[0] is not g.nodes[0] and c.tensors is not g.tensors
    monkeypatch.undo()
    assert _run([p, "-o", tmp_path / "red", "-q"], capsys)[0] == 0
    assert _run([zoo["mlp"], "-o", tmp_path / "plain", "-q"], capsys)[0] == 0
    a = json.loads((tmp_path / "red" / "report.json").read_text())["layers"]
    b = json.loads((tmp_path / "plain" / "report.json").read_text())["layers"]
    assert [(x["op"], x["output_type"]) for x in a] == [(x["op"], x["output_type"]) for x in b]


def test_vectors_option_is_bounded_by_memory(zoo, tmp_path, capsys, monkeypatch):
    """--vectors asks the interpreter for random vectors: their memory is checked before any is made."""
    from qfx_compile.backend import project

    def strip(m):
        _drop_vectors(m)

    p = _edit(zoo["mlp"], tmp_path / "nv.onnx", strip)
    monkeypatch.setattr(project, "MAX_VECTOR_BYTES", 1 << 20)  # 74 values x 8 bytes each: 1,771 vectors fit
    rc, err, _ = _run([p, "--vectors", "100000", "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2 and "--vectors 1771 or fewer" in err
    assert _run([p, "--vectors", "1771", "-o", tmp_path / "o", "-q"], capsys)[0] == 0


def test_64_bit_input_without_vectors(zoo, tmp_path, capsys):
    """A 64-bit input and no stored vectors: random inputs over the whole range (numpy cannot draw that span
    as int64; the fuzz campaign found exit 1 here), extremes in the first two vectors."""
    def f(m):
        _set_attr(m, "inp/FixedPoint", "width", 64)
        _drop_vectors(m)

    p = _edit(zoo["mlp"], tmp_path / "w64.onnx", f)
    rc, err, _ = _run([p, "-o", tmp_path / "o", "-q", "--vectors", "8"], capsys)
    assert rc == 0, err
    text = (tmp_path / "o" / "tb_data" / "inputs.txt").read_text()
    assert str((1 << 63) - 1) in text and str(-(1 << 63)) in text


def test_interpreter_work_for_vectors_is_bounded(zoo, tmp_path, capsys, monkeypatch):
    """The fuzz campaign's hang: a mutated input shape with tens of millions of values per sample made the
    interpreter run for half an hour computing expected outputs. Its work is checked first."""
    from qfx_compile.backend import project

    monkeypatch.setattr(project, "MAX_INTERPRETER_VALUES", 500)
    rc, err, _ = _run([zoo["mlp"], "-o", tmp_path / "o", "-q"], capsys)
    assert rc == 2 and "values per sample" in err and ("--vectors" in err or "input shape" in err)
    assert not (tmp_path / "o").exists()
