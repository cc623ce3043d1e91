"""Rewrite per-channel binary points of constants as one common type (exact).

A Const with ``int_bits`` per channel becomes mantissas at the largest fractional
bit count ``F`` (each channel shifted left by ``F - f_c``) in the smallest type of the
same signedness that holds them; values are unchanged.
"""
from __future__ import annotations

import numpy as np

from ...fixed.types import FixedType
from ..graph import Const, Graph
from ..ops.base import OpError, as_wide, const_common


def unify_const(c: Const) -> Const:
    if c.int_bits is None:
        return c
    raw, f = const_common(c)
    w = as_wide(raw)
    lo, hi = (int(w.min()), int(w.max())) if w.size else (0, 0)
    t = FixedType.for_raw_range(min(lo, 0), max(hi, 0), f, signed=c.type.signed or lo < 0)
    t = t.replace(rounding=c.type.rounding, overflow=c.type.overflow)
    if t.width <= 62 and raw.dtype == object:
        raw = raw.astype(np.int64)
    return Const(raw, t, None, c.k_hot, c.digits)


def unify_consts(graph: Graph) -> Graph:
    g = graph.copy()
    for node in g.nodes:
        try:
            node.params = {k: unify_const(v) for k, v in node.params.items()}
        except ValueError as e:  # one binary point for all channels would need more bits than FixedType allows
            if "FixedType" not in str(e):
                raise
            raise OpError(f"node {node.name!r} ({node.op}): its per-channel constants need a common type that is "
                          f"not supported ({e}); use closer per-channel binary points or narrower weights") from None
    return g
