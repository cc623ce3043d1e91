"""qfx-compile: a fixed-point ONNX model -> a complete, bit-exact Vitis HLS project.

Exit status: 0 success; 2 a user error (bad or unsupported model file or config
file, unknown target or option, refused or unwritable output folder, another run
on the same folder, model too big for the part); 1 an internal error or a C
simulation mismatch; 128 + N when interrupted by signal N (nothing half-written).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import click

from .targets import TARGETS, TargetError

EXAMPLE = """\b
Example:
  qfx-compile model.onnx --target ultra96 -o build/model_hls --csim
  cd build/model_hls && make csim        # g++ C simulation, no Vitis needed
  make csynth                            # Vitis HLS synthesis (needs vitis_hls)
"""


class UserError(Exception):
    """Printed as one paragraph; exit status 2."""


def _list_targets(console) -> None:
    click.echo(f"{'target':<9} {'part':<22} {'clock':>6} {'DSP':>14} {'LUT':>8} {'FF':>8} {'BRAM36':>6} {'URAM':>4}  board")
    for name in sorted(TARGETS):
        x = TARGETS[name]
        click.echo(f"{name:<9} {x.part:<22} {x.clock_ns:>4g}ns {x.dsp:>6,} {x.dsp_kind:<7} {x.lut:>8,} {x.ff:>8,} "
                   f"{x.bram36:>6,} {x.uram:>4}  {x.board}")


_MODES = {"AP_TRN": "TRN", "AP_WRAP": "WRAP"}


def short_type(cpp: str | None) -> str:
    """``ap_fixed<8, 3, AP_RND_CONV, AP_SAT>`` -> ``fixed<8,3,RND_CONV,SAT>``; default modes left out."""
    if not cpp:
        return "-"
    from .fixed.types import FixedType

    try:
        t = FixedType.parse(cpp)
    except ValueError:
        return cpp
    args = [str(t.width), str(t.int_bits)]
    if t.rounding != "AP_TRN" or t.overflow != "AP_WRAP":
        args.append(t.rounding[3:])
    if t.overflow != "AP_WRAP":
        args.append(t.overflow[3:])
    return f"{'fixed' if t.signed else 'ufixed'}<{','.join(args)}>"


def middle_truncate(text: str, n: int) -> str:
    """``layer1.0.conv1/Conv`` -> ``layer1...1/Conv``: keep both ends, which tell layers apart."""
    if len(text) <= n:
        return text
    if n <= 3:
        return text[:n]
    head = (n - 1) // 2
    tail = n - 1 - head
    return text[:head] + "~" + text[len(text) - tail:]


def shorten_name(text: str, n: int) -> str:
    """Fit a module path into ``n`` characters keeping what tells layers apart.

    Leading dotted segments are abbreviated first to their initial and digits
    (``block2.shortcut.0`` -> ``b2.s.0``, ``block1.conv1`` -> ``b1.conv1``); what is still
    too long is cut in the middle (:func:`middle_truncate`)."""
    if len(text) <= n:
        return text
    seg = text.split(".")
    for i in range(len(seg) - 1):
        if len(".".join(seg)) <= n:
            break
        s0 = seg[i]
        if s0:
            seg[i] = s0[0] + "".join(c for c in s0[1:] if c.isdigit())
    return middle_truncate(".".join(seg), n)


def _compact(v: int) -> str:
    if v < 10_000:
        return f"{v:,}"
    if v < 1_000_000:
        return f"{v / 1000:.1f}k" if v < 100_000 else f"{v // 1000}k"
    return f"{v / 1e6:.1f}M"


_OPS = {"batchnorm": "bn", "global_avgpool": "gap", "maxpool": "maxpool", "avgpool": "avgpool", "conv2d": "conv"}


def _summary(console, report: dict) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    wide = console.width >= 120
    cols = [("layer", "left"), ("op", "left"), ("out type", "left"), ("acc", "left"), ("params", "right"),
            ("DSP", "right"), ("LUT", "right"), ("cycles", "right")]
    if wide:
        cols[5:5] = [("reuse", "right")]
        cols.insert(-1, ("adders", "right"))
    worst = max((L["cycles"] for L in report["layers"]), default=0)
    rows = []
    for L in report["layers"]:
        op = _OPS.get(L["op"], L["op"]) + ("+sa" if L.get("shift_add") else "")
        name = _safe(L["name"])
        if not wide and "/" in name.strip("/"):
            name = name.rsplit("/", 1)[0]  # "block1.conv1/Conv": the ONNX op suffix repeats the op column
        row = [name, op, short_type(L["output_type"]), short_type(L["accumulator"]),
               _compact(L["parameters"]), _compact(L["dsp_estimate"]), _compact(L["lut_estimate"]),
               ("*" if L["cycles"] == worst and worst else "") + _compact(L["cycles"])]
        if wide:
            row[5:5] = [str(L["reuse"]) if L["reuse"] else "-"]
            row.insert(-1, _compact(L["adder_estimate"]))
        rows.append(row)
    tot = report["totals"]
    tr = ["total", "", "", "", _compact(tot["parameters"]), f"{tot['dsp_estimate']:,}", _compact(tot["lut_estimate"]),
          _compact(tot["interval_cycles"])]
    if wide:
        tr[5:5] = [""]
        tr.insert(-1, _compact(tot["adder_estimate"]))
    # the layer column gets what the others leave (names are cut in the middle, never wrapped)
    others = sum(max([len(c[0])] + [len(r[i]) for r in rows + [tr]]) + 1 for i, c in enumerate(cols) if i)
    name_w = max(8, min(64, console.width - others - 1))
    t = Table(title=Text(f"{report['model']} -> {report['target']} ({report['part']}, {report['clock_ns']:g} ns)"),
              box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0), title_justify="left", show_edge=False)
    for col, just in cols:
        t.add_column(col, justify=just, no_wrap=True, overflow="ellipsis")
    for row in rows:
        row[0] = shorten_name(row[0], name_w)
        t.add_row(*(Text(c) for c in row))  # names from the model: plain text, never rich markup
    t.add_section()
    t.add_row(*(Text(c) for c in tr))
    console.print(t)
    console.print("+sa: K-hot weights as shift-add (adders, no DSP); LUT: fabric multipliers and adders; "
                  "* slowest layer", markup=False, highlight=False)
    small = [L["name"] for L in report["layers"] if L.get("multipliers_in_luts")]
    console.print(f"estimate: {tot['dsp_estimate']:,} DSP of {tot['part_dsp']:,} (budget {tot['dsp_budget']:,}), "
                  f"~{tot['lut_estimate']:,} LUT of {tot['part_lut']:,}, {tot['adder_estimate']:,} shift-add adders; "
                  f"{tot['interval_cycles']:,} cycles/sample at {report['clock_ns']:g} ns = "
                  f"{tot['samples_per_s']:,.0f} samples/s, latency about {tot['latency_us']:,} us; "
                  f"{_roofline_text(tot)}.",
                  markup=False, highlight=False)
    if small:
        console.print(f"note: {len(small)} layer(s) multiply operands of <= 4 bits: counted in LUTs, not DSPs "
                      f"(set mul_impl 1 in --config to force DSPs).", markup=False, highlight=False)
    asked = [L for L in report["layers"] if L.get("dsp_packed") or (L["options"].get("dsp_pack") and L.get("dsp_pack"))]
    for L in asked:  # DSP packing: what was packed, and why a layer that asked for it was not
        console.print(f"dsp_pack {L['name']}: {L['dsp_pack']}", markup=False, highlight=False)
    console.print(f"input {short_type(report['input']['type'])} HWC {report['input']['shape_hwc']}, output "
                  f"{short_type(report['output']['type'])} HWC {report['output']['shape_hwc']}; weight memory "
                  f"{tot['weight_bram18']} BRAM18 of {tot['part_bram18']}, {tot['weight_lutram_luts']} LUTs of ROM; "
                  f"stream FIFOs {tot['fifo_bram18']} BRAM18, {tot['fifo_luts']} LUTs.",
                  markup=False, highlight=False)
    v = report["vectors"]
    console.print(f"test vectors: {v['count']} ({v['source']}).", markup=False, highlight=False)
    cs = report.get("csim")
    if cs is None:
        console.print("C simulation: not run (pass --csim, or run 'make csim' in the project).", highlight=False)
    else:
        console.print(f"C simulation: {cs['passed']} passed, {cs['failed']} failed "
                      f"(build {cs['build_s']} s, run {cs['run_s']} s, {cs.get('vectors_per_s', 0):,} vectors/s).",
                      markup=False, highlight=False)
        for line in cs["first_mismatches"]:
            console.print("  " + line, markup=False, highlight=False)


def _roofline_text(tot: dict) -> str:
    """The design's share of the part's peak MAC rate (report totals, estimate.Roofline)."""
    r = tot["roofline"]
    return (f"{tot['roofline_share']:.2%} of the part's roofline ({r['part_dsp']:,} DSP x {r['products_per_dsp']} "
            f"+ {r['part_lut']:,} LUT / {r['luts_per_product']} per product = {r['peak_macs_per_s'] / 1e9:,.1f} "
            f"GMAC/s; achieved {tot['macs_per_s'] / 1e9:,.3g} GMAC/s)")


@contextlib.contextmanager
def _step(console, text: str, quiet: bool):
    if quiet:
        yield
        return
    from rich.text import Text

    # the text holds file names and paths: shown as plain text, never parsed as rich markup
    t0 = time.perf_counter()
    with console.status(Text(_safe(text))):
        yield
    console.print(Text.assemble(("done", "green"), f" {_safe(text)} ({time.perf_counter() - t0:.1f} s)"),
                  highlight=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLE)
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("-t", "--target", default="ultra96", show_default=True, metavar="NAME",
              help="Board to compile for (see --list-targets).")
@click.option("-o", "--outdir", "outdir", default=None, metavar="OUTDIR",
              help="Project folder to write (default: <model name>_hls next to the current folder).")
@click.option("--clock-ns", type=float, default=None, help="Clock period in ns (default: the target's).")
@click.option("--part", default=None, help="Override the FPGA part of the target.")
@click.option("--csim", is_flag=True, help="Build and run the C simulation now; non-zero exit on any mismatch.")
@click.option("--force", is_flag=True, help="Replace OUTDIR even when qfx-compile did not create it.")
@click.option("--config", "config", default=None, metavar="FILE",
              help='Per-layer options (JSON): {"default": {"stream_depth": 2}, "layers": {"<name>": {"reuse": 16, '
                   '"mul_impl": 1}}}; options: stream_depth, reuse (cycles per output, 0 = chosen to fit the '
                   'DSPs), mul_impl (0 auto, 1 DSP, 2 LUTs), shiftadd (K-hot layers: 0 auto, 1 the table '
                   'kernel, folded by reuse), dsp_pack (1: two products per DSP where the widths allow it), inline.')
@click.option("--vectors", type=click.IntRange(1, 100000), default=100, show_default=True,
              help="Test vectors in the testbench (at most those stored in the model).")
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Parallel g++ jobs for --csim.")
@click.option("--list-targets", is_flag=True, help="List the known targets and exit.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.option("--input-type", "input_type", default=None, metavar="TYPE",
              help="Type of the graph input the hardware reads, e.g. 'ap_fixed<16,6>' (default: the file's "
                   "finn_datatype annotation, else the input's first quantizer).")
@click.option("--softmax", type=click.Choice(["argmax"]), default=None,
              help="argmax: drop a final Softmax; the design outputs its input, whose argmax is the model's decision.")
@click.option("--explore", is_flag=True,
              help="Search every layer's reuse, multiplier binding (DSP, LUT, or DSP packing: two products per DSP) "
                   "and shift-add form for the most "
                   "samples/s within the budget, then the least latency and resources; compile the chosen design "
                   "and write explore.json, explore_config.json and explore.png in OUTDIR.")
@click.option("--budget", default=None, metavar="SHARES",
              help="Shares of the part --explore may use, e.g. dsp=0.7,lut=0.6,bram=0.8 (default 0.8 each of "
                   "dsp, lut, ff, bram).")
def _command(model, target, outdir, clock_ns, part, csim, force, config, vectors, jobs, list_targets, quiet,
             input_type=None, softmax=None, explore=False, budget=None):
    """Compile a fixed-point ONNX MODEL (qfx or QONNX) into a Vitis HLS project whose C simulation is
    bit-exact with PyTorch: firmware, testbench with test vectors, Makefile (make csim needs only g++),
    build.tcl, README.md and report.json."""
    from rich.console import Console

    console = Console(stderr=False, highlight=False)
    err = Console(stderr=True, highlight=False)
    if list_targets:
        _list_targets(console)
        return 0
    if model is None:
        raise UserError("no MODEL given: pass the path of an ONNX file, e.g. 'qfx-compile model.onnx --target "
                        "ultra96' (see qfx-compile --help).")
    if budget is not None and not explore:
        raise UserError("--budget sets the shares of the part that --explore may use; add --explore")
    return _compile(console, err, model, target, outdir, clock_ns, part, csim, force, config, vectors, jobs, quiet,
                    input_type, softmax, explore, budget)


def _safe(text: object, max_len: int = 400) -> str:
    """Untrusted text for the terminal: no control characters or escape sequences (names.printable)."""
    from .backend.names import printable

    return printable(text, max_len)


def _safe_message(text: object) -> str:
    """A whole message: each line made printable (messages quote names, op types, domains and paths)."""
    return "\n".join(_safe(line, 1500) for line in str(text).splitlines() or [""])


def _compile(console, err, model, target, outdir, clock_ns, part, csim, force, config, vectors, jobs, quiet,
             input_type=None, softmax=None, explore=False, budget=None) -> int:
    from .backend import outdir as outdir_mod
    from .backend.config import ConfigError
    from .backend.csim import CsimError
    from .backend.plan import BackendError
    from .backend.project import compile_graph, precheck_arrays, precheck_size, resolve_target
    from .frontend.untrusted import weight_arrays
    from .backend.toolchain import ToolchainError
    from .frontend import ModelError, load_model
    from .ir.ops.base import OpError
    from .ir.passes import run_default_passes

    mp = Path(model)
    if not mp.is_file():
        raise UserError(f"model file {_safe(model)} does not exist (or is not a file): check the path; qfx-compile "
                        f"reads ONNX files written by qfx.export_onnx or QONNX files from Brevitas.")
    try:
        resolve_target(target, part, clock_ns)
    except TargetError as e:
        raise UserError(str(e))
    if config is not None and not Path(config).is_file():
        raise UserError(f"--config file {_safe(config)} does not exist: give a JSON file such as "
                        '{"default": {"stream_depth": 2}, "layers": {"<layer name>": {"reuse": 64}}}.')
    out = Path(outdir) if outdir else Path(mp.stem + "_hls")
    protected = ((str(mp), "model file"), (config, "config file"))
    try:
        # refuse a folder we may not replace before any work is done (checked again under the lock)
        outdir_mod.check_outdir(out, force, protected)
        # weights that cannot fit the part whatever the layout: refused before the frontend decodes them
        precheck_arrays(weight_arrays(str(mp)), target, part, clock_ns)
        with _step(err, f"reading {mp.name}", quiet):
            graph = load_model(str(mp), input_type=input_type, softmax=softmax)
        for note in graph.metadata.get("qfx.notes", "").splitlines():
            err.print(f"note: {note}", markup=False, highlight=False)
        precheck_size(graph, target, part, clock_ns)  # weights many times too big: refused before the passes
        with _step(err, "IR passes (shapes, accumulators, K-hot terms)", quiet):
            graph = run_default_passes(graph)
    except (ModelError, OpError) as e:
        # Problems of the input model only; any other exception is an internal error (exit 1).
        raise UserError(f"cannot compile {_safe(model)}: {e}")
    except outdir_mod.OutdirError as e:
        raise UserError(str(e))
    except TargetError as e:
        raise UserError(f"cannot compile {_safe(model)}: {e}")
    no_vectors = graph.vectors is None
    shares = None
    if explore:
        from .backend.explore import parse_budget
        try:
            shares = parse_budget(budget)
        except ValueError as e:
            raise UserError(str(e))
    # one qfx-compile at a time per OUTDIR, for the whole run (the project, then its C simulation)
    with outdir_mod.lock(out):
        explored = None
        try:
            with contextlib.ExitStack() as stack:
                used_config = config
                if explore:
                    explored, used_config = _explore(err, quiet, graph, target, part, clock_ns, config, shares,
                                                     stack)
                with _step(err, f"generating the project in {out}", quiet):
                    res = compile_graph(graph, out, target=target, part=part, clock_ns=clock_ns, config=used_config,
                                        vectors=vectors, force=force, model_path=str(mp), run_csim=False)
                if explored is not None:
                    from .backend.explore import write_outputs
                    for note in write_outputs(explored, res.outdir):
                        err.print(f"note: {_safe(note)}", markup=False, highlight=False)
        except outdir_mod.OutdirError as e:
            raise UserError(str(e))
        except (BackendError, TargetError, ConfigError) as e:
            raise UserError(f"cannot compile {_safe(model)}: {e}")
        except ToolchainError as e:
            raise UserError(str(e))
        if no_vectors:
            err.print(f"note: {_safe(mp.name)} holds no test vectors; the testbench uses {res.n_vectors} random "
                      f"inputs with expected outputs from the IR interpreter.", markup=False, highlight=False)
        rc = 0
        if csim:
            from .backend import csim as csim_mod
            from .backend.render import write_report

            try:
                with _step(err, "building the C simulation (g++)", quiet):
                    b = csim_mod.build(res.outdir, jobs=jobs)
                with _step(err, f"running the testbench on {res.n_vectors} vectors", quiet):
                    r = csim_mod.run(res.outdir, expected_vectors=res.n_vectors, build_s=b)
            except ToolchainError as e:
                raise UserError(str(e))
            except CsimError as e:
                err.print(f"error: {_safe_message(e)}", markup=False, highlight=False)
                return 1
            res.report["csim"] = r.as_dict()
            write_report(res.outdir, res.report)
            if not r.ok:
                rc = 1
    _summary(console, res.report)
    if explored is not None:
        c, d = explored.chosen, explored.default
        console.print(f"explore: {c.samples_per_s:,.0f} samples/s ({c.roofline_share:.2%} of the roofline), {c.dsp} "
                      f"DSP, {c.lut:,} LUT, {c.bram18} BRAM18 (budget {explored.limits['dsp']} DSP, "
                      f"{explored.limits['lut']:,} LUT, {explored.limits['bram18']} BRAM18); default design: "
                      + (f"{d.samples_per_s:,.0f} samples/s ({d.roofline_share:.2%}), {d.dsp} DSP, {d.lut:,} LUT"
                         if d else "does not fit")
                      + f"; searched {len(explored.samples)} designs in {explored.seconds:.2f} s "
                        f"(explore.json, explore_config.json, explore.png)", markup=False, highlight=False)
    console.print(f"project written to {_safe(res.outdir)} (report.json, README.md)", markup=False, highlight=False)
    if rc:
        err.print("error: the C simulation does not match the expected outputs bit for bit (see above).",
                  markup=False, highlight=False)
    return rc


def _explore(err, quiet, graph, target, part, clock_ns, config, shares, stack):
    """Run the design-space search; its choice reaches the plan as a per-layer options file (the --config path),
    merged over the user's --config (whose explicit reuse / mul_impl the search keeps)."""
    import json
    import tempfile

    from .backend.config import read_config
    from .backend.explore import explore
    from .backend.project import resolve_target

    t, p, c = resolve_target(target, part, clock_ns)
    with _step(err, f"exploring the design space for {t.name}", quiet):
        res = explore(graph, t, part=p, clock_ns=c, config=config, budget=shares)
    data = read_config(config) if config is not None else {}
    layers = dict(data.get("layers") or {})
    for name, opts in res.options_config()["layers"].items():  # the plan's layers (a mixed layer's two cores)
        layers[name] = {**layers.get(name, {}), **opts}
    data = {**data, "layers": layers}
    d = stack.enter_context(tempfile.TemporaryDirectory(prefix="qfx_explore_"))
    path = Path(d) / "explore_config.json"
    path.write_text(json.dumps(data))
    return res, str(path)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: unwinds like Ctrl-C, so every ``finally`` (temporary folders, lock) runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_unwind():
    """Turn SIGTERM/SIGHUP (and SIGINT) into :class:`Interrupted` while compiling; restore the handlers after."""
    def handler(signum, frame):
        raise Interrupted(signum)

    old = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            old[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread: leave the handlers alone
            pass
    try:
        yield
    finally:
        for sig, h in old.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, h)


def _echo_err(text: str) -> None:
    try:
        click.echo(text, err=True)
    except OSError:  # stderr closed or full: the exit status still tells
        pass


def main(argv=None) -> int:
    """Entry point: returns (and exits with) 0, 1, 2 (or 128 + the signal number when interrupted).

    0 success; 2 anything the user can cause or fix (the model file, the config file, an option, the file
    system, a second run on the same folder); 1 an internal error (a bug: please report it) or a C
    simulation mismatch."""
    from .backend.outdir import OutdirError, os_error

    try:
        with _signals_unwind():
            rc = _command.main(args=argv, prog_name="qfx-compile", standalone_mode=False)
    except click.exceptions.Exit as e:
        rc = e.exit_code
    except click.ClickException as e:
        e.message = _safe_message(e.message) if isinstance(getattr(e, "message", None), str) else e.message
        try:
            e.show()
        except OSError:
            pass
        rc = 2
    except click.exceptions.Abort as e:  # click turns KeyboardInterrupt (so our Interrupted too) into Abort
        cause = e.__cause__ or e.__context__
        signum = cause.signum if isinstance(cause, Interrupted) else signal.SIGINT
        _echo_err(f"interrupted (signal {int(signum)}); the output folder was left as it was before this run")
        rc = 128 + int(signum)
    except (UserError, OutdirError) as e:
        _echo_err(f"error: {_safe_message(e)}")
        rc = 2
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        _echo_err(f"interrupted (signal {int(signum)}); the output folder was left as it was before this run")
        rc = 128 + int(signum)
    except OSError as e:  # the file system or the terminal: disk full, read-only, file size limit, ...
        _echo_err(f"error: {_safe_message(os_error(e, 'the output'))}")
        rc = 2
    except MemoryError:
        _echo_err("error: out of memory while compiling this model: it is too large for this machine (or "
                  "for the chosen part); choose a smaller model or a machine with more memory")
        rc = 2
    except RecursionError:
        _echo_err("error: the model's graph is nested too deeply to compile; simplify the graph")
        rc = 2
    except Exception as e:  # an internal error: one line, no traceback unless asked
        if os.environ.get("QFX_DEBUG"):
            raise
        _echo_err(f"internal error: {type(e).__name__}: {_safe_message(e)} (set QFX_DEBUG=1 for a traceback; "
                  f"please report it)")
        rc = 1
    rc = 0 if rc is None else int(rc)
    if argv is None:
        sys.exit(rc)
    return rc


if __name__ == "__main__":
    main()
