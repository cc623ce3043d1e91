"""Reproducible runs and one documented recipe for low-bit QFX training.

``seed_everything(seed)``: seeds Python's ``random``, numpy and torch, and turns
on torch's deterministic algorithms (``warn_only``: an op without a
deterministic kernel warns instead of failing). Same seed, same machine, same
thread count: the same numbers.

``train_recipe(model, (X, y), ...)``: quantization-aware fine-tuning of a QFX
model (from :func:`qfx.quantize_model`), the recipe the accuracy tables use.
Each ingredient is an argument, so it can be switched off and measured
(``examples/ablation.py``):

* ``epochs`` (default 8): long enough for the binary points to settle;
* ``int_bits_lr`` (default 10x ``lr``): the integer-bit parameters get their own
  Adam group (a step of 1.0 moves a binary point by one bit; weights move in
  small steps); learned widths (``QFXConfig(learn_width=True)``) get ``width_lr``
  (default: ``int_bits_lr``);
* ``teacher`` (optional): the float model; the loss is then
  ``(1 - a) * CE(y) + a * T^2 * KL(softmax(teacher / T) || softmax(student / T))``
  (Hinton distillation, ``distill_weight`` a, ``temperature`` T);
* ``freeze_int_bits`` (default 0.75): after this fraction of the steps the binary
  points are frozen, so the weights finish training on the final grids;
* ``bn_reestimate`` (default 20 batches): after training, every BatchNorm's running
  mean and variance are recomputed from the fixed-point network itself (training-mode
  forward, exact cumulative average over the batches, no gradient), so eval mode
  normalizes with the statistics of the quantized activations it really sees;
* ``penalty`` (optional): ``penalty(model, step)`` returns a term added to the loss of that
  step, or None; e.g. hardware-cost-aware training with learned widths,
  ``lambda m, s: lam * qfx.hardware_cost(m, "ultra96", x[:1]).total if s % 4 == 0 else None``.

The schedule is one-cycle (Adam), the data order comes from ``seed``. The
model comes back in eval mode: the exact mode the hardware reproduces.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .nn.norm import BatchNorm2d
from .quantizer import int_bits_parameters, other_parameters, quantizers


def seed_everything(seed: int, *, deterministic: bool = True) -> int:
    """Seed ``random``, numpy and torch with ``seed``; deterministic torch algorithms where they exist."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
    return seed


@torch.no_grad()
def reestimate_bn(model: nn.Module, X: torch.Tensor, *, batches: int = 20, batch_size: int = 256,
                  seed: int = 0) -> nn.Module:
    """Recompute every QFX BatchNorm's running statistics from the fixed-point network (see module doc).

    Runs the model in training mode (fixed-point casts, batch statistics) with no
    gradient over ``batches`` random batches of ``X`` and sets the running mean and
    variance to their exact average over those batches (momentum ``None``). Binary
    points and weights are untouched. Returns the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    if not bns or batches <= 0:
        return model.eval()
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
        m.num_batches_tracked.zero_()
        m.momentum = None  # cumulative average
    g = torch.Generator().manual_seed(seed)
    model.train()
    n = len(X)
    for _ in range(batches):
        idx = torch.randperm(n, generator=g)[:min(batch_size, n)]
        model(X[idx])
    for m, (mom, nbt) in zip(bns, saved):
        m.momentum = mom
        m.num_batches_tracked.copy_(nbt + m.num_batches_tracked)
    return model.eval()


def distillation_loss(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None,
                      weight: float, temperature: float) -> torch.Tensor:
    """Cross entropy, mixed with the KL divergence to the teacher's softened outputs when a teacher is given."""
    ce = F.cross_entropy(logits, y)
    if teacher_logits is None or weight <= 0:
        return ce
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1), reduction="batchmean",
                  log_target=True)
    return (1 - weight) * ce + weight * t * t * kl


def train_recipe(model: nn.Module, train_data, *, epochs: int = 8, lr: float = 2e-3, int_bits_lr: float | None = None,
                 batch_size: int = 64, teacher: nn.Module | None = None, distill_weight: float = 0.5,
                 temperature: float = 4.0, freeze_int_bits: float | None = 0.75, bn_reestimate: int = 20,
                 seed: int = 0, weight_decay: float = 0.0, penalty=None,
                 width_lr: float | None = None) -> nn.Module:
    """Fine-tune a QFX model with the low-bit recipe (see module doc); returns it in eval mode.

    ``train_data`` is ``(X, y)`` (tensors). ``int_bits_lr=None`` means ``10 * lr``;
    ``freeze_int_bits=None`` never freezes; ``bn_reestimate=0`` skips the re-estimation.
    """
    X, y = train_data
    if int_bits_lr is None:
        int_bits_lr = 10 * lr
    g = torch.Generator().manual_seed(int(seed))
    groups = [{"params": other_parameters(model), "lr": lr, "weight_decay": weight_decay}]
    widths = {id(q.width_param) for q in quantizers(model) if q.width_param is not None}
    ib = [p for p in int_bits_parameters(model) if id(p) not in widths]
    wp = [p for p in int_bits_parameters(model) if id(p) in widths]
    for ps, r in ((ib, int_bits_lr), (wp, int_bits_lr if width_lr is None else width_lr)):
        if ps:
            groups.append({"params": ps, "lr": r, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups)
    per_epoch = (len(X) + batch_size - 1) // batch_size
    steps = max(1, int(epochs) * per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[gr["lr"] for gr in groups], total_steps=steps)
    freeze_at = None if freeze_int_bits is None else int(round(float(freeze_int_bits) * steps))
    if teacher is not None:
        teacher.eval()
    model.train()
    step = 0
    for _ in range(int(epochs)):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch_size):
            if freeze_at is not None and step == freeze_at:
                for q in quantizers(model):
                    q.freeze()
            idx = perm[i:i + batch_size]
            xb, yb = X[idx], y[idx]
            tl = None
            if teacher is not None:
                with torch.no_grad():
                    tl = teacher(xb)
            opt.zero_grad(set_to_none=True)
            loss = distillation_loss(model(xb), yb, tl, distill_weight, temperature)
            extra = penalty(model, step) if penalty is not None else None
            (loss if extra is None else loss + extra).backward()
            opt.step()
            sched.step()
            step += 1
    if bn_reestimate:
        reestimate_bn(model, X, batches=int(bn_reestimate), seed=int(seed))
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` in eval mode (for a QFX model: the exact, hardware-equal mode)."""
    model.eval()
    correct = 0
    for i in range(0, len(X), batch_size):
        correct += int((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(1, len(X))
