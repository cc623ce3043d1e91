"""Shift-add terms of K-hot weights (``dense``/``conv2d``) in canonical signed digits.

Each weight ``w = m * 2**-f_c`` of a K-hot row becomes ``sum sign * 2**exponent`` with the CSD
digits of ``m`` (exponent absolute: digit position minus ``f_c``). Sets, on the nodes whose
weight has ``k_hot`` (and only there: a plain weight runs on multipliers and needs no terms),
``attrs["terms"]``: per output channel a list of ``(input flat index, sign, exponent)`` (index
into the flattened (n_in,) or (C, KH, KW) patch), or None for a fixed-point row (K = 0, Mix and
Match: ``Const.khot_rows``), and ``attrs["adders"]``: additions needed to sum every K-hot
channel's terms (``sum_c max(len_c - 1, 0)``; bias excluded).
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph
from ..ops import get
from ..ops.base import as_wide

from ...fixed.digits import digits_of


def channel_terms(raw_row, frac: int) -> list[tuple[int, int, int]]:
    terms = []
    for i, m in enumerate(raw_row):
        for sign, e in digits_of(int(m), "csd"):
            terms.append((i, sign, e - frac))
    return terms


def khot_terms(graph: Graph) -> Graph:
    g = graph.copy()
    for node in g.nodes:
        if not get(node.op).weighted:
            continue
        w = node.params["weight"]
        rows = w.khot_rows()
        node.attrs.pop("terms", None)
        node.attrs.pop("adders", None)
        if rows is None or not rows.any():
            continue
        raw = as_wide(np.asarray(w.raw).reshape(w.raw.shape[0], -1))
        fr = np.broadcast_to(np.asarray(w.frac_bits()), (raw.shape[0],))
        terms = [channel_terms(raw[j], int(fr[j])) if rows[j] else None for j in range(raw.shape[0])]
        node.attrs["terms"] = terms
        node.attrs["adders"] = sum(max(len(t) - 1, 0) for t in terms if t is not None)
    return g
