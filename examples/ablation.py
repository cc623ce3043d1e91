"""What each ingredient of the low-bit recipe (``qfx.train_recipe``) buys: 4-bit weights and activations.

For each data set (MNIST-5k, scikit-learn digits) and seed: a float SmallResNet, then
QFX fine-tuning from it with the ingredients switched on one after another
(cumulative), plus two leave-one-out rows from the full recipe. Types: 4-bit
weights and activations, 8-bit conv/linear outputs, BatchNorm scale and shift and
residual sums, 16-bit biases (examples/common.py ``bits_config(4)``). Every accuracy
is the exact eval mode. Writes the table into README.md (``--write``).

    python examples/ablation.py --seeds 0 1 2 [--write]
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

FLOAT_EPOCHS = {"mnist": 15, "digits": 15}
OLD = dict(epochs=3, freeze_int_bits=None, bn_reestimate=0)
# (row name, unsigned_relu, per_channel_weights, train_recipe arguments, uses the teacher)
ROWS = [
    ("QFX as before: 3 epochs, binary-point lr 10x", False, True, dict(OLD), False),
    ("+ unsigned activations after ReLU (`unsigned_relu`)", True, True, dict(OLD), False),
    ("+ 8 epochs", True, True, dict(OLD, epochs=8), False),
    ("+ binary points frozen for the last 25%", True, True, dict(epochs=8, bn_reestimate=0), False),
    ("+ BatchNorm statistics re-estimated in fixed point", True, True, dict(epochs=8), False),
    ("+ distillation from the float model", True, True, dict(epochs=8), True),
    ("full recipe, binary-point lr = weight lr", True, True, dict(epochs=8, int_bits_lr=2e-3), True),
    ("full recipe, per-tensor weights", True, False, dict(epochs=8), True),
]


def run(datasets, seeds):
    res = {}
    for ds in datasets:
        train, test = DATASETS[ds]()
        for seed in seeds:
            with Timer() as t:
                fm = train_float(train, FLOAT_EPOCHS[ds], seed)
            res.setdefault((ds, "float"), []).append((qfx.accuracy(fm, *test), t.s))
            print(f"{ds} seed {seed} float {100 * res[(ds, 'float')][-1][0]:.1f}%", flush=True)
            for name, unsigned, per_ch, kw, distill in ROWS:
                with Timer() as t:
                    qfx.seed_everything(seed)
                    cfg = bits_config(4, unsigned_relu=unsigned, per_channel_weights=per_ch)
                    q = qfx.quantize_model(copy.deepcopy(fm).train(), cfg, train[0][:256])
                    qfx.calibrate(q, train[0][:1000])
                    qfx.train_recipe(q, train, seed=seed, teacher=fm if distill else None, **kw)
                acc = qfx.accuracy(q, *test)
                res.setdefault((ds, name), []).append((acc, t.s))
                print(f"{ds} seed {seed} {name}: {100 * acc:.1f}% ({t.s:.0f} s)", flush=True)
    return res


def table(res, datasets, seeds, cmd):
    lines = [f"`{cmd}` — seeds {', '.join(map(str, seeds))}; {machine_line()}. Test accuracy (%), mean ± standard "
             f"deviation over the seeds, exact eval mode; in brackets the gap to float; s = mean seconds per run.", "",
             "| recipe (4-bit weights and activations) | " + " | ".join(f"{d} | gap | s" for d in datasets) + " |",
             "|---|" + "---:|---:|---:|" * len(datasets)]
    names = ["float"] + [r[0] for r in ROWS]
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
    ap.add_argument("--datasets", nargs="+", default=["mnist", "digits"], choices=sorted(DATASETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="write the table into README.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"seeds: {a.seeds}", flush=True)
    t0 = time.time()
    res = run(a.datasets, a.seeds)
    cmd = "python examples/ablation.py --seeds " + " ".join(map(str, a.seeds))
    if a.datasets != ["mnist", "digits"]:
        cmd += " --datasets " + " ".join(a.datasets)
    txt = table(res, a.datasets, a.seeds, cmd) + f"\n\nTotal {time.time() - t0:.0f} s."
    print(txt)
    if a.write:
        write_readme_section("ablation", txt)


if __name__ == "__main__":
    main()
