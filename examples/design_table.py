"""The design table: MNIST accuracy against the compiler's estimated throughput and resources on one part.

MNIST-5k and SmallResNet as in examples/accuracy_table.py (its ``train_row``: ``qfx.train_recipe``
from a float model per seed, distillation, ``unsigned_relu``). Rows:

* ``dsp8``: 8-bit weights and activations, every product a DSP multiply;
* ``khot``: K=2 SP2 weights (8-bit type), every product shift-add in LUTs;
* ``mix``: Mix and Match, K=2 SP2 rows at ``lut_rows="auto"`` for the target, the rest fixed-point
  (``accuracy_table.mix_config``; rows assigned once after calibration);
* ``cost``: 8-bit, loss + ``lam * qfx.hardware_cost(model, target, x).total`` every ``--cost-every``
  steps (no learned widths: only per-channel binary points move the estimate);
* ``cost_w``: the same with ``learn_width=True`` (every weight and activation width in
  ``[--min-width, 8]``).

Every accuracy is the exact eval mode (mean ± sd over the seeds). For every seed's model the
compiler prices two designs of the exported file (``backend.explore``, the code of
``qfx-compile --explore``, same accounting for both): its default (reuse for 80% of the DSPs) and
the searched one (default budget, 80% of each resource): samples/s, DSP, LUT, BRAM18; the table
gives their mean over the seeds (a range where the seeds differ). ``--write`` puts the table into
README.md between ``<!-- design:begin -->`` and ``<!-- design:end -->``; ``--plot`` writes accuracy
against samples/s.

    python examples/design_table.py --seeds 0 1 2 [--rows dsp8 khot mix cost cost_w] [--lam 2] [--write]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_table import mix_config, run_args, save_plot, train_row  # noqa: E402
from common import DATASETS, Timer, bits_config, machine_line, pm, stats, train_float, write_readme_section  # noqa

from qfx_compile import qfx  # noqa: E402

ROWS = {
    "dsp8": ("all-DSP 8-bit", lambda a: bits_config(8, unsigned_relu=True)),
    "khot": ("all K-hot: K=2 SP2 weights (8-bit type)", lambda a: bits_config(8, unsigned_relu=True, k_hot=2,
                                                                               digits="sp2")),
    "mix": ("Mix-and-Match rows: K=2 SP2 at lut_rows='auto'", lambda a: mix_config(a.target)),
    "cost": ("8-bit + lam * hardware_cost", lambda a: bits_config(8, unsigned_relu=True)),
    "cost_w": ("8-bit + lam * hardware_cost, learn_width", lambda a: bits_config(
        8, unsigned_relu=True, learn_width=True, min_width=a.min_width)),
}


class CostPenalty:
    """``lam * qfx.hardware_cost(model, target, x).total`` for ``train_recipe(penalty=...)``.

    One ``hardware_cost`` call exports and plans the model (seconds), so it is priced every ``every``
    steps; in between, the term is its linearization at the last pricing, ``lam * sum g . (p - p_now)``
    (value 0, the same gradient in the learned bit parameters). Stops when they are frozen.
    """

    def __init__(self, lam, target, x, every):
        self.lam, self.target, self.x, self.every, self.lin = lam, target, x, every, []

    def __call__(self, model, step):
        if step % self.every == 0:
            ps = qfx.int_bits_parameters(model)
            total = qfx.hardware_cost(model, self.target, self.x).total if ps else None
            self.lin = []
            if total is not None and total.requires_grad:
                gs = torch.autograd.grad(total, ps, allow_unused=True)
                self.lin = [(p, g) for p, g in zip(ps, gs) if g is not None and p.requires_grad]
        self.lin = [(p, g) for p, g in self.lin if p.requires_grad]
        return self.lam * sum((g * (p - p.detach())).sum() for p, g in self.lin) if self.lin else None


def designs(model, example, target):
    """(default, searched) designs of the exported model, priced by the compiler (backend.explore)."""
    from qfx_compile.backend.explore import explore
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.passes import run_default_passes
    from qfx_compile.targets import get_target
    with tempfile.TemporaryDirectory() as d:
        path = qfx.export_onnx(model, example, str(Path(d) / "model.onnx"), vectors=0)
        graph = run_default_passes(load_model(path))
    r = explore(graph, get_target(target))
    return tuple(None if x is None else {"samples_per_s": x.samples_per_s, "dsp": x.dsp, "lut": x.lut,
                                         "bram18": x.bram18} for x in (r.default, r.chosen))


def widths(model) -> str:
    """Learned widths: 'weights a-b, activations c-d' (empty when none is learned)."""
    qs = [(n, q.width) for n, q in model.named_modules() if isinstance(q, qfx.Quantizer) and q.width_param is not None]
    if not qs:
        return ""
    w = [v for n, v in qs if n.endswith("weight_quantizer")]
    a = [v for n, v in qs if not n.endswith("weight_quantizer")]
    return f"weights {min(w)}-{max(w)}, activations {min(a)}-{max(a)} bits"


def run_seed(seed, keys, a):
    """One seed: {row key: (accuracy, seconds, default design, searched design, widths)} and the float accuracy."""
    torch.set_num_threads(a.threads)
    train, test = DATASETS["mnist"]()
    with Timer() as t:
        fm = train_float(train, a.float_epochs, seed)
    out = {"float": (qfx.accuracy(fm, *test), t.s, None, None, "")}
    print(f"seed {seed} float32 {100 * out['float'][0]:.1f}% ({t.s:.0f} s)", flush=True)
    x1 = train[0][:1]
    for key in keys:
        label, cfg = ROWS[key]
        recipe = {}
        if key.startswith("cost"):
            recipe = {"penalty": CostPenalty(a.lam, a.target, x1, a.cost_every), "width_lr": a.width_lr}
        with Timer() as t:
            m = train_row(fm, "qfx", cfg(a), train, seed, a.qfx_epochs, **recipe)
        acc = qfx.accuracy(m, *test)
        default, searched = designs(m, x1, a.target)
        out[key] = (acc, t.s, default, searched, widths(m))
        print(f"seed {seed} {label} {100 * acc:.1f}% ({t.s:.0f} s) default {default} explore {searched} "
              f"{widths(m)}", flush=True)
    return out


def _col(ds, k, fmt="{:,.0f}"):
    vals = [d[k] for d in ds if d is not None]
    if not vals:
        return "does not fit"
    m = sum(vals) / len(vals)
    lo, hi = min(vals), max(vals)
    return fmt.format(m) if lo == hi else f"{fmt.format(m)} ({fmt.format(lo)}-{fmt.format(hi)})"


def table(outs, keys, a, cmd, total):
    lines = [f"`{cmd}` — seeds {', '.join(map(str, a.seeds))}; {machine_line()}; total {total / 60:.0f} min. "
             f"Target {a.target}; lam {a.lam}, hardware cost every {a.cost_every} steps (linearized between) until "
             f"the bit parameters freeze; learned widths in [{a.min_width}, 8], lr {a.width_lr}.", "",
             "| design | accuracy % | default samples/s | DSP | LUT | BRAM18 | --explore samples/s | DSP | LUT | "
             "BRAM18 | s / run |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fl = [o["float"][0] for o in outs]
    lines.append(f"| float32 (no hardware) | {pm(fl)} | | | | | | | | | "
                 f"{stats([o['float'][1] for o in outs])[0]:.0f} |")
    for key in keys:
        rs = [o[key] for o in outs]
        d, s = [r[2] for r in rs], [r[3] for r in rs]
        lines.append(f"| {ROWS[key][0]} | {pm([r[0] for r in rs])} | "
                     + " | ".join(_col(d, k) for k in ("samples_per_s", "dsp", "lut", "bram18")) + " | "
                     + " | ".join(_col(s, k) for k in ("samples_per_s", "dsp", "lut", "bram18"))
                     + f" | {stats([r[1] for r in rs])[0]:.0f} |")
    learned = [(k, [o[k][4] for o in outs]) for k in keys if any(o[k][4] for o in outs)]
    for k, ws in learned:
        lines += ["", f"Learned widths ({ROWS[k][0]}), per seed: " + "; ".join(ws) + "."]
    return "\n".join(lines)


def plot(outs, keys, path, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, key in enumerate(keys):
        rs = [o[key] for o in outs]
        m, sd = stats([r[0] for r in rs])
        c = f"C{i}"
        for j, (kind, mk) in enumerate((("default", "o"), ("--explore", "s"))):
            ds = [r[2 + j] for r in rs if r[2 + j] is not None]
            if ds:
                sps = sum(d["samples_per_s"] for d in ds) / len(ds)
                ax.errorbar([sps], [100 * m], yerr=[100 * sd], marker=mk, color=c, capsize=3,
                            mfc=c if j else "white", label=f"{ROWS[key][0]} ({kind})")
    ax.set_xlabel(f"estimated samples/s on {a.target} (compiler, unsynthesized)")
    save_plot(fig, ax, path, a.seeds, {"fontsize": 6, "loc": "lower left"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_args(ap, qfx_epochs=4)
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--lam", type=float, default=2.0, help="weight of hardware_cost(...).total in the loss")
    ap.add_argument("--cost-every", type=int, default=8, help="steps between hardware_cost calls")
    ap.add_argument("--width-lr", type=float, default=0.1, help="train_recipe's width_lr (learned widths)")
    ap.add_argument("--min-width", type=int, default=3, help="learn_width's lower bound")
    ap.add_argument("--plot", default="docs/design_tradeoff.png")
    ap.add_argument("--write", action="store_true", help="write the table into README.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"seeds: {a.seeds}", flush=True)
    t0 = time.time()
    if a.jobs > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(min(a.jobs, len(a.seeds))) as pool:
            outs = pool.starmap(run_seed, [(s, a.rows, a) for s in a.seeds])
    else:
        outs = [run_seed(s, a.rows, a) for s in a.seeds]
    cmd = (f"python examples/design_table.py --seeds {' '.join(map(str, a.seeds))} --rows {' '.join(a.rows)} "
           f"--float-epochs {a.float_epochs} --qfx-epochs {a.qfx_epochs} --lam {a.lam} --cost-every {a.cost_every} "
           f"--min-width {a.min_width} --width-lr {a.width_lr} --jobs {a.jobs}")
    txt = table(outs, a.rows, a, cmd, time.time() - t0)
    print(txt)
    if a.plot:
        try:
            plot(outs, a.rows, Path(__file__).resolve().parents[1] / a.plot, a)
            txt += f"\n\n![accuracy against estimated samples/s]({a.plot})"
        except ImportError:
            print("matplotlib not installed: no plot")
    if a.write:
        write_readme_section("design", txt)


if __name__ == "__main__":
    main()
