"""Calibration and post-training quantization (PTQ).

``with qfx.calibrate(model): model(batch)`` runs the model in float32 with every
quantizer passing its input through unchanged while recording its min / max
(BatchNorm uses its running statistics, which are not updated); on exit each
non-frozen quantizer takes the fewest integer bits that cover what it saw
(``I = ceil(log2 max|x|) + 1`` for signed types). ``qfx.calibrate(model, data)``
does the same over ``data`` (a tensor or an iterable of batches / (x, y) pairs)
and returns the model. PTQ (``qfx.ptq``, in convert.py) is quantize_model + calibrate, no training.
"""
from __future__ import annotations

import torch
from torch import nn

from .nn._base import QFXModule
from .quantizer import Quantizer


class _Calibration:
    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        for m in self.model.modules():
            if isinstance(m, (Quantizer, QFXModule)):
                m.calibrating = True
            if isinstance(m, Quantizer):
                m._obs = None
        return self.model

    def __exit__(self, *exc):
        for m in self.model.modules():
            if isinstance(m, Quantizer):
                if exc[0] is None:
                    m.finish_calibration()
                m.calibrating = False
                m._obs = None
            elif isinstance(m, QFXModule):
                m.calibrating = False
        return False


def _batches(data):
    if isinstance(data, torch.Tensor):
        yield data
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def calibrate(model: nn.Module, data=None):
    """Context manager over ``model`` (no ``data``), or run ``data`` through it and return the model."""
    ctx = _Calibration(model)
    if data is None:
        return ctx
    with torch.no_grad(), ctx:
        for x in _batches(data):
            model(x)
    return model

