"""What an ONNX tensor stands for while the reader walks the graph."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir.graph import Const, Node
from ..fixed.types import FixedType


@dataclasses.dataclass
class CFloat:
    """A constant not (yet) cast: float64 (or integer) values from an initializer or Constant.

    ``elem`` is the ONNX element type it had in the file (for constant folding in that type).
    """

    arr: np.ndarray
    elem: int | None = None


@dataclasses.dataclass
class CFixed:
    """A constant cast onto a fixed-point grid: value = raw * 2**-frac (frac broadcastable to raw)."""

    raw: np.ndarray
    frac: np.ndarray
    width: int
    signed: bool
    rounding: str
    overflow: str
    k_hot: np.ndarray | None = None
    digits: str | None = None

    def to_const(self, what: str) -> Const:
        """The IR Const, with one binary point or one per index of axis 0."""
        raw = np.asarray(self.raw)
        f = np.broadcast_to(self.frac, raw.shape) if raw.ndim else np.asarray(self.frac).reshape(())
        fl = np.asarray(f).ravel()
        if fl.size == 0 or (fl == fl[0]).all():
            f0 = int(fl[0]) if fl.size else 0
            t = FixedType(self.width, self.width - f0, self.signed, self.rounding, self.overflow)
            return Const(raw, t, None, self.k_hot, self.digits)
        rows = np.asarray(f).reshape(raw.shape[0], -1)
        if not (rows == rows[:, :1]).all():
            raise ValueError(f"{what} has a binary point per element; only one per output channel is supported")
        ib = self.width - rows[:, 0].astype(np.int64)
        t = FixedType(self.width, int(ib.max()), self.signed, self.rounding, self.overflow)
        return Const(raw, t, ib, self.k_hot, self.digits)

    def reshaped(self, shape) -> "CFixed":
        f = np.broadcast_to(self.frac, self.raw.shape)
        return dataclasses.replace(self, raw=self.raw.reshape(shape), frac=np.asarray(f).reshape(shape))

    def transposed(self) -> "CFixed":
        """The transposed matrix. A ``k_hot`` per row of the file's axis 0 (not the output channels once
        transposed) becomes one K, its largest (a bound for every element), or none when a row is plain (K = 0)."""
        f = np.broadcast_to(self.frac, self.raw.shape)
        k_hot, digits = self.k_hot, self.digits
        if k_hot is not None and np.asarray(k_hot).size > 1:
            k_hot = np.asarray([int(np.max(k_hot))]) if np.all(np.asarray(k_hot) > 0) else None
            digits = digits if k_hot is not None else None
        return dataclasses.replace(self, raw=self.raw.T.copy(), frac=np.asarray(f).T.copy(), k_hot=k_hot,
                                   digits=digits)


@dataclasses.dataclass
class Act:
    """An activation tensor of the IR (type None: the float graph input before its quantizer)."""

    name: str
    shape: tuple[int, ...]
    type: FixedType | None


@dataclasses.dataclass
class Pending:
    """An exact arithmetic result that has no type until a cast (FixedPoint/Quant) follows.

    ``node`` is the IR node without ``out_type``; ``relu`` marks a ReLU applied before the
    cast (exact to move after a saturating cast: both are monotone and keep 0).
    """

    node: Node
    shape: tuple[int, ...]
    onnx_name: str
    stage: str = "done"  # "needs_shift" (Mul of a batchnorm), "needs_bias" (Conv/Gemm/MatMul), "done"
    relu_out: str | None = None


@dataclasses.dataclass
class Real:
    """An exact real-valued tensor: per channel (axis 0), ``chain`` (``ir.exact_real``) applied to the
    value of the IR tensor ``act`` (float scales, float BatchNorm, unquantized bias: not fixed-point yet).

    ``act.type`` is None for the float graph input (its quantizer becomes the input boundary).
    """

    act: Act
    chain: list
    onnx_name: str

    @property
    def shape(self) -> tuple[int, ...]:
        return self.act.shape


@dataclasses.dataclass
class Broken:
    """The output of a node that could not be read (its blocker is already recorded): consumers skip."""

    onnx_name: str
