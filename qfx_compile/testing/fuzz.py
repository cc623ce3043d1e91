"""A fuzzer for qfx-compile that checks results (tests/test_fuzz_frontend.py, bench/fuzz.py).

A case is a zoo model mutated by one to three mutations drawn from :data:`KINDS` (protobuf fields, bytes,
fixed-point types, attributes, names, shapes, weights, test vectors), compiled through the real CLI
(:func:`qfx_compile.cli.main`). The only acceptable outcomes:

* exit 2 with a one-paragraph message (``error: ...``), no traceback, no control character, nothing
  written to OUTDIR;
* exit 0 with a complete project (the marker and its manifest), whose ``make csim`` passes on the
  sampled cases (the expected outputs come from the model file or from the IR interpreter).

Everything else (exit 1, a crash, a project that does not build or mismatches) is a finding.
"""
from __future__ import annotations

import base64
import contextlib
import io
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

MODES_R = ["AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV"]
MODES_O = ["AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM", "AP_WRAP"]
HOSTILE_NAMES = ["[/x]", "[bold red]x[/bold red]", "\x1b[2J\x1b]0;t\x07", "$(touch /tmp/qfx_fuzz_pwn)", "`id`",
                 "*/ int x; /*", "??/", "a\nb", "#include <x>", "main", "qfx_top", "x" * 3000, "\u202eevil",
                 "name with spaces", "s_c0", "s_c1", "a.b", "a_b", "A_B", "0start", "", "é\u0301", "\\", "'\"",
                 "x;rm -rf ~", "CON", "..", "/etc/passwd", "%s%n"]


def _fixed_nodes(m):
    return [n for n in m.graph.node if n.op_type in ("FixedPoint", "Quant")]


def _inits(m):
    return {t.name: t for t in m.graph.initializer}


def _attr(n, key):
    for a in n.attribute:
        if a.name == key:
            return a
    return None


# ------------------------------------------------------------------ mutations (each: (model, rng) -> None)
def m_width(m, rng):
    ns = _fixed_nodes(m)
    if ns:
        a = _attr(rng.choice(ns), "width")
        if a is not None:
            a.i = rng.choice([1, 2, 3, 7, 8, 16, 31, 32, 33, 53, 62, 63, 64, 65, 100, 1024, 1025, 0, -1])


def m_int_bits(m, rng):
    ns = _fixed_nodes(m)
    inits = _inits(m)
    if not ns:
        return
    n = rng.choice(ns)
    if len(n.input) > 1 and n.input[1] in inits:
        t = inits[n.input[1]]
        a = numpy_helper.to_array(t).astype(np.float64)
        v = rng.choice([-600, -20, -3, 0, 1, 2, 5, 20, 40, 70, 500])
        a = np.full_like(a, v) if rng.random() < 0.6 else a + rng.choice([-2, -1, 1, 2])
        t.CopyFrom(numpy_helper.from_array(a.astype(numpy_helper.to_array(t).dtype), t.name))


def m_modes(m, rng):
    ns = _fixed_nodes(m)
    if ns:
        n = rng.choice(ns)
        for key, vals in (("rounding", MODES_R + ["AP_BOGUS", ""]), ("overflow", MODES_O + ["AP_WRAP_SM", "X"])):
            a = _attr(n, key)
            if a is not None and rng.random() < 0.6:
                a.s = rng.choice(vals).encode()
        a = _attr(n, "signed")
        if a is not None and rng.random() < 0.4:
            a.i = rng.choice([0, 1, 2])


def m_rename(m, rng):
    """Rename a node, or a tensor consistently everywhere, to a hostile or colliding name."""
    g = m.graph
    new = rng.choice(HOSTILE_NAMES)
    if rng.random() < 0.4 and len(g.node):
        rng.choice(list(g.node)).name = new
        return
    tensors = [o for n in g.node for o in n.output if o and o not in [x.name for x in g.output]]
    if not tensors or not new:
        return
    old = rng.choice(tensors)
    for n in g.node:
        n.input[:] = [new if x == old else x for x in n.input]
        n.output[:] = [new if x == old else x for x in n.output]
    for vi in g.value_info:
        if vi.name == old:
            vi.name = new


def m_bad_utf8(m, rng):
    """A name that is not UTF-8 (python-protobuf gives such fields back as bytes)."""
    data = m.SerializeToString()
    names = [n.name for n in m.graph.node if n.name]
    if names:
        old = rng.choice(names).encode()
        bad = old[:1] + b"\xff\xfe" + old[1:]
        m.ParseFromString(data.replace(old, bad, 1))


def m_recip(m, rng):
    for n in m.graph.node:
        a = _attr(n, "recip_bits")
        if a is not None:
            a.i = rng.choice([0, 1, 2, 8, 16, 30, 61, 62, 63, 64, 200])


def m_weights(m, rng):
    """Weights on a coarse grid, all zero, huge, or scaled (exact values the types may or may not hold)."""
    inits = [t for t in m.graph.initializer if t.name.endswith(("weight", "bias")) and t.data_type in (1, 11)]
    if not inits:
        return
    t = rng.choice(inits)
    a = numpy_helper.to_array(t).astype(np.float64)
    k = rng.randrange(5)
    if k == 0:
        a = np.round(a * 4) / 4  # coarse grid (all mantissas even)
    elif k == 1:
        a = np.zeros_like(a)
    elif k == 2:
        a = a * 2.0 ** rng.choice([-30, -8, 8, 30])
    elif k == 3:
        a = np.sign(a) * 0.5
    else:
        a = a + rng.choice([1e-9, -1e-3, 0.25])
    t.CopyFrom(numpy_helper.from_array(a.astype(numpy_helper.to_array(t).dtype), t.name))


def m_input_shape(m, rng):
    d = m.graph.input[0].type.tensor_type.shape.dim
    if len(d):
        x = d[rng.randrange(len(d))]
        c = rng.randrange(3)
        if c == 0:
            x.dim_value = rng.choice([0, 1, 2, 3, 7, 64, 10 ** 6])
        elif c == 1:
            x.dim_param = "n"
        else:
            d.add().dim_value = 1


def _npz(**arrays) -> str:
    b = io.BytesIO()
    np.savez_compressed(b, **arrays)
    return base64.b64encode(b.getvalue()).decode()


def m_vectors(m, rng):
    for p in list(m.metadata_props):
        if p.key != "qfx.vectors":
            continue
        try:
            d = np.load(io.BytesIO(base64.b64decode(p.value)), allow_pickle=False)
            x, y = d["input_raw"], d["output_raw"]
        except Exception:
            return
        k = rng.randrange(6)
        if k == 0:  # drop them: the interpreter makes expected outputs
            m.metadata_props.remove(p)
        elif k == 1:
            p.value = _npz(input_raw=x[:0], output_raw=y[:0])
        elif k == 2:  # a wrong expected value: the build must still be honest (refused or mismatch caught)
            y = y.copy()
            y.flat[0] += 1
            p.value = _npz(input_raw=x, output_raw=y)
        elif k == 3:
            p.value = _npz(input_raw=x * 1000, output_raw=y)
        elif k == 4:
            p.value = p.value[: rng.randrange(len(p.value) + 1)]
        else:
            p.value = _npz(input_raw=x[:1], output_raw=y)
        return


def m_attr_ints(m, rng):
    nodes = [n for n in m.graph.node if len(n.attribute)]
    if nodes:
        n = rng.choice(nodes)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.INT and rng.random() < 0.5:
                a.i = rng.choice([-1, 0, 1, 2, 3, 5000, 2 ** 40])
            elif a.type == onnx.AttributeProto.INTS and rng.random() < 0.5:
                a.ints[:] = [rng.choice([-1, 0, 1, 2, 3, 2 ** 40]) for _ in range(rng.randrange(5))]


def m_proto(m, rng):
    """Structural protobuf mutations: drop/duplicate/rewire nodes and initializers, change op types, domains."""
    g = m.graph
    names = [o for n in g.node for o in n.output] + [t.name for t in g.initializer] + [g.input[0].name, ""]
    node = g.node[rng.randrange(len(g.node))] if len(g.node) else None
    k = rng.randrange(9)
    if k == 0 and len(g.initializer):
        del g.initializer[rng.randrange(len(g.initializer))]
    elif k == 1 and node is not None:
        node.op_type = rng.choice(["MatMul", "Mul", "Reshape", "Flatten", "Transpose", "Clip", "MaxPool", "Softmax",
                                   "AveragePool", "GlobalAveragePool", "Cast", "Identity", "Constant", "Sub",
                                   "BatchNormalization", "Quant", "FixedPoint", "Conv", "Gemm", "Add", "Relu",
                                   "Re\x1blu"])
    elif k == 2 and node is not None:
        node.domain = rng.choice(["", "qfx", "qonnx.custom_op.general", "ai.onnx", "foo", "\x1b[2J"])
    elif k == 3 and node is not None:
        del g.node[rng.randrange(len(g.node))]
    elif k == 4 and node is not None:
        c = onnx.NodeProto()
        c.CopyFrom(node)
        g.node.append(c)
    elif k == 5 and node is not None and len(node.input):
        node.input[rng.randrange(len(node.input))] = rng.choice(names)
    elif k == 6 and node is not None and len(node.output):
        node.output[0] = rng.choice(names + ["dangling"])
    elif k == 7 and len(g.node) > 2:
        i = rng.randrange(len(g.node) - 1)
        j = rng.randrange(i + 1, len(g.node))
        if len(g.node[i].input):
            g.node[i].input[0] = g.node[j].output[0] if len(g.node[j].output) else ""
    elif k == 8 and len(g.initializer):
        t = g.initializer[rng.randrange(len(g.initializer))]
        c = rng.randrange(3)
        if c == 0 and t.raw_data:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data))]
        elif c == 1:
            t.data_type = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 99])
        else:
            t.dims[:] = [rng.choice([0, 1, 3, 10 ** 6]) for _ in range(rng.randrange(1, 4))]


KINDS = {"width": m_width, "int_bits": m_int_bits, "modes": m_modes, "rename": m_rename, "bad_utf8": m_bad_utf8,
         "recip_bits": m_recip, "weights": m_weights, "input_shape": m_input_shape, "vectors": m_vectors,
         "attr_ints": m_attr_ints, "proto": m_proto, "bytes": None}


#: Mutations that change what the model computes.
SEMANTIC = frozenset({"width", "int_bits", "modes", "weights", "recip_bits", "attr_ints"})


def make_case(base: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """A mutated model file (bytes) and the mutation kinds applied."""
    kinds = [rng.choice(list(KINDS)) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    m = onnx.ModelProto()
    m.ParseFromString(base)
    for k in kinds:
        if KINDS[k] is not None:
            try:
                KINDS[k](m, rng)
            except Exception:  # a mutation that does not apply to this model: skip it
                pass
    if set(kinds) & SEMANTIC and rng.random() < 0.7:
        # the stored expected outputs belong to the unmutated model (a changed model with them is refused):
        # drop them, so that the testbench checks against the IR interpreter and the case reaches the backend
        keep = [(p.key, p.value) for p in m.metadata_props if p.key != "qfx.vectors"]
        del m.metadata_props[:]
        for k, v in keep:
            m.metadata_props.add(key=k, value=v)
    data = m.SerializeToString()
    if "bytes" in kinds:
        b = bytearray(data)
        if rng.random() < 0.5:
            b = b[: rng.randrange(len(b))]
        else:
            for _ in range(rng.randrange(1, 20)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        data = bytes(b)
    return data, kinds


# ------------------------------------------------------------------ running a case
@dataclass
class Outcome:
    rc: int
    kinds: list[str]
    message: str = ""
    project: Path | None = None
    problems: list[str] = field(default_factory=list)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def run_case(data: bytes, kinds: list[str], work: Path, vectors: int = 4) -> Outcome:
    """Compile the case with the real CLI in this process; check the outcome's form (not yet csim)."""
    from ..cli import main

    work.mkdir(parents=True, exist_ok=True)
    model = work / "case.onnx"
    model.write_bytes(data)
    out = work / "prj"
    err, outs = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(outs):
        rc = main([str(model), "-o", str(out), "-q", "--vectors", str(vectors)])
    text = err.getvalue() + outs.getvalue()
    o = Outcome(rc, kinds, err.getvalue().strip()[:2000])
    if rc not in (0, 2):
        o.problems.append(f"exit {rc}: {o.message[:500]}")
    if "Traceback" in text:
        o.problems.append("traceback printed")
    if _CONTROL.search(text):
        o.problems.append("control character printed")
    if rc == 2:
        if not o.message.startswith("error:"):
            o.problems.append("exit 2 without an 'error:' message")
        if out.exists():
            o.problems.append("exit 2 but OUTDIR was written")
    if rc == 0:
        if not (out / ".qfx-compile").is_file() or not (out / "Makefile").is_file():
            o.problems.append("exit 0 without a complete project")
        o.project = out
    leftovers = [p.name for p in work.iterdir() if ".qfx-" in p.name]
    if leftovers:
        o.problems.append(f"left behind: {leftovers}")
    return o


def csim(project: Path, timeout: float = 600) -> str | None:
    """Run ``make csim`` in a generated project; None when every vector passes, else what went wrong."""
    import os
    import subprocess

    from ..backend.toolchain import find_ap_types

    env = dict(os.environ, AP_TYPES=str(find_ap_types()))
    try:
        p = subprocess.run(["make", "-s", "csim"], cwd=project, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "make csim timed out"
    tail = (p.stdout + p.stderr)[-1500:]
    if p.returncode != 0:
        return f"make csim exit {p.returncode}: {tail}"
    m = re.search(r"(\d+) passed, (\d+) failed", p.stdout)
    if not m or m.group(2) != "0" or m.group(1) == "0":
        return f"testbench verdict missing or failing: {tail}"
    return None


def expected_mismatch(kinds: list[str]) -> bool:
    """Cases whose stored expected outputs were deliberately corrupted (m_vectors k == 2) may fail csim."""
    return False


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
