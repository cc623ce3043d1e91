"""What every op module declares (QONNX custom-op style) and the exact integer helpers they share.

An :class:`OpDef` holds, side by side, an op's attributes, parameters, shape
rule, type rule and integer interpreter. Values in the interpreter are pairs
``(raw, type)``: ``raw`` has a leading batch axis and holds mantissas (int64,
or an object array of Python ints when a bound exceeds 62 bits).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from ...fixed.types import FixedType
from ...fixed.window import out_shape, pads_from_onnx
from ..graph import Const, Node

#: Largest magnitude kept in int64 arithmetic; anything that may exceed it uses Python ints.
INT64_SAFE_BITS = 62


class OpError(ValueError):
    """A node's attributes, parameters or input shapes/types break its op's rules."""


@dataclasses.dataclass(frozen=True)
class OpDef:
    """One IR op: its declaration, its three rules and its backend plan."""

    name: str
    doc: str
    attrs: dict[str, str]  # attribute name -> what it holds ("?" suffix: optional)
    params: dict[str, str]  # parameter name -> shape ("?" suffix: optional)
    n_inputs: int | None  # None: any number >= 1 (concat)
    shape: Callable[[Node, list[tuple[int, ...]]], tuple[int, ...]]
    type: Callable[[Node, list[FixedType]], FixedType]
    run: Callable[[Node, list[tuple[np.ndarray, FixedType]]], np.ndarray]
    casts: bool = False  # True: the op ends with cast(., out_type)
    #: backend plan: ``(backend.layerplan.LayerContext) -> LayerPlan`` (kernel, config, cost); None: no kernel
    hls: Callable[[Any], Any] | None = None
    #: accumulator type rule ``(node, input tensors) -> FixedType`` (ir.passes.accumulators); None: no accumulator
    acc: Callable[[Node, list], FixedType] | None = None
    #: constants derived from the input shapes, ``(node, input tensors) -> attrs`` (set by ir.passes.shapes)
    derive: Callable[[Node, list], dict] | None = None
    #: a weighted sum with a ``weight`` constant (its K-hot terms: ir.passes.khot_terms)
    weighted: bool = False
    #: its attributes or tables are mantissas of its input's type (the input's type may not be changed by fold)
    reads_codes: bool = False
    #: treats every element alike (per-tensor types, no per-position constant): stream order does not matter
    order_free: bool = False
    #: its kernel's stream order, ``(node, input shapes, output shape) -> program`` (``ir.ops.tokens``: int8,
    #: ``p >= 0`` a read of input ``p``, -1 a write, in program order); ``backend.fifo`` sizes fork copies
    #: from it. None: no rule (a fork through it keeps whole-map copies)
    tokens: Callable[[Node, list, tuple], np.ndarray] | None = None


# ----------------------------------------------------------------- attr helpers
def attr(node: Node, key: str, default: Any = dataclasses.MISSING) -> Any:
    if key in node.attrs:
        return node.attrs[key]
    if default is dataclasses.MISSING:
        raise OpError(f"node {node.name!r} ({node.op}) lacks attribute {key!r}")
    return default


def out_type(node: Node) -> FixedType:
    t = attr(node, "out_type")
    if not isinstance(t, FixedType):
        raise OpError(f"node {node.name!r} ({node.op}): out_type must be a FixedType, got {t!r}")
    return t


def int_pair(node: Node, key: str, default=None) -> tuple[int, int]:
    v = attr(node, key, default)
    if (not isinstance(v, (tuple, list)) or len(v) != 2
            or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in v)):
        raise OpError(f"node {node.name!r} ({node.op}): {key} must be two ints, got {v!r}")
    return int(v[0]), int(v[1])


def pads4(node: Node) -> tuple[int, int, int, int]:
    v = attr(node, "pads", (0, 0, 0, 0))
    if (not isinstance(v, (tuple, list)) or len(v) != 4
            or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0 for i in v)):
        raise OpError(f"node {node.name!r} ({node.op}): pads must be 4 ints >= 0 (top, left, bottom, right), got {v!r}")
    return tuple(int(i) for i in v)


def window_out(node: Node, in_shape, kernel, stride, pads) -> tuple[int, int]:
    """Output (H', W') of a sliding window (rule: ``fixed.window``); ``pads`` (top, left, bottom, right)."""
    if len(in_shape) != 3:
        raise OpError(f"node {node.name!r} ({node.op}) needs a (C, H, W) input, got shape {tuple(in_shape)}")
    try:
        return out_shape(in_shape[1:], kernel, stride, pads_from_onnx(pads, 2))
    except ValueError as e:
        raise OpError(f"node {node.name!r} ({node.op}): {e}") from None


# -------------------------------------------------------------- exact integers
def max_abs_raw(t: FixedType) -> int:
    return max(-t.raw_min, t.raw_max)


def as_wide(a: np.ndarray) -> np.ndarray:
    """The same integers as an object array of Python ints."""
    a = np.asarray(a)
    if a.dtype == object:
        return a
    return np.array(a.tolist(), dtype=object).reshape(a.shape) if a.size else a.astype(object)


def fits64(bound: int) -> bool:
    return int(bound).bit_length() <= INT64_SAFE_BITS


def shift_left(a: np.ndarray, s) -> np.ndarray:
    """``a * 2**s`` exactly (``s`` >= 0, an int or an array broadcastable to ``a``)."""
    a = np.asarray(a)
    s_arr = np.asarray(s)
    if s_arr.size and int(s_arr.max()) == 0 and int(s_arr.min()) == 0:
        return a
    top = int(np.abs(a).max()) if a.size else 0
    if a.dtype == object or not fits64(top << int(s_arr.max() if s_arr.size else 0)):
        a = as_wide(a)
        s_obj = as_wide(np.broadcast_to(s_arr, a.shape)) if s_arr.ndim else int(s_arr)
        return a * (2 ** s_obj) if s_arr.ndim else a * (1 << int(s_arr))
    return a.astype(np.int64) << s_arr.astype(np.int64)


def const_common(c: Const) -> tuple[np.ndarray, int]:
    """A constant's mantissas rescaled to one binary point: ``(raw, F)`` with value = raw * 2**-F."""
    f = np.asarray(c.frac_bits(), dtype=np.int64)
    big = int(f.max())
    if c.int_bits is None or c.raw.ndim == 0:
        return np.asarray(c.raw), big
    s = (big - f).reshape((-1,) + (1,) * (c.raw.ndim - 1))
    return shift_left(c.raw, s), big


def align_sum(a: np.ndarray, fa: int, b: np.ndarray, fb: int, bound: int) -> tuple[np.ndarray, int]:
    """Exact ``a*2**-fa + b*2**-fb`` as ``(raw, F)``; ``bound`` bounds |a| and |b| before shifting."""
    f = max(fa, fb)
    big = bound << (f - min(fa, fb))
    if not fits64(2 * big):
        a, b = as_wide(a), as_wide(b)
    return shift_left(a, f - fa) + shift_left(b, f - fb), f


def matmul_exact(x: np.ndarray, w: np.ndarray, bound: int) -> np.ndarray:
    """``x @ w`` exactly; ``bound`` bounds every |partial sum|."""
    if fits64(bound) and x.dtype != object and w.dtype != object:
        return np.matmul(x.astype(np.int64), w.astype(np.int64))
    return np.matmul(as_wide(x), as_wide(w))


def cast_check(node: Node, t) -> None:
    if not isinstance(t, FixedType):
        raise OpError(f"node {node.name!r} ({node.op}): input has no fixed-point type")


def type_casts_to_out_type(node: Node, in_types) -> FixedType:
    """Type rule of an op that casts its exact result: every input typed, output ``attrs["out_type"]``."""
    for t in in_types:
        cast_check(node, t)
    return out_type(node)


def type_keeps_input(node: Node, in_types) -> FixedType:
    """Type rule of an op with no cast (relu, clip, maxpool, flatten): the output has the input's type."""
    cast_check(node, in_types[0])
    return in_types[0]


def shape_keeps_input(node: Node, in_shapes) -> tuple[int, ...]:
    """Shape rule of an elementwise op: the output has the input's shape."""
    return tuple(in_shapes[0])
