"""Verilog of an adder graph (:mod:`.addergraph`): the RTL view of a straight-line shift-add layer.

One module per layer: input ports ``x<i>`` (the input mantissas), output ports
``y<j>`` (output j's exact integer, see :class:`OutSpec`). Every signal is an
unsigned vector of its graph width holding the two's-complement (or unsigned)
value; operands are sign- or zero-extended explicitly, so the arithmetic is
modulo ``2^W`` and exact (every interval fits its width). An adder
``a +- (b << s)`` adds only the bits above ``s``: the low ``s`` bits are ``a``'s
(wiring), as :attr:`.addergraph.Adder.cost` counts them.

Pipelining (``levels`` > 0): a register stage after every ``levels`` adder levels;
an operand from an earlier stage is delayed by a register chain, so a new input
vector is accepted every clock and the outputs follow ``latency`` clocks later.
``levels`` = 0: combinational (``latency`` 0; the ``clk`` port is unused).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .addergraph import Graph, bits


@dataclasses.dataclass(frozen=True)
class OutSpec:
    """``y = bias * 2**bias_shift + (-1 if neg else 1) * (signal * 2**shift)`` (signal None: the bias alone)."""
    signal: int | None
    shift: int = 0
    neg: bool = False
    bias: int = 0
    bias_shift: int = 0


@dataclasses.dataclass
class Module:
    name: str
    text: str
    in_width: int
    in_signed: bool
    out_widths: list[int]
    out_signed: list[bool]
    latency: int


def out_interval(g: Graph, o: OutSpec) -> tuple[int, int]:
    b = o.bias << o.bias_shift
    if o.signal is None:
        return b, b
    lo, hi = g.lo[o.signal] << o.shift, g.hi[o.signal] << o.shift
    return (b - hi, b - lo) if o.neg else (b + lo, b + hi)


def plain_outputs(g: Graph) -> list[OutSpec]:
    """The graph's own outputs (``y_j = +-(signal << shift)``)."""
    return [OutSpec(o.signal, o.shift, o.neg) for o in g.outputs]


def _ext(v: str, w: int, signed: bool, to: int) -> str:
    """``v`` (``w`` bits) as ``to`` bits: sign/zero extension, or its low bits (exact modulo 2^to)."""
    if w >= to:
        return v if w == to else f"{v}[{to - 1}:0]"
    fill = f"{{{to - w}{{{v}[{w - 1}]}}}}" if signed else f"{{{to - w}{{1'b0}}}}"
    return f"{{{fill}, {v}}}"


def verilog(g: Graph, name: str, in_width: int, in_signed: bool, outputs: list[OutSpec] | None = None,
            levels: int = 0, comments: list[str] | None = None) -> Module:
    """The module text. ``comments[sig]``: a note per signal (e.g. the C++ name)."""
    outputs = plain_outputs(g) if outputs is None else outputs
    n_sig = g.n_in + g.n_adders
    width = [in_width] * g.n_in + [a.width for a in g.adders]
    signed = [in_signed] * g.n_in + [g.lo[a.id] < 0 for a in g.adders]
    # stage of each signal: inputs are ready at stage 0; an adder at depth d is computed in stage (d-1)//levels
    stage = [0] * n_sig
    if levels > 0:
        for a in g.adders:
            stage[a.id] = (g.depth[a.id] - 1) // levels
    ready = [0 if s < g.n_in else (stage[s] + 1 if levels > 0 else 0) for s in range(n_sig)]
    last = max([ready[o.signal] for o in outputs if o.signal is not None] + [0]) if levels > 0 else 0
    need = [0] * n_sig   # register chain length each signal needs after its ready stage
    has_q = [False] * n_sig  # an adder's own stage register is read

    def at(sig: int, st: int) -> str:
        """The signal's value as seen in stage ``st`` (combinational inside its own stage)."""
        if levels == 0 or (sig >= g.n_in and stage[sig] == st):
            return f"s{sig}"
        k = st - ready[sig]
        need[sig] = max(need[sig], k)
        if sig >= g.n_in:
            has_q[sig] = True
        return f"s{sig}_r{k}" if k > 0 else (f"s{sig}_q" if sig >= g.n_in else f"s{sig}")

    body = []
    for a in g.adders:
        w, s = a.width, min(a.shift, a.width)
        st = stage[a.id]
        pa, pb = at(a.a, st), at(a.b, st)
        note = f"  // {comments[a.id]}" if comments else ""
        ax = _ext(pa, width[a.a], signed[a.a], w)
        body.append(f"wire [{w - 1}:0] s{a.id}_a = {ax};{note}")
        op = "-" if a.sub else "+"
        if s >= w:
            body.append(f"wire [{w - 1}:0] s{a.id} = s{a.id}_a;")
        elif s == 0:
            body.append(f"wire [{w - 1}:0] s{a.id} = s{a.id}_a {op} {_ext(pb, width[a.b], signed[a.b], w)};")
        else:
            body.append(f"wire [{w - s - 1}:0] s{a.id}_h = s{a.id}_a[{w - 1}:{s}] {op} "
                        f"{_ext(pb, width[a.b], signed[a.b], w - s)};")
            body.append(f"wire [{w - 1}:0] s{a.id} = {{s{a.id}_h, s{a.id}_a[{s - 1}:0]}};")
    outs = []
    ow, osg = [], []
    for j, o in enumerate(outputs):
        lo, hi = out_interval(g, o)
        w = bits(lo, hi)
        ow.append(w)
        osg.append(lo < 0)
        if o.signal is None:
            outs.append(f"assign y{j} = {w}'d{(o.bias << o.bias_shift) % (1 << w)};")
            continue
        v = _ext(at(o.signal, last), width[o.signal], signed[o.signal], w)
        term = f"({v} << {o.shift})" if o.shift else v
        b = (o.bias << o.bias_shift) % (1 << w)
        if o.bias:
            outs.append(f"assign y{j} = {w}'d{b} {'-' if o.neg else '+'} {term};")
        elif o.neg:
            outs.append(f"assign y{j} = {w}'d0 - {term};")
        else:
            outs.append(f"assign y{j} = {term};")
    regs, clocked = [], []
    for sig in range(n_sig if levels > 0 else 0):
        w, prev = width[sig], f"s{sig}"
        if has_q[sig]:
            regs.append(f"reg [{w - 1}:0] s{sig}_q;")
            clocked.append(f"s{sig}_q <= s{sig};")
            prev = f"s{sig}_q"
        for k in range(1, need[sig] + 1):
            regs.append(f"reg [{w - 1}:0] s{sig}_r{k};")
            clocked.append(f"s{sig}_r{k} <= {prev};")
            prev = f"s{sig}_r{k}"
    if clocked:
        clocked = ["always @(posedge clk) begin"] + ["    " + c for c in clocked] + ["end"]
    ports = ["input clk"] + [f"input [{in_width - 1}:0] s{i}" for i in range(g.n_in)] + \
        [f"output [{w - 1}:0] y{j}" for j, w in enumerate(ow)]
    head = [f"// {name}: adder graph, {g.n_adders} adders, depth {g.max_depth}, "
            f"{'combinational' if levels == 0 else f'a register stage every {levels} adder levels, latency {last}'}",
            "// signals are unsigned vectors holding each value's exact two's-complement / unsigned bits",
            f"module {name} (", "    " + ",\n    ".join(ports), ");"]
    text = "\n".join(head + ["    " + ln for ln in regs + body + outs + clocked] + ["endmodule", ""])
    return Module(name, text, in_width, in_signed, ow, osg, last)


def testbench(m: Module, n_vectors: int, vectors: str = "vectors.txt") -> str:
    """Icarus/Verilator testbench: reads ``n_vectors`` lines ``x_0 .. x_{n-1} y_0 .. y_{m-1}`` (decimal),
    streams one input vector per clock, compares every output bit for bit ``latency`` clocks later,
    prints ``RTL: N passed, M failed`` and finishes."""
    n_in = len([1 for ln in m.text.splitlines() if ln.strip().startswith("input [")])
    n_out = len(m.out_widths)
    lines = [f"`timescale 1ns/1ps", f"module tb_{m.name};", "    reg clk = 0;",
             f"    reg [{m.in_width - 1}:0] x [0:{n_in - 1}];",
             f"    reg signed [63:0] mem [0:{n_vectors * (n_in + n_out) - 1}];"]
    lines += [f"    wire [{w - 1}:0] y{j};" for j, w in enumerate(m.out_widths)]
    conn = ", ".join([".clk(clk)"] + [f".s{i}(x[{i}])" for i in range(n_in)] + [f".y{j}(y{j})" for j in range(n_out)])
    lines.append(f"    {m.name} dut({conn});")
    lines += ["    integer fd, r, t, i, bad, good, vbad, nbad;", "    reg signed [63:0] v;", "    initial begin",
              f"        fd = $fopen(\"{vectors}\", \"r\");",
              "        if (fd == 0) begin $display(\"RTL: cannot open vectors\"); $finish; end",
              f"        for (i = 0; i < {n_vectors * (n_in + n_out)}; i = i + 1) begin",
              "            r = $fscanf(fd, \"%d\", v); mem[i] = v;",
              "            if (r != 1) begin $display(\"RTL: short vector file\"); $finish; end",
              "        end",
              "        bad = 0; good = 0; nbad = 0;",
              f"        for (t = 0; t < {n_vectors} + {m.latency}; t = t + 1) begin",
              f"            if (t < {n_vectors})",
              f"                for (i = 0; i < {n_in}; i = i + 1) x[i] = mem[t * {n_in + n_out} + i];",
              "            #1;"]
    lines.append(f"            if (t >= {m.latency}) begin")
    lines.append("                vbad = bad;")
    for j, (w, s) in enumerate(zip(m.out_widths, m.out_signed)):
        ext = f"{{{{{64 - w}{{y{j}[{w - 1}]}}}}, y{j}}}" if s else f"{{{{{64 - w}{{1'b0}}}}, y{j}}}"
        if w >= 64:
            ext = f"y{j}"
        lines.append(f"                if ({ext} !== mem[(t - {m.latency}) * {n_in + n_out} + {n_in + j}]) "
                     f"begin bad = bad + 1; if (bad < 5) $display(\"RTL mismatch: vector %0d output {j}\", "
                     f"t - {m.latency}); end else good = good + 1;")
    lines += ["                if (bad != vbad) nbad = nbad + 1;",
              "            end", "            #4 clk = 1; #5 clk = 0;", "        end",
              f"        $display(\"RTL: %0d passed, %0d failed (outputs compared: %0d, wrong: %0d)\", "
              f"{n_vectors} - nbad, nbad, good + bad, bad);",
              "        $finish;", "    end", "endmodule", ""]
    return "\n".join(lines)


# ------------------------------------------------------------ yosys
#: yosys ``synth_xilinx -family`` of each DSP kind's parts.
FAMILY = {"DSP48E2": "xcup", "DSP48E1": "xc7"}


def yosys_script(verilog_file: str, top: str, family: str, stat_json: str) -> str:
    """The yosys commands of ``make rtl-synth``: synthesis for the family, then cell counts as JSON."""
    return (f"read_verilog {verilog_file}; synth_xilinx -family {family} -top {top} -noiopad; "
            f"tee -q -o {stat_json} stat -json")


def cell_counts(stat: dict) -> dict:
    """LUT / CARRY / FF / DSP counts from yosys ``stat -json`` output (the whole design).

    ``lut``: LUT1..LUT6 plus INV (a LUT1 on the device); ``carry``: CARRY4/CARRY8 cells;
    ``ff``: flip-flops (FD*); ``dsp``: DSP48* cells.
    """
    cells = stat["design"]["num_cells_by_type"]
    out = {"lut": 0, "carry": 0, "ff": 0, "dsp": 0}
    for name, n in cells.items():
        if name.startswith("LUT") or name == "INV":
            out["lut"] += n
        elif name.startswith("CARRY"):
            out["carry"] += n
        elif name.startswith("FD"):
            out["ff"] += n
        elif name.startswith("DSP"):
            out["dsp"] += n
    out["cells"] = dict(cells)
    return out


def synth(text: str, top: str, family: str = "xcup", yosys: str = "yosys", timeout: float | None = None) -> dict:
    """Runs yosys on Verilog ``text`` (in a temporary folder); returns :func:`cell_counts`."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "in.v").write_text(text)
        subprocess.run([yosys, "-q", "-p", yosys_script("in.v", top, family, "stat.json")], cwd=d, check=True,
                       capture_output=True, text=True, timeout=timeout)
        return cell_counts(json.loads((Path(d) / "stat.json").read_text()))


# ------------------------------------------------------------ the project's RTL folder
#: Layer input vectors (windows, for a conv) per layer in the RTL testbench.
RTL_MAX_VECTORS = 2000


def layer_outputs(code, x_t, bias_raw, b_t) -> list[tuple[OutSpec, int]]:
    """Each output of a straight-line layer as the C++ accumulates it (``shiftadd.layer_code``):
    ``(spec, frac)`` with the accumulator's mantissa at ``frac`` (before the cast to out_t)."""
    out = []
    for j, o in enumerate(code.graph.outputs):
        braw = int(bias_raw[j])
        if o.signal is None:
            out.append((OutSpec(None, bias=braw), b_t.frac_bits))
            continue
        f_r = x_t.frac_bits - code.base[j] - o.shift
        if braw == 0 and not o.neg:
            out.append((OutSpec(o.signal), f_r))
        else:
            f = max(f_r, b_t.frac_bits)
            out.append((OutSpec(o.signal, f - f_r, o.neg, braw, f - b_t.frac_bits), f))
    return out


def _layer_inputs(node, x_raw):
    """The adder graph's input vectors of a dense (the flat input) or conv2d layer (every window)."""
    if node.op == "dense":
        return np.asarray(x_raw).reshape(len(x_raw), -1)
    from ..ir.ops.conv2d import geometry, patches
    kernel, stride, pads = geometry(node)
    p = patches(np.asarray(x_raw), kernel, stride, pads)         # (N, C, KH, KW, H', W')
    n, c, kh, kw, ho, wo = p.shape
    return p.reshape(n, c * kh * kw, ho * wo).transpose(0, 2, 1).reshape(-1, c * kh * kw)


def project_files(graph, x_raw, levels: int = 0, family: str = "xcup") -> dict[str, str]:
    """``rtl/<layer>.v``, ``rtl/tb_<layer>.v``, ``rtl/vec_<layer>.txt`` for every K-hot dense / conv2d
    layer the estimator makes straight-line (``shiftadd.straight_line``; of a layer with mixed rows, its K-hot
    rows), plus ``rtl/family``.

    The module computes each output's accumulator (bias included, before the cast to out_t)
    from the layer's input mantissas; the vectors are the layer's inputs for the project's test
    vectors (the IR interpreter) and the exact accumulators from the weights (Fractions, not the
    graph). The graph is built from the IR weights in their own order ((C, KH, KW) windows), the
    same optimizer and settings as the C++ (which reads the inputs in stream order).
    """
    from fractions import Fraction

    from ..fixed.types import FixedType
    from ..ir.interpret import run_all
    from ..ir.ops.conv2d import expand_groups, groups
    from . import names, shiftadd

    files: dict[str, str] = {}
    env = None
    for node in graph.nodes:
        w = node.params.get("weight") if node.op in ("dense", "conv2d") else None
        if w is None or w.k_hot is None:
            continue
        if node.op == "conv2d":
            w = expand_groups(w, groups(node))
        rows = w.khot_rows()  # mixed rows (Mix and Match): the shift-add core's rows, the K-hot ones
        if not rows.any():
            continue
        raw = np.asarray(w.raw).reshape(w.raw.shape[0], -1)[rows]
        frac = np.broadcast_to(np.asarray(w.frac_bits()).reshape(-1), (rows.size,))[rows]
        b = node.params.get("bias")
        b_raw = [0] * raw.shape[0] if b is None else [int(v) for v in np.asarray(b.raw).reshape(-1)[rows]]
        b_f = np.zeros(raw.shape[0], dtype=np.int64) if b is None else \
            np.broadcast_to(np.asarray(b.frac_bits()).reshape(-1), (rows.size,))[rows]
        bf = int(b_f.max())
        b_raw = [v << (bf - int(f)) for v, f in zip(b_raw, b_f)]   # one binary point for all biases
        b_t = FixedType(64, 64 - bf, True)   # only its binary point matters to the code
        x_t = graph.tensors[node.inputs[0]].type
        terms = shiftadd.layer_terms(raw, frac)
        code = shiftadd.straight_line(terms, x_t, b_raw, b_t, lambda i: f"m{i}", lambda i: f"x[{i}]",
                                      n_in=raw.shape[1])
        if code is None:
            continue
        if env is None:
            env = run_all(graph, x_raw=np.asarray(x_raw))
        xs = _layer_inputs(node, env[node.inputs[0]][0])[:RTL_MAX_VECTORS]
        outs = layer_outputs(code, x_t, b_raw, b_t)
        lid = f"{len(files) // 3}_{names.identifier(node.name, prefix='l', max_len=40)}"
        m = verilog(code.graph, f"sa_{lid}", x_t.width, x_t.signed, [o for o, _ in outs], levels,
                    comments=code.names)
        # exact sums of mantissa products (Python integers), then each accumulator on its grid
        sums = np.asarray(xs, dtype=object) @ raw.T.astype(object)        # (vectors, n_out)
        scale = [(Fraction(2) ** (f - int(frac[j]) - x_t.frac_bits), Fraction(b_raw[j]) * Fraction(2) ** (f - bf))
                 for j, (_, f) in enumerate(outs)]
        lines = []
        for x, row in zip(xs, sums):
            ys = []
            for (sc, bc), v in zip(scale, row):
                acc = sc * int(v) + bc
                assert acc.denominator == 1, "accumulator not on its grid"
                ys.append(int(acc))
            lines.append(" ".join(str(int(t)) for t in list(x) + ys))
        files[f"rtl/{m.name}.v"] = m.text
        files[f"rtl/tb_{m.name}.v"] = testbench(m, len(lines), f"rtl/vec_{m.name}.txt")
        files[f"rtl/vec_{m.name}.txt"] = "\n".join(lines) + "\n"
    if files:
        files["rtl/family"] = family + "\n"
    return files
