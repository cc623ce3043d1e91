"""QFX layers: eval mode computes docs/semantics.md exactly (float64); training is float32 with STE casts."""
from .linear import Linear, Conv2d
from .norm import BatchNorm2d
from .pool import MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
from ...fixed.types import reciprocal_raw, reciprocal_type
from .elementwise import ReLU, Clip, Add, Flatten, QuantInput, Quant
from ._base import QFXModule
from .structural import Concat, ZeroPad2d, Upsample
from .oned import Conv1d, MaxPool1d, AvgPool1d, AdaptiveAvgPool1d, BatchNorm1d
from .activation import Sigmoid, Tanh, Hardsigmoid, Hardswish, LeakyReLU, Softmax, TableActivation

__all__ = ["Linear", "Conv2d", "BatchNorm2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "ReLU", "Clip",
           "Add", "Flatten", "QuantInput", "Quant", "QFXModule", "Concat", "ZeroPad2d", "Upsample", "Conv1d", "MaxPool1d", "AvgPool1d",
           "AdaptiveAvgPool1d", "BatchNorm1d", "Sigmoid", "Tanh", "Hardsigmoid",
           "Hardswish", "LeakyReLU", "Softmax", "TableActivation", "reciprocal_raw", "reciprocal_type"]
