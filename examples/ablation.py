"""What each ingredient of the low-bit recipe (``qfx.train_recipe``) buys: 4-bit weights and activations.

For each data set (scikit-learn digits, MNIST-5k) and seed: a float SmallResNet, then
QFX fine-tuning from it with the ingredients switched on one after another
(cumulative), plus a leave-one-out row from the full recipe. Types: 4-bit
weights and activations, 8-bit conv/linear outputs, BatchNorm scale and shift and
residual sums, 16-bit biases (examples/common.py ``bits_config(4)``). Every accuracy
is the exact eval mode. Writes the table into README.md (``--write``).

    python examples/ablation.py --seeds 0 1 2 [--qfx-epochs 8] [--write]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, Timer, bits_config, machine_line, pm, stats, train_float, write_readme_section  # noqa

from qfx_compile import qfx  # noqa: E402

FLOAT_EPOCHS = {"mnist": 10, "digits": 15}
OLD = dict(epochs=3, freeze_int_bits=None, bn_reestimate=0)


def rows(epochs):
    """(row name, unsigned_relu, per_channel_weights, train_recipe arguments, uses the teacher)"""
    return [
        ("QFX as before: 3 epochs, binary-point lr 10x", False, True, dict(OLD), False),
        ("+ unsigned activations after ReLU (`unsigned_relu`)", True, True, dict(OLD), False),
        (f"+ {epochs} epochs, binary points frozen for the last 25%, BatchNorm statistics re-estimated in "
         f"fixed point", True, True, dict(epochs=epochs), False),
        ("+ distillation from the float model (= `train_recipe` with a teacher)", True, True, dict(epochs=epochs),
         True),
        ("full recipe, but binary-point lr = weight lr", True, True, dict(epochs=epochs, int_bits_lr=2e-3), True),
    ]


def run_seed(ds, seed, epochs, threads):
    """One data set and seed: ``{row: (accuracy, seconds)}``."""
    torch.set_num_threads(threads)
    train, test = DATASETS[ds]()
    res = {}
    with Timer() as t:
        fm = train_float(train, FLOAT_EPOCHS[ds], seed)
    res["float"] = (qfx.accuracy(fm, *test), t.s)
    print(f"{ds} seed {seed} float {100 * res['float'][0]:.1f}%", flush=True)
    for name, unsigned, per_ch, kw, distill in rows(epochs):
        with Timer() as t:
            qfx.seed_everything(seed)
            cfg = bits_config(4, unsigned_relu=unsigned, per_channel_weights=per_ch)
            q = qfx.quantize_model(copy.deepcopy(fm).train(), cfg, train[0][:256])
            qfx.calibrate(q, train[0][:1000])
            qfx.train_recipe(q, train, seed=seed, teacher=fm if distill else None, **kw)
        res[name] = (qfx.accuracy(q, *test), t.s)
        print(f"{ds} seed {seed} {name}: {100 * res[name][0]:.1f}% ({t.s:.0f} s)", flush=True)
    return res


def run(datasets, seeds, epochs, threads=1, jobs=1):
    args = [(ds, seed, epochs, threads) for ds in datasets for seed in seeds]
    if jobs > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(min(jobs, len(args))) as pool:
            outs = pool.starmap(run_seed, args)
    else:
        outs = [run_seed(*a) for a in args]
    res = {}
    for (ds, _, _, _), r in zip(args, outs):
        for name, v in r.items():
            res.setdefault((ds, name), []).append(v)
    return res


def table(res, datasets, seeds, cmd, epochs):
    lines = [f"`{cmd}` — seeds {', '.join(map(str, seeds))}; {machine_line()}. Test accuracy (%), mean ± standard "
             f"deviation over the seeds, exact eval mode; gap = mean minus the float mean (points); s = mean seconds per run.", "",
             "| recipe (4-bit weights and activations) | " + " | ".join(f"{d} | gap | s" for d in datasets) + " |",
             "|---|" + "---:|---:|---:|" * len(datasets)]
    names = ["float"] + [r[0] for r in rows(epochs)]
    for name in names:
        cells = []
        for ds in datasets:
            accs = [a for a, _ in res[(ds, name)]]
            fl = stats([a for a, _ in res[(ds, "float")]])[0]
            gap = "" if name == "float" else f"{100 * (stats(accs)[0] - fl):+.1f}"
            cells.append(f"{pm(accs)} | {gap} | {stats([s for _, s in res[(ds, name)]])[0]:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=sorted(DATASETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--qfx-epochs", type=int, default=8, help="epochs of the recipe rows")
    ap.add_argument("--jobs", type=int, default=1, help="(data set, seed) runs at once (one process each)")
    ap.add_argument("--write", action="store_true", help="write the table into README.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"seeds: {a.seeds}", flush=True)
    t0 = time.time()
    res = run(a.datasets, a.seeds, a.qfx_epochs, a.threads, a.jobs)
    cmd = "python examples/ablation.py --seeds " + " ".join(map(str, a.seeds)) + f" --qfx-epochs {a.qfx_epochs} --jobs {a.jobs}"
    if a.datasets != ["digits", "mnist"]:
        cmd += " --datasets " + " ".join(a.datasets)
    txt = table(res, a.datasets, a.seeds, cmd, a.qfx_epochs) + f"\n\nTotal {time.time() - t0:.0f} s."
    print(txt)
    if a.write:
        write_readme_section("ablation", txt)


if __name__ == "__main__":
    main()
