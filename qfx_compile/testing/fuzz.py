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


def _weight_nodes(m):
    """FixedPoint nodes on the weight of an ungrouped Conv or a Gemm/MatMul (the layers mixed rows apply to)."""
    layers = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
              and (_attr(n, "group") is None or _attr(n, "group").i == 1)]
    weights = {n.input[1] for n in layers if len(n.input) > 1}
    return [n for n in _fixed_nodes(m) if n.output and n.output[0] in weights]


def m_mixed_rows(m, rng):
    """Mix-and-Match rows on a weight: K-hot rows projected onto a K-hot code (csd, binary or sp2), k_hot 0
    (fixed-point rows) in odd positions, or at random positions."""
    from ..fixed.digits import khot_table, project_raw
    from ..fixed.types import FixedType

    ns = _weight_nodes(m)
    inits = _inits(m)
    if not ns:
        return
    n = rng.choice(ns)
    t, ib = inits.get(n.input[0]), inits.get(n.input[1])
    if t is None or ib is None or _attr(n, "width") is None:
        return
    w = numpy_helper.to_array(t).astype(np.float64)
    width = _attr(n, "width").i
    ibits = np.broadcast_to(numpy_helper.to_array(ib).astype(np.int64).reshape(-1), (w.shape[0],))
    digits = rng.choice(["csd", "binary", "sp2"])
    odd = rng.random() < 0.7
    ks = []
    for r in range(w.shape[0]):
        khot = (r % 2 == 0) if odd else rng.random() < 0.5
        k = rng.choice([1, 2] if digits == "sp2" else [1, 2, 3]) if khot else 0
        if k:
            ft = FixedType(width, int(ibits[r]), True)
            scaled = w[r] * 2.0 ** ft.frac_bits
            w[r] = project_raw(scaled, khot_table(ft, k, digits)).astype(np.float64) * 2.0 ** -ft.frac_bits
        ks.append(k)
    t.CopyFrom(numpy_helper.from_array(w.astype(numpy_helper.to_array(t).dtype), t.name))
    for key in ("k_hot", "digits"):
        a = _attr(n, key)
        if a is not None:
            n.attribute.remove(a)
    n.attribute.extend([helper.make_attribute("k_hot", ks), helper.make_attribute("digits", digits)])


def m_wide(m, rng):
    """Odd widths near the C simulation's native int64 limits (30 to 64 bits) on one to three casts: keeps
    the fraction bits or the integer bits, so wide accumulators follow."""
    ns = _fixed_nodes(m)
    inits = _inits(m)
    for n in rng.sample(ns, min(len(ns), rng.randrange(1, 4))):
        a = _attr(n, "width")
        if a is None:
            continue
        old = a.i
        a.i = rng.choice([29, 30, 31, 33, 37, 45, 53, 54, 58, 59, 60, 61, 62, 63, 64])
        if rng.random() < 0.5 and len(n.input) > 1 and n.input[1] in inits:  # keep the fraction bits
            t = inits[n.input[1]]
            v = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array((v + (a.i - old)).astype(v.dtype), t.name))


KINDS = {"width": m_width, "int_bits": m_int_bits, "modes": m_modes, "rename": m_rename, "bad_utf8": m_bad_utf8,
         "recip_bits": m_recip, "weights": m_weights, "input_shape": m_input_shape, "vectors": m_vectors,
         "attr_ints": m_attr_ints, "proto": m_proto, "bytes": None, "mixed_rows": m_mixed_rows, "wide": m_wide,
         "config": None, "explore": None}


#: Mutations that change what the model computes.
SEMANTIC = frozenset({"width", "int_bits", "modes", "weights", "recip_bits", "attr_ints", "mixed_rows", "wide"})
#: Kinds that are options of the run (see :func:`make_options`), not mutations of the model.
OPTIONS = frozenset({"config", "explore"})


def make_case(base: bytes, rng: random.Random, only: list[str] | None = None) -> tuple[bytes, list[str]]:
    """A mutated model file (bytes) and the mutation kinds applied (drawn from ``only`` when given)."""
    kinds = [rng.choice(only or list(KINDS)) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    if "mixed_rows" in kinds and rng.random() < 0.5:  # the cores of mixed rows under per-layer options
        kinds.append(rng.choice(sorted(OPTIONS)))
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


def make_options(data: bytes, kinds: list[str], rng: random.Random) -> dict:
    """Run options of a case: ``{"config": JSON text or None, "explore": bool}``. ``config``: per-layer
    ``reuse`` / ``mul_impl`` / ``shiftadd`` / ``dsp_pack`` for some Conv/Gemm layers (and the two cores of a
    mixed-rows layer, ``<name>/dsp_rows`` and ``<name>/khot_rows``) and sometimes a default."""
    import json

    opts = {"config": None, "explore": "explore" in kinds}
    if "config" not in kinds:
        return opts
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception:
        return opts

    def pick():
        o = {}
        for key, vals in (("reuse", [0, 1, 2, 3, 4, 7, 16, 64, 1000]), ("mul_impl", [0, 1, 2]),
                          ("shiftadd", [0, 1]), ("dsp_pack", [0, 1, 1])):
            if rng.random() < 0.5:
                o[key] = rng.choice(vals)
        return o

    mixed = set()
    for n in _fixed_nodes(m):
        k = _attr(n, "k_hot")
        if k is not None and 0 in k.ints and any(v > 0 for v in k.ints) and n.output:
            mixed.add(n.output[0])
    layers = {}
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and rng.random() < 0.7:
            names = [n.name] + ([n.name + "/dsp_rows", n.name + "/khot_rows"] if set(n.input) & mixed else [])
            for name in rng.sample(names, rng.randrange(1, len(names) + 1)):
                layers[name] = pick()
    cfg = {"layers": layers}
    if rng.random() < 0.3:
        cfg["default"] = pick()
    opts["config"] = json.dumps(cfg)
    return opts


def check_predict(model: Path, rng: random.Random, n: int = 12) -> str | None:
    """``qfx_compile.load(model)``: ``predict_raw`` and ``predict`` against the IR interpreter bit for bit on
    random inputs (the input type's extremes included); None when equal, else what differs."""
    from .. import load
    from ..ir import interpret

    try:
        em = load(model)
    except Exception as e:  # the CLI compiled it: the loader must too
        return f"load: {type(e).__name__}: {str(e)[:300]}"
    t = em.input_type
    size = int(np.prod(em.input_shape)) if em.input_shape else 1
    lo, hi = int(t.raw_min), int(t.raw_max)
    picks = [lo, hi, 0, lo + 1, hi - 1, -1 if lo < 0 else 1]
    vals = [rng.choice(picks) if rng.random() < 0.3 else rng.randint(lo, hi) for _ in range(n * size)]
    raw = np.array(vals, dtype=object if t.width > 62 else np.int64).reshape((n,) + tuple(em.input_shape))
    try:
        want = interpret.run(em.graph, raw)
    except Exception as e:
        return f"interpreter: {type(e).__name__}: {str(e)[:300]}"
    try:
        got = em.predict_raw(raw)
    except Exception as e:
        return f"predict_raw: {type(e).__name__}: {str(e)[:300]}"
    if got.shape != want.shape or not all(int(a) == int(b) for a, b in zip(got.flat, want.flat)):
        bad = [i for i, (a, b) in enumerate(zip(got.flat, want.flat)) if int(a) != int(b)]
        return f"predict_raw != interpreter at {len(bad)} of {want.size} outputs (first flat index {bad[:1]})"
    # float inputs: on the grid and off it (the input cast's rounding), vs the interpreter's float path
    x = interpret.to_float64(raw, t) if t.width <= 53 else None
    if x is None:
        return None
    x = x * rng.choice([1.0, 1.0, 0.999, 1.37, 0.5])
    results = []
    for f in (lambda: em.predict(x), lambda: interpret.to_float64(interpret.run(em.graph, x_float=x), em.output_type)):
        try:
            results.append(np.asarray(f(), dtype=np.float64))
        except ValueError as e:
            results.append(f"ValueError {str(e)[:100]}")
    a, b = results
    if isinstance(a, str) or isinstance(b, str):
        return None if isinstance(a, str) and isinstance(b, str) else f"predict(x) vs interpreter: {a!r:.200} / {b!r:.200}"
    if a.shape != b.shape or not np.array_equal(a, b):
        return f"predict(x) != interpreter at {int((a != b).sum())} of {b.size} outputs"
    return None


# ------------------------------------------------------------------ running a case
@dataclass
class Outcome:
    rc: int
    kinds: list[str]
    message: str = ""
    project: Path | None = None
    problems: list[str] = field(default_factory=list)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def run_case(data: bytes, kinds: list[str], work: Path, vectors: int = 4, options: dict | None = None) -> Outcome:
    """Compile the case with the real CLI in this process (``options``: :func:`make_options`); check the
    outcome's form (not yet csim)."""
    from ..cli import main

    work.mkdir(parents=True, exist_ok=True)
    model = work / "case.onnx"
    model.write_bytes(data)
    out = work / "prj"
    args = [str(model), "-o", str(out), "-q", "--vectors", str(vectors)]
    if options and options.get("config") is not None:
        (work / "config.json").write_text(options["config"])
        args += ["--config", str(work / "config.json")]
    if options and options.get("explore"):
        args.append("--explore")
    err, outs = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(outs):
        rc = main(args)
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
