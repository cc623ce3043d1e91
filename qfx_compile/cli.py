"""qfx-compile: a fixed-point ONNX model -> a complete, bit-exact Vitis HLS project.

Exit status: 0 success; 2 a user error (bad or unsupported model file, unknown
target or option, refused output folder, model too big for the part); 1 an
internal error or a C simulation mismatch.
"""
from __future__ import annotations

import contextlib
import os
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


def _summary(console, report: dict) -> None:
    from rich.table import Table

    t = Table(title=f"{report['model']} -> {report['target']} ({report['part']}, {report['clock_ns']:g} ns)")
    for col in ("#", "layer", "op", "output type", "accumulator", "param bits", "DSP est.", "adders est."):
        t.add_column(col, justify="right" if col in ("#", "param bits", "DSP est.", "adders est.") else "left")
    for i, L in enumerate(report["layers"], 1):
        t.add_row(str(i), L["name"], L["op"], L["output_type"], L["accumulator"] or "-", f"{L['parameter_bits']:,}",
                  str(L["dsp_estimate"]), str(L["adder_estimate"]))
    tot = report["totals"]
    t.add_row("", "total", "", "", "", f"{tot['parameter_bits']:,}", f"{tot['dsp_estimate']:,} / {tot['part_dsp']:,}",
              f"{tot['adder_estimate']:,}")
    console.print(t)
    console.print(f"input {report['input']['type']} HWC {report['input']['shape_hwc']}, output "
                  f"{report['output']['type']} HWC {report['output']['shape_hwc']}; weight memory "
                  f"{tot['weight_bram18']} BRAM18 of {tot['part_bram18']}, {tot['weight_lutram_luts']} LUTs of ROM.",
                  markup=False, highlight=False)
    v = report["vectors"]
    console.print(f"test vectors: {v['count']} ({v['source']}).", markup=False, highlight=False)
    cs = report.get("csim")
    if cs is None:
        console.print("C simulation: not run (pass --csim, or run 'make csim' in the project).", highlight=False)
    else:
        console.print(f"C simulation: {cs['passed']} passed, {cs['failed']} failed "
                      f"(build {cs['build_s']} s, run {cs['run_s']} s).", markup=False, highlight=False)
        for line in cs["first_mismatches"]:
            console.print("  " + line, markup=False, highlight=False)


@contextlib.contextmanager
def _step(console, text: str, quiet: bool):
    if quiet:
        yield
        return
    t0 = time.perf_counter()
    with console.status(text):
        yield
    console.print(f"[green]done[/green] {text} ({time.perf_counter() - t0:.1f} s)", highlight=False)


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
              help='Per-layer options (JSON): {"default": {"stream_depth": 2}, "layers": {"<name>": {"mul_limit": 64}}}.')
@click.option("--vectors", type=click.IntRange(1, 100000), default=100, show_default=True,
              help="Test vectors in the testbench (at most those stored in the model).")
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Parallel g++ jobs for --csim.")
@click.option("--list-targets", is_flag=True, help="List the known targets and exit.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def _command(model, target, outdir, clock_ns, part, csim, force, config, vectors, jobs, list_targets, quiet):
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
    return _compile(console, err, model, target, outdir, clock_ns, part, csim, force, config, vectors, jobs, quiet)


def _compile(console, err, model, target, outdir, clock_ns, part, csim, force, config, vectors, jobs, quiet) -> int:
    from .backend.csim import CsimError
    from .backend.plan import BackendError
    from .backend.project import compile_graph, resolve_target
    from .backend.toolchain import ToolchainError
    from .frontend import ModelError, load_model
    from .ir.passes import run_default_passes

    mp = Path(model)
    if not mp.is_file():
        raise UserError(f"model file {model} does not exist (or is not a file): check the path; qfx-compile "
                        f"reads ONNX files written by qfx.export_onnx or QONNX files from Brevitas.")
    try:
        resolve_target(target, part, clock_ns)
    except TargetError as e:
        raise UserError(str(e))
    if config is not None and not Path(config).is_file():
        raise UserError(f"--config file {config} does not exist: give a JSON file such as "
                        '{"default": {"stream_depth": 2}, "layers": {"<layer name>": {"mul_limit": 64}}}.')
    out = Path(outdir) if outdir else Path(mp.stem + "_hls")
    try:
        with _step(err, f"reading {mp.name}", quiet):
            graph = load_model(str(mp))
        with _step(err, "IR passes (shapes, accumulators, K-hot terms)", quiet):
            graph = run_default_passes(graph)
    except (ModelError, ValueError) as e:
        raise UserError(f"cannot compile {model}: {e}")
    no_vectors = graph.vectors is None
    try:
        with _step(err, f"generating the project in {out}", quiet):
            res = compile_graph(graph, out, target=target, part=part, clock_ns=clock_ns, config=config,
                                vectors=vectors, force=force, model_path=str(mp), run_csim=False)
    except (BackendError, TargetError) as e:
        raise UserError(f"cannot compile {model}: {e}")
    except ToolchainError as e:
        raise UserError(str(e))
    if no_vectors:
        err.print(f"note: {mp.name} holds no test vectors; the testbench uses {res.n_vectors} random inputs with "
                  f"expected outputs from the IR interpreter.", markup=False, highlight=False)
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
            err.print(f"error: {e}", markup=False, highlight=False)
            return 1
        res.report["csim"] = r.as_dict()
        write_report(res.outdir, res.report)
        if not r.ok:
            rc = 1
    _summary(console, res.report)
    console.print(f"project written to {res.outdir} (report.json, README.md)", markup=False, highlight=False)
    if rc:
        err.print("error: the C simulation does not match the expected outputs bit for bit (see above).",
                  markup=False, highlight=False)
    return rc


def main(argv=None) -> int:
    """Entry point: returns (and exits with) 0, 1 or 2."""
    try:
        rc = _command.main(args=argv, prog_name="qfx-compile", standalone_mode=False)
    except click.exceptions.Exit as e:
        rc = e.exit_code
    except click.ClickException as e:
        e.show()
        rc = 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        rc = 1
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        rc = 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        rc = 1
    except Exception as e:  # an internal error: one line, no traceback unless asked
        if os.environ.get("QFX_DEBUG"):
            raise
        click.echo(f"internal error: {type(e).__name__}: {e} (set QFX_DEBUG=1 for a traceback; please report it)",
                   err=True)
        rc = 1
    rc = 0 if rc is None else int(rc)
    if argv is None:
        sys.exit(rc)
    return rc


if __name__ == "__main__":
    main()
