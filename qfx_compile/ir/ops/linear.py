"""The exact weighted sum shared by ``dense`` and ``conv2d``: ``cast(sum x*w + b, out_type)``."""
from __future__ import annotations

import numpy as np

from ...fixed.cast import requantize_raw
from ...fixed.types import FixedType
from ..graph import Const, Node
from .base import OpError, align_sum, as_wide, const_common, max_abs_raw, matmul_exact, out_type


def check_params(node: Node, n_out: int) -> None:
    w = node.params.get("weight")
    if not isinstance(w, Const):
        raise OpError(f"node {node.name!r} ({node.op}) has no weight")
    b = node.params.get("bias")
    if b is not None and (not isinstance(b, Const) or b.shape != (n_out,)):
        raise OpError(f"node {node.name!r} ({node.op}): bias must have shape ({n_out},), got "
                      f"{getattr(b, 'shape', b)}")


def weighted_sum(node: Node, cols: np.ndarray, tx: FixedType, w2: np.ndarray, fw: int,
                 channel_axis: int) -> np.ndarray:
    """``cast(w2 @ cols + bias, out_type)``: ``w2`` (O, K) mantissas at frac ``fw``; ``cols`` (N, K[, P])."""
    wsum = int(np.abs(as_wide(w2)).sum(axis=1).max()) if w2.size else 0
    bound = max_abs_raw(tx) * wsum
    if cols.ndim == 2:  # dense: (N, K) @ (K, O)
        acc = matmul_exact(cols, w2.T, bound)
    else:  # conv: (O, K) @ (N, K, P) -> (N, O, P)
        acc = matmul_exact(w2, cols, bound)
    f = tx.frac_bits + fw
    b = node.params.get("bias")
    if b is not None:
        braw, fb = const_common(b)
        shape = [1] * acc.ndim
        shape[channel_axis] = -1
        bb = int(np.abs(as_wide(braw)).max()) if braw.size else 0
        acc, f = align_sum(acc, f, np.asarray(braw).reshape(shape), fb, max(bound, bb))
    return requantize_raw(acc, f, out_type(node))
