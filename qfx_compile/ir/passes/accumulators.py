"""Accumulator typing by interval propagation over the actual constant values.

For ``dense``/``conv2d`` output channel j: ``hi_j = sum_i w_ji*(x_max if w_ji>0 else x_min) + b_j``
and ``lo_j`` likewise; the union over channels, at the fewest fractional bits that hold
every term exactly, gives ``acc_type``: the smallest type in which no partial sum in any
order can overflow (every partial sum lies in the interval). ``batchnorm``: ``x*a_c + b_c``;
``add``: ``a + b``; ``avgpool``/``global_avgpool``: the window sum ``S`` (the product
``S*r`` then has type ``acc_type.mul(recip.type)``). Sets ``attrs["acc_type"]`` of every
node whose op declares an ``acc`` rule (``OpDef.acc``; the rules are in ``ir/ops/intervals.py``).
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph
from ..ops import get
from ..ops.base import OpError
from ..ops.intervals import add_acc, batchnorm_acc, linear_acc, sum_acc  # noqa: F401  (the rules, re-exported)
from .shapes import infer_shapes


def type_accumulators(graph: Graph) -> Graph:
    g = infer_shapes(graph)
    for node in g.nodes:
        try:
            _type_node(g, node)
        except ValueError as e:  # a derived type outside what FixedType (and ap_fixed) supports
            if "FixedType" not in str(e):
                raise
            raise OpError(f"node {node.name!r} ({node.op}): its exact accumulator would need a type that is not "
                          f"supported ({e}); use narrower input or weight types") from None
    return g


def _type_node(g: Graph, node) -> None:
    rule = get(node.op).acc
    if rule is not None:
        node.attrs["acc_type"] = rule(node, [g.tensors[i] for i in node.inputs])
