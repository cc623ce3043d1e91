"""Renders a plan (see :mod:`.plan`) into the text of every project file, and the report.

No I/O but reading templates and hls_lib: :mod:`.outdir` writes the files (atomically,
with the marker and manifest). Output is byte-identical for the same input: no
timestamps, no absolute paths, sorted iteration everywhere.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jinja2

from ..resources import hls_lib_dir, templates_dir
from . import names
from .estimate import DSP_SHARE, LUT_MUL_BITS, fifos_cost

def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)


def report_dict(plan, *, model_path: str, n_vectors: int, vectors_source: str, csim: dict | None) -> dict:
    design = plan.design
    layers = []
    for L in plan.layers:
        e = L.est
        layers.append({
            "name": L.name_comment, "id": L.id, "op": L.op, "kernel": L.callee.split("<")[0],
            "input_types": [i.ctype for i in L.inputs], "output_type": L.output.ctype,
            "output_shape": list(L.output.shape),
            "accumulator": L.acc.cpp() if L.acc is not None else None,
            "constants": [{"role": a.role, "type": a.type.cpp(), "count": a.depth, "c_type": a.ctype}
                          for a in L.arrays],
            "parameters": L.n_params,
            "parameter_bits": L.params_bits, "macs": L.macs,
            "shift_add": (None if L.cost.kind != "shiftadd" else
                          {"form": "straight-line" if L.straight else "table kernel",
                           "terms": L.straight.terms if L.straight else None}),
            "reuse": e.reuse, "mul_impl": e.mul_impl, "multipliers": e.multipliers,
            "multipliers_in_luts": e.to_luts and e.multipliers > 0,
            "dsp_packed": e.packed, "dsp_pack": L.dsp_pack or None,
            "dsp_estimate": e.dsp, "lut_estimate": e.lut, "adder_estimate": e.adders, "cycles": e.cycles,
            "options": dict(sorted(dataclasses.asdict(L.options).items())),
        })
    mem = plan.memory
    tgt = plan.target
    width_of = {T.typedef: T.type.width for T in plan.tensors}
    fifo = fifos_cost((width_of[s.typedef], s.depth) for s in plan.streams)
    return {
        "tool": "qfx-compile", "format": 2,
        "model": names.comment(Path(model_path).name, 120),
        "target": tgt.name, "part": plan.part, "clock_ns": plan.clock_ns,
        "top": plan.top,
        "input": {"type": plan.input.ctype, "shape_hwc": plan.input.hwc, "count": plan.input.count,
                  "axis_bits": plan.input.axis_w},
        "output": {"type": plan.output.ctype, "shape_hwc": plan.output.hwc,
                   "count": plan.output.count, "axis_bits": plan.output.axis_w},
        "layers": layers,
        "totals": {"parameter_bits": sum(x["parameter_bits"] for x in layers),
                   "parameters": sum(x["parameters"] for x in layers),
                   "macs": sum(x["macs"] for x in layers),
                   "dsp_estimate": design.dsp, "lut_estimate": design.lut, "adder_estimate": design.adders,
                   "interval_cycles": design.interval_cycles, "latency_cycles": design.latency_cycles,
                   "samples_per_s": round(design.samples_per_s, 1),
                   "macs_per_s": round(design.macs_per_s), "roofline_share": round(design.roofline_share, 6),
                   "roofline": design.roofline.as_dict(),
                   "latency_us": round(design.latency_cycles * plan.clock_ns / 1000, 2),
                   "weight_bram18": mem.bram18, "weight_lutram_luts": mem.lut, "weight_bits": mem.bits,
                   "fifo_bram18": fifo[0], "fifo_luts": fifo[1],
                   "part_bram18": tgt.bram36 * 2, "part_dsp": tgt.dsp, "part_lut": tgt.lut,
                   "dsp_budget": int(tgt.dsp * DSP_SHARE)},
        "estimate_rules": "qfx_compile/backend/estimate.py: DSPs per product by operand widths "
                          f"({tgt.dsp_kind}), products with an operand of <= {LUT_MUL_BITS} bits in LUTs "
                          "(mul_impl 0), reuse = cycles per output vector/pixel, cycles per sample per layer; "
                          "samples/s from the slowest layer (DATAFLOW), latency along the longest path; "
                          "roofline: DSPs x products per DSP + LUTs / LUTs per product, per cycle",
        "vectors": {"count": n_vectors, "source": vectors_source},
        "csim": csim,
        # what the frontend decided that changes what the design outputs (exact float output, softmax -> argmax)
        "notes": [names.comment(n, 300) for n in plan.graph.metadata.get("qfx.notes", "").splitlines()],
    }


#: Translation units for the layer functions: each re-parses the ap_types headers (~2 s of g++),
#: so a few units (built in parallel by make -j) beat one per layer.
MAX_PARTS = 4


def split_parts(layers, max_parts: int = MAX_PARTS) -> list[dict]:
    """Consecutive groups of layers with about equal cost (kernel instantiations + weights)."""
    if not layers:
        return []
    cost = [4000 + sum(a.depth for a in L.arrays) for L in layers]
    total = sum(cost)
    k = max(1, min(max_parts, len(layers), -(-total // 120_000)))
    parts, cur, acc = [], [], 0
    for L, c in zip(layers, cost):
        cur.append(L)
        acc += c
        if len(parts) < k - 1 and acc >= total * (len(parts) + 1) / k:
            parts.append(cur)
            cur = []
    if cur:
        parts.append(cur)
    return [{"name": f"part{i}", "layers": p} for i, p in enumerate(parts)]


def write_report(outdir: Path, report: dict) -> None:
    """(Re)write OUTDIR/report.json (atomically: temp file + rename)."""
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    tmp = outdir / ".report.json.tmp"
    tmp.write_text(text, encoding="ascii")
    os.replace(tmp, outdir / "report.json")


def render_files(plan, *, ap_types: str, inputs: list[str], expected: list[str], vectors_source: str,
                 report: dict) -> dict[str, str]:
    """Every file of the project as ``{relative path: text}`` (no I/O)."""
    env = environment()
    ctx = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    ctx["parts"] = split_parts(plan.layers)
    # a Make value: '$' and '#' would be read by make (the path may contain spaces: quoted where used)
    ctx.update(ap_types=ap_types.replace("$", "$$").replace("#", "\\#"), n_vectors=len(inputs),
               vectors_source=vectors_source)
    files: dict[str, str] = {}
    top = plan.top
    files[f"firmware/{top}.cpp"] = env.get_template("firmware/top.cpp.j2").render(ctx)
    files[f"firmware/{top}.h"] = env.get_template("firmware/top.h.j2").render(ctx)
    files["firmware/parameters.h"] = env.get_template("firmware/parameters.h.j2").render(ctx)
    files["firmware/layers.h"] = env.get_template("firmware/layers.h.j2").render(ctx)
    lt = env.get_template("firmware/layer.cpp.j2")
    wt = env.get_template("firmware/weights.h.j2")
    for P in ctx["parts"]:
        files[f"firmware/layers/{P['name']}.cpp"] = lt.render(ctx, part=P)
    st = env.get_template("firmware/shiftadd.h.j2")
    files["firmware/qfx_gen.h"] = env.get_template("firmware/straight.h.j2").render(ctx)
    for L in plan.layers:
        if L.arrays:
            files[f"firmware/weights/{L.id}.h"] = wt.render(ctx, L=L)
        if L.straight:
            files[f"firmware/shiftadd/{L.id}.h"] = st.render(ctx, L=L)
    files["tb/testbench.cpp"] = env.get_template("tb/testbench.cpp.j2").render(ctx)
    files["tb_data/inputs.txt"] = "".join(line + "\n" for line in inputs)
    files["tb_data/expected.txt"] = "".join(line + "\n" for line in expected)
    files["Makefile"] = env.get_template("Makefile.j2").render(ctx)
    files["build.tcl"] = env.get_template("build.tcl.j2").render(ctx)
    files["README.md"] = env.get_template("README.md.j2").render(ctx)
    lib = hls_lib_dir()
    for p in sorted(lib.glob("*.h")):
        files[f"firmware/hls_lib/{p.name}"] = p.read_text(encoding="utf-8")
    files["report.json"] = json.dumps(report, indent=2, sort_keys=True) + "\n"
    for path, text in files.items():
        try:
            text.encode("ascii")
        except UnicodeEncodeError as e:  # pragma: no cover - a bug: untrusted text escaped sanitizing
            raise RuntimeError(f"internal: non-ASCII text would be written to {path}") from e
    return files
