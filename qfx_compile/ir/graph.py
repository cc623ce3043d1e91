"""The typed IR: a dataflow graph of fixed-point tensors and layer nodes.

Shapes exclude the batch dimension: feature maps are ``(C, H, W)`` (PyTorch's
channel-first order), vectors ``(N,)``. Every activation tensor carries one
:class:`FixedType`; constants (weights, biases, BatchNorm scale and shift)
carry integer mantissas and a type, optionally with per-channel integer bits
along axis 0. Nothing here rounds: rounding happens only where a node's
semantics (docs/semantics.md) say it casts to its output type.

Names (``Node.name``, ``Tensor.name``) come from the model file and are
untrusted text: the backend must pass them through ``backend.names`` before
they reach C++, Tcl, a Makefile or a shell.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..fixed.types import FixedType


@dataclasses.dataclass
class Const:
    """A constant tensor as integer mantissas: value = raw * 2**-(type.width - int_bits[c]).

    ``raw`` is int64 (object dtype of Python ints when wider than 62 bits).
    ``int_bits`` is None for one binary point, else one integer per index of
    axis 0 (per output channel). ``k_hot``/``digits`` record a K-hot
    constraint the weights satisfy (``digits`` is "binary", "csd" or "sp2"):
    ``k_hot`` is None for a plain fixed-point constant, else one K for every
    row or one K per output channel. K = 0 marks a plain fixed-point row
    beside K-hot rows (Mix and Match: the backend computes those rows on
    multipliers, the others in shift-add, ``backend.lower.split_mixed_rows``);
    rows with K > 0 hold only mantissas with at most K nonzero digits. A
    ``k_hot`` of zeros only is never stored: that constant is plain (None).
    """

    raw: np.ndarray
    type: FixedType
    int_bits: np.ndarray | None = None
    k_hot: np.ndarray | None = None  # per output channel K (or one entry); 0: a fixed-point row
    digits: str | None = None

    def khot_rows(self) -> np.ndarray | None:
        """Per index of axis 0: True for a K-hot row (K > 0), False for a fixed-point row; None when plain."""
        if self.k_hot is None:
            return None
        n = self.raw.shape[0] if self.raw.ndim else 1
        return np.broadcast_to(np.asarray(self.k_hot).reshape(-1) > 0, (n,)).copy()

    def mixed_rows(self) -> bool:
        """Some rows K-hot and some fixed-point (Mix and Match)."""
        rows = self.khot_rows()
        return rows is not None and bool(rows.any()) and not bool(rows.all())

    def frac_bits(self) -> np.ndarray:
        """Fractional bits per index of axis 0 (broadcastable to ``raw``)."""
        if self.int_bits is None:
            f = np.full((self.raw.shape[0] if self.raw.ndim else 1,), self.type.frac_bits, dtype=np.int64)
        else:
            f = self.type.width - np.asarray(self.int_bits, dtype=np.int64)
        return f

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.raw.shape)


@dataclasses.dataclass
class Tensor:
    """An activation tensor: name, shape without batch, and its fixed-point type."""

    name: str
    shape: tuple[int, ...] | None = None
    type: FixedType | None = None


@dataclasses.dataclass
class Node:
    """One layer. ``op`` is a key of the op registry (``ir.ops.REGISTRY``)."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: dict[str, Const] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Vectors:
    """Test vectors: inputs and exact expected outputs as mantissas of the graph's I/O types."""

    input_raw: np.ndarray  # (N, *input shape) int64
    output_raw: np.ndarray  # (N, *output shape) int64
    source: str = "model"  # "model" (PyTorch eval outputs stored in the file) or "interpreter"


@dataclasses.dataclass
class Graph:
    """Nodes in topological order, tensors by name, one input and one output."""

    name: str
    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    tensors: dict[str, Tensor]
    vectors: Vectors | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def producer(self, tensor_name: str) -> Node | None:
        for n in self.nodes:
            if tensor_name in n.outputs:
                return n
        return None

    def consumers(self, tensor_name: str) -> list[Node]:
        return [n for n in self.nodes if tensor_name in n.inputs]

    def copy(self) -> "Graph":
        """A copy a pass may change without touching its input, in time linear in the graph's size.

        Nodes, tensors, their lists and dicts are new; constants (:class:`Const`), attribute values and
        test vectors are shared: they are values, which passes replace and never edit in place (a deep
        copy of every weight array per pass made passes quadratic in redundant nodes, issue 9).
        """
        rep = dataclasses.replace
        return rep(self, inputs=list(self.inputs), outputs=list(self.outputs),
                   nodes=[rep(n, inputs=list(n.inputs), outputs=list(n.outputs), attrs=dict(n.attrs),
                              params=dict(n.params)) for n in self.nodes],
                   tensors={k: rep(t) for k, t in self.tensors.items()}, metadata=dict(self.metadata))
