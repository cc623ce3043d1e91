"""Synthesis-readiness checks that run without Vitis HLS (see hls_lib/README.md, "Synthesis readiness").

The generated projects are preprocessed as the Vitis HLS front end would see them (__SYNTHESIS__
defined, a clang compiler, an ap_common.h that defines INLINE as the AMD one does) and the
resulting `#pragma HLS` lines and the DATAFLOW top are checked for the rules of UG1399."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

HLS_LIB = Path(__file__).resolve().parents[1] / "hls_lib"
MODELS = ("resnet", "khot_csd")

# Stand-ins for the Vitis headers: only the preprocessor runs, so only their macros matter.
STUBS = {
    "ap_fixed.h": "#pragma once\n#include \"ap_common.h\"\n",
    "ap_int.h": "#pragma once\n#include \"ap_common.h\"\n",
    # as in the AMD ap_common.h: a macro named like a pragma directive
    "ap_common.h": "#pragma once\n#ifdef __SYNTHESIS__\n#define INLINE inline __attribute__((always_inline))\n"
                   "#else\n#define INLINE inline\n#endif\n",
    "hls_stream.h": "#pragma once\n",
    "ap_axi_sdata.h": "#pragma once\n",
}
DIRECTIVES = {"PIPELINE", "UNROLL", "INLINE", "ARRAY_PARTITION", "BIND_OP", "INTERFACE", "DATAFLOW", "STREAM",
              "ALLOCATION"}


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model
    root = tmp_path_factory.mktemp("review")
    out = {}
    for name in MODELS:
        onnx = export_zoo_model(name, root / name, vectors=2)
        hls = root / name / "hls"
        subprocess.run([sys.executable, "-m", "qfx_compile.cli", onnx, "-o", str(hls), "--force"], check=True,
                       capture_output=True)
        out[name] = hls
    stubs = root / "stubs"
    stubs.mkdir()
    for n, text in STUBS.items():
        (stubs / n).write_text(text)
    out["_stubs"] = stubs
    return out


def preprocess(src: Path, stubs: Path, synthesis: bool = True) -> str:
    flags = ["-D__SYNTHESIS__", "-D__clang__"] if synthesis else []
    r = subprocess.run(["g++", "-std=c++14", "-E", "-P", *flags, "-I", str(stubs), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def hls_sources(hls: Path) -> list[Path]:
    return [hls / "firmware" / "qfx_top.cpp", *sorted((hls / "firmware" / "layers").glob("*.cpp"))]


def test_pragma_macro_is_not_expanded(tmp_path):
    """QFX_PRAGMA(HLS INLINE off) must read `#pragma HLS INLINE off` even though INLINE is a macro."""
    (tmp_path / "INLINE.h").write_text("#define INLINE inline __attribute__((always_inline))\n#define off 0\n")
    src = tmp_path / "t.cpp"
    src.write_text(f'#include "INLINE.h"\n#include "{HLS_LIB}/qfx_types.h"\n'
                   "void f() {\nQFX_PRAGMA(HLS INLINE off)\n}\n")
    for n, text in STUBS.items():
        (tmp_path / n).write_text(text)
    text = preprocess(src, tmp_path)
    assert "#pragma HLS INLINE off" in text
    assert "__attribute__" not in text.split("void f()")[1]
    # C simulation (g++, no __SYNTHESIS__) and g++ -D__SYNTHESIS__: no pragmas at all
    assert "#pragma HLS" not in preprocess(src, tmp_path, synthesis=False)
    r = subprocess.run(["g++", "-std=c++14", "-E", "-P", "-D__SYNTHESIS__", "-I", str(tmp_path), str(src)],
                       capture_output=True, text=True)
    assert "#pragma HLS" not in r.stdout


@pytest.mark.parametrize("name", MODELS)
def test_pragmas_well_formed_and_placed(projects, name):
    """Every pragma is a known directive with plain `key=value` options, inside the right scope."""
    for src in hls_sources(projects[name]):
        lines = [ln.strip() for ln in preprocess(src, projects["_stubs"]).splitlines() if ln.strip()]
        n_pragmas = 0
        for i, ln in enumerate(lines):
            if not ln.startswith("#pragma HLS"):
                continue
            n_pragmas += 1
            words = ln.split()[2:]
            assert words and words[0] in DIRECTIVES, ln
            for w in words[1:]:
                assert re.fullmatch(r"[A-Za-z_]+(=[A-Za-z0-9_.]+)?", w), f"{src.name}: odd option in: {ln}"
            prev = [p for p in lines[max(0, i - 12):i] if not p.startswith("#pragma")]
            d = words[0]
            if d in ("PIPELINE", "UNROLL"):
                assert re.match(r"for \(.*\{$", prev[-1]), f"{d} not first in a loop body: {prev[-1]!r}"
            elif d in ("INLINE", "INTERFACE", "DATAFLOW"):
                assert prev[-1].endswith("{") and not prev[-1].startswith("for"), f"{d} not at a function start"
            elif d in ("ARRAY_PARTITION", "BIND_OP", "STREAM"):
                var = re.search(r"variable=(\w+)", ln).group(1)
                # declared on the lines just before, or an array parameter of the enclosing function
                assert any(re.search(rf"\b{var}\b", p) for p in prev[-3:]) or \
                    any(re.search(rf"\b{var}\[", p) for p in prev), f"{ln}: {var} not declared just before"
        assert n_pragmas > 0


def _top_calls(hls: Path):
    text = (hls / "firmware" / "qfx_top.cpp").read_text()
    body = text[text.index("{", text.index("void qfx_top(")):]
    depth = {m.group(1): int(m.group(2)) for m in re.finditer(r"STREAM variable=(\w+) depth=(\d+)", body)}
    calls = []
    for m in re.finditer(r"^\s*([\w:]+)(<[^>]*>)?\((.*)\);", body, re.M):
        func, targs, args = m.group(1), m.group(2) or "", [a.strip() for a in m.group(3).split(",")]
        if func == "hls::stream" or "QFX_PRAGMA" in func:
            continue
        n_out = 2 if func == "qfx::fanout2" else 1
        calls.append((func, targs, args[:-n_out], args[-n_out:]))
    return body, depth, calls


@pytest.mark.parametrize("name", MODELS)
def test_dataflow_canonical_top(projects, name):
    """Each stream: one writer, one reader, written before read in call order; top ports in one process each."""
    body, depth, calls = _top_calls(projects[name])
    assert re.search(r"\{\s*QFX_PRAGMA\(HLS INTERFACE axis port=in\)\s*QFX_PRAGMA\(HLS INTERFACE axis port=out\)\s*"
                     r"QFX_PRAGMA\(HLS INTERFACE s_axilite port=return\)\s*QFX_PRAGMA\(HLS DATAFLOW\)", body)
    assert not re.search(r"\b(if|for|while|static)\b", body), "conditional/looping code or statics in the DATAFLOW top"
    writer, reader = {}, {}
    for k, (func, _, ins, outs) in enumerate(calls):
        for s in ins:
            assert s not in reader, f"{s} read by two processes"
            reader[s] = k
        for s in outs:
            assert s not in writer, f"{s} written by two processes"
            writer[s] = k
    assert reader.pop("in") == 0 and writer.pop("out") == len(calls) - 1
    assert set(writer) == set(reader) == set(depth), "every declared stream has exactly one writer and one reader"
    for s in depth:
        assert writer[s] < reader[s], f"{s}: read before it is written (not feed-forward in call order)"


def test_residual_fork_depths(projects):
    """Fork copies are as deep as the deadlock analysis says (backend/fifo.py: the tokens a copy holds while
    the join waits on the other branch, plus the pipelining margin; its proof is tests/test_fifo_depth.py),
    not a whole map; every other stream has the chain depth (II=1)."""
    from qfx_compile.backend import fifo
    from qfx_compile.backend.plan import PlanOptions, build_plan
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.passes import run_default_passes
    from qfx_compile.targets import get_target
    hls = projects["resnet"]
    body, depth, calls = _top_calls(hls)
    forks = [c for c in calls if c[0] == "qfx::fanout2"]
    assert forks, "the resnet zoo model has a residual fork"
    t = get_target("ultra96")
    plan = build_plan(run_default_passes(load_model(str(hls.parent / "resnet.onnx"))), PlanOptions(t, t.part, t.clock_ns))
    need = fifo.fork_depths(fifo.processes(plan.graph, plan.layers, plan.input_fanouts, plan.in_stream,
                                           plan.out_stream))
    copies = {s for _f, _t, _i, outs in forks for s in outs}
    assert copies == set(need)
    for func, targs, ins, outs in forks:
        count = int(re.search(r",\s*(\d+)>", targs).group(1))
        for s in outs:
            assert depth[s] == need[s].depth >= fifo.CHAIN_DEPTH, s
            assert need[s].need < count, f"{s}: the analysis asks for the whole map"
    assert max(depth[s] for s in copies) > fifo.CHAIN_DEPTH  # the bypass does hold tokens
    assert all(d == fifo.CHAIN_DEPTH for s, d in depth.items() if s not in copies)


@pytest.mark.parametrize("name", MODELS)
def test_every_dataflow_process_is_not_inlined(projects, name):
    """axis_read/axis_write/fanout2 and the layer wrappers are processes: each body starts with INLINE off."""
    lib = "".join(p.read_text() for p in sorted(HLS_LIB.glob("*.h")))
    for fn in ("axis_read", "axis_write", "fanout2"):
        m = re.search(rf"void {fn}\([^)]*\)\s*\{{\s*QFX_PRAGMA\(HLS INLINE off\)", lib)
        assert m, f"qfx::{fn} is a DATAFLOW process but has no INLINE off"
    for part in (projects[name] / "firmware" / "layers").glob("*.cpp"):
        text = part.read_text()
        n_funcs = len(re.findall(r"^void layer_\w+\(", text, re.M))
        assert len(re.findall(r"^void layer_\w+\([^{]*\{\n    QFX_PRAGMA\(HLS INLINE off\)", text, re.M)) == n_funcs


@pytest.mark.parametrize("name", MODELS)
def test_build_tcl_resets_project(projects, name):
    tcl = (projects[name] / "build.tcl").read_text()
    assert re.search(r"^open_project -reset \w+_prj$", tcl, re.M)
    assert re.search(r"^open_solution -flow_target vivado solution1$", tcl, re.M)
    assert "export_design -format ip_catalog" in tcl
