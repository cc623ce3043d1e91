"""IR passes, each ``Graph -> Graph`` (a new graph; the input is never mutated)."""
from __future__ import annotations

from ..graph import Graph
from .accumulators import type_accumulators
from .fold import fold
from .khot_terms import khot_terms
from .shapes import infer_shapes
from .unify_consts import unify_consts


def run_default_passes(graph: Graph) -> Graph:
    """The compiler's pipeline, in order."""
    g = infer_shapes(graph)  # shapes and types of every tensor; validates the structure
    g = fold(g)  # drop exact identities (redundant quant/relu/clip)
    g = unify_consts(g)  # one binary point per constant (exact)
    g = type_accumulators(g)  # acc_type from intervals over the actual weights
    g = khot_terms(g)  # shift-add terms and adder counts of constant weights
    return g


__all__ = ["run_default_passes", "infer_shapes", "fold", "unify_consts", "type_accumulators", "khot_terms"]
