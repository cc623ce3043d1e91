"""Whether a training run gives the same bits here as at an earlier commit: a speed change that keeps the numbers.

Trains the examples' SmallResNet on scikit-learn's digits (float for ``--float-epochs``, then the 4-bit
``qfx.train_recipe`` with unsigned activations, per-channel weights and the float model as teacher for
``--epochs``), seeded, and prints a SHA-256 of every tensor of the trained state and of the exact eval outputs
on the test set. ``--baseline REF`` runs the same in a fresh process on ``qfx_compile/`` at git commit REF
(bench/baseline.py) and says whether the two digests are equal: every trained table in the README then
stands for both trees.

    python bench/train_bits.py [--epochs 2] [--float-epochs 2] [--seed 0] [--baseline REF]
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline  # noqa: E402  (bench/baseline.py)
baseline.use_pkg(sys.argv)
sys.path.insert(1, str(baseline.ROOT / "examples"))

import torch  # noqa: E402

from common import DATASETS, bits_config, train_float  # noqa: E402
from qfx_compile import qfx  # noqa: E402


def digest(epochs: int, float_epochs: int, seed: int) -> dict:
    """``{"digest", "accuracy"}`` of one seeded float + QFX training run."""
    torch.set_num_threads(2)
    train, test = DATASETS["digits"]()
    fm = train_float(train, float_epochs, seed)
    qfx.seed_everything(seed)
    q = qfx.quantize_model(copy.deepcopy(fm), bits_config(4, unsigned_relu=True, per_channel_weights=True),
                           train[0][:256])
    qfx.train_recipe(q, train, seed=seed, teacher=fm, epochs=epochs)
    h = hashlib.sha256()
    for name, value in sorted(q.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    q.eval()
    with torch.no_grad():
        out = q(test[0])
    h.update(out.numpy().tobytes())
    return {"digest": h.hexdigest(), "accuracy": float((out.argmax(1) == test[1]).float().mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--float-epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", metavar="REF", help="also run at git commit REF and compare the digests")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pkg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not a.baseline:
        r = digest(a.epochs, a.float_epochs, a.seed)
        print(json.dumps(r) if a.json else f"sha256 {r['digest']}, test accuracy {100 * r['accuracy']:.2f}%")
        return
    args = ["--epochs", str(a.epochs), "--float-epochs", str(a.float_epochs), "--seed", str(a.seed), "--json"]
    with tempfile.TemporaryDirectory() as d:
        commit = baseline.extract(a.baseline, d)
        runs = {}
        for key, extra in (("before", ["--pkg", d]), ("after", [])):
            out = subprocess.run([sys.executable, __file__, *args, *extra], capture_output=True, text=True,
                                 check=True).stdout
            runs[key] = json.loads(out.strip().splitlines()[-1])
    for key, name in (("before", commit), ("after", baseline.head())):
        print(f"{key} ({name}): sha256 {runs[key]['digest']}, test accuracy {100 * runs[key]['accuracy']:.2f}%")
    same = runs["before"]["digest"] == runs["after"]["digest"]
    print("the same bits" if same else "DIFFERENT bits")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
