"""The backend in one call: typed IR graph -> project folder (and optionally its C simulation)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ..ir.graph import Graph, Vectors
from ..targets import Target, TargetError, check_fits, estimate_memory, get_target
from . import csim as csim_mod, rtl
from .plan import BackendError, PlanOptions, build_plan, vectors_for_files
from .outdir import write_project
from .render import render_files, report_dict, write_report
from .toolchain import find_ap_types

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{2,63}$")


@dataclasses.dataclass
class CompileResult:
    outdir: Path
    plan: dict
    report: dict
    n_vectors: int
    vectors_source: str
    csim: csim_mod.CsimResult | None = None


def resolve_target(target: str | Target, part: str | None, clock_ns: float | None) -> tuple[Target, str, float]:
    t = target if isinstance(target, Target) else get_target(target)
    p = part or t.part
    if not _PART.match(p):
        raise TargetError(f"--part {p[:80]!r} is not a Xilinx part name (letters, digits, '-', '_', '.'), "
                          f"e.g. {t.part}")
    c = t.clock_ns if clock_ns is None else float(clock_ns)
    if not (0.5 <= c <= 1000.0):
        raise TargetError(f"--clock-ns {c} is outside 0.5..1000 ns")
    return t, p, c


def interpreter_vectors(graph: Graph, n: int, seed: int = 0) -> Vectors:
    """Random inputs on the input type's grid, expected outputs from the IR interpreter."""
    from ..ir import interpret

    t = interpret.input_type(graph)
    shape = graph.tensors[graph.inputs[0]].shape
    if shape is None:
        raise BackendError("the model input has no shape; cannot make test vectors")
    lo, hi, step = interpret.input_codes(graph)  # the codes the model can produce (AP_SAT_SYM, bipolar)
    if lo < -(1 << 63) or hi >= (1 << 63):
        raise BackendError(f"the model input type {t} is wider than 64 bits and the model holds no test vectors: "
                           f"the testbench cannot make random inputs for it; use an input of at most 64 bits, or "
                           f"export the model with test vectors")
    rng = np.random.default_rng(seed)
    # drawn in uint64 and wrapped back: the span of a 64-bit input type does not fit int64 (numpy refuses it)
    k = rng.integers(0, (hi - lo) // step, size=(n, *shape), endpoint=True, dtype=np.uint64)
    x = (k * np.uint64(step) + np.uint64(lo % (1 << 64))).view(np.int64)
    # put the extremes in the first vectors so that saturation paths are exercised
    if n >= 2:
        x[0].fill(hi)
        x[1].fill(lo)
    y = interpret.run(graph, x)
    return Vectors(input_raw=x, output_raw=np.asarray(y), source="interpreter")


def precheck_size(graph: Graph, target: str | Target = "ultra96", part: str | None = None,
                  clock_ns: float | None = None) -> None:
    """Refuse, before the passes and the plan, weights that cannot fit the part whatever the layout.

    Counts each constant array as stored (width x elements, FINN's BRAM model; K-hot constants become
    adders, not memory, and are left out, all but their fixed-point rows) against the whole part: a lower
    bound, so that a model many times too big is refused in seconds; :func:`check_fits` on the plan's arrays
    applies the budget share after."""
    arrays = []
    for n in graph.nodes:
        for k, c in n.params.items():
            rows = c.khot_rows()  # K-hot rows are adders: only the fixed-point rows (K = 0) are counted
            size = int(np.asarray(c.raw).size)
            if rows is not None:
                size = size * int((~rows).sum()) // max(1, rows.size)
            if size:
                arrays.append((n.name, k, int(c.type.width), size))
    precheck_arrays(arrays, target, part, clock_ns)


def precheck_arrays(arrays, target: str | Target = "ultra96", part: str | None = None,
                    clock_ns: float | None = None) -> None:
    """:func:`precheck_size` on ``(layer, array, width, elements)`` tuples (also read from the file alone)."""
    t, p, _ = resolve_target(target, part, clock_ns)
    est = estimate_memory(arrays)
    if est.bram18 > t.bram18 or est.lut > t.lut:
        check_fits(est, t, part=p)


#: The test vectors of one project (inputs and expected outputs, as int64 before they are written as text).
MAX_VECTOR_BYTES = 256 << 20
#: Values the IR interpreter may visit (all tensors, all vectors) to compute or check expected outputs.
MAX_INTERPRETER_VALUES = 10**9


def check_vector_budget(graph: Graph, n: int) -> None:
    """``--vectors n`` must not ask for more memory (and testbench text) than :data:`MAX_VECTOR_BYTES`."""
    sizes = []
    for name in (graph.inputs[0], graph.outputs[0]):
        shape = graph.tensors[name].shape or ()
        sizes.append(int(np.prod(shape, dtype=object)) if shape else 1)
    per = 8 * sum(sizes)
    # the IR interpreter computes (or checks) the expected outputs: bound its work by the values it visits
    visits = sum(int(np.prod(t.shape, dtype=object)) for t in graph.tensors.values() if t.shape)
    if n * visits > MAX_INTERPRETER_VALUES:
        raise BackendError(f"the model's tensors hold {visits:,} values per sample: computing the expected "
                           f"outputs of {n} test vectors exactly would visit {n * visits:,} values, more than "
                           f"{MAX_INTERPRETER_VALUES:,}; use --vectors {max(1, MAX_INTERPRETER_VALUES // visits)}"
                           f" or fewer" if visits <= MAX_INTERPRETER_VALUES else
                           f"the model's tensors hold {visits:,} values per sample, more than the "
                           f"{MAX_INTERPRETER_VALUES:,} qfx-compile computes test vectors for; check the input "
                           f"shape")
    if n * per > MAX_VECTOR_BYTES:
        raise BackendError(f"--vectors {n} would take {n * per / 2**20:,.0f} MiB of test vectors for this model "
                           f"({sum(sizes):,} input and output values each); use --vectors "
                           f"{max(1, MAX_VECTOR_BYTES // per)} or fewer")


def check_stored_vectors(graph: Graph, n: int) -> None:
    """The expected outputs stored in the model must be what its own layers compute (the IR interpreter is
    exact): a file edited after export (weights, types, vectors) would otherwise give a project whose C
    simulation fails. Checks the vectors the testbench will use."""
    from ..ir import interpret

    v = graph.vectors
    x, y = v.input_raw[:n], np.asarray(v.output_raw[:n])
    got = np.asarray(interpret.run(graph, x))
    if got.shape != y.shape:
        raise BackendError(f"the test vectors stored in the model have outputs shaped {y.shape[1:]}, its layers "
                           f"compute {got.shape[1:]}; export the model again")
    bad = np.flatnonzero((got.reshape(len(got), -1) != y.reshape(len(y), -1)).any(axis=1))
    if len(bad):
        raise BackendError(f"the test vectors stored in the model disagree with what its layers compute exactly "
                           f"({len(bad)} of {len(x)} vectors, first: vector {int(bad[0])}): the file was changed "
                           f"after export. Export it again (qfx.export_onnx), or remove its qfx.vectors metadata "
                           f"to test against the IR interpreter on random inputs")


def compile_graph(graph: Graph, outdir: str | Path, *, target: str | Target = "ultra96", part: str | None = None,
                  clock_ns: float | None = None, config: str | None = None, vectors: int | None = None,
                  force: bool = False, model_path: str = "model.onnx", run_csim: bool = False,
                  jobs: int | None = None) -> CompileResult:
    """Typed IR (after ``run_default_passes``) -> project in ``outdir``."""
    t, p, c = resolve_target(target, part, clock_ns)
    precheck_size(graph, t, p, c)
    plan = build_plan(graph, PlanOptions(target=t, part=p, clock_ns=c, config_path=config))
    check_fits(plan.memory, t, part=p)
    n_req = 100 if vectors is None else int(vectors)
    if n_req < 1:
        raise BackendError(f"--vectors must be at least 1, got {n_req}")
    stored = 0 if graph.vectors is None else len(graph.vectors.input_raw)
    check_vector_budget(graph, min(n_req, stored) if stored else n_req)
    if graph.vectors is None or len(graph.vectors.input_raw) == 0:
        graph = dataclasses.replace(graph, vectors=interpreter_vectors(graph, n_req))
    if graph.vectors.source != "interpreter":
        check_stored_vectors(graph, n_req)
    source = "expected outputs from the IR interpreter on random inputs" if graph.vectors.source == "interpreter" \
        else "expected outputs stored in the model file (PyTorch eval mode)"
    ins, exp, n = vectors_for_files(graph, n_req, plan.graph)
    ap = str(find_ap_types())
    report = report_dict(plan, model_path=model_path, n_vectors=n, vectors_source=source, csim=None)
    files = render_files(plan, ap_types=ap, inputs=ins, expected=exp, vectors_source=source, report=report)
    files.update(rtl.project_files(graph, np.asarray(graph.vectors.input_raw)[:n],
                                   family=rtl.FAMILY.get(t.dsp_kind, "xcup")))  # rtl/: make rtl-sim, rtl-synth
    out = Path(outdir)
    write_project(out, files, force=force, protected=((model_path, "model file"), (config, "config file")))
    res = CompileResult(out, plan, report, n, source)
    if run_csim:
        res.csim = csim_mod.build_and_run(out, expected_vectors=n, jobs=jobs)
        report["csim"] = res.csim.as_dict()
        write_report(out, report)
    return res
