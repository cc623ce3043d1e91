"""Remove nodes that are identities on every possible input (exact; no bit changes).

- ``quant`` whose input type fits its output type (same or finer grid, range inside):
  removed when no graph output or ``clip`` is reachable from it through non-casting
  ops (those would see a different type); the input quantizer is never removed.
- ``relu`` whose input is unsigned or already the output of a ``relu``.
- ``clip`` whose bounds include the whole range of its input type.
"""
from __future__ import annotations

from ...fixed.types import FixedType
from ..graph import Graph
from ..ops import CASTING_OPS, get
from .shapes import infer_shapes


def fits(src: FixedType, dst: FixedType) -> bool:
    """Every value of ``src`` is a value of ``dst`` (so ``cast(x, dst) == x``)."""
    s = dst.frac_bits - src.frac_bits
    return s >= 0 and dst.raw_min <= (src.raw_min << s) and (src.raw_max << s) <= dst.raw_max


class _Index:
    """Producer and consumers of every tensor, kept up to date while nodes are bypassed (no O(N) scans)."""

    def __init__(self, g: Graph):
        self.prod = {}
        self.cons: dict[str, list] = {}
        for n in g.nodes:
            for o in n.outputs:
                self.prod[o] = n
            for i in n.inputs:
                self.cons.setdefault(i, [])
                if not self.cons[i] or self.cons[i][-1] is not n:
                    self.cons[i].append(n)

    def consumers(self, t: str) -> list:
        return self.cons.get(t, [])


def _retype_safe(g: Graph, ix: _Index, tensor: str) -> bool:
    """No graph output or clip sees ``tensor``'s type through non-casting ops."""
    todo, seen = [tensor], set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in g.outputs:
            return False
        for c in ix.consumers(t):
            if get(c.op).reads_codes:  # bounds, thresholds, tables: mantissas of this type
                return False
            if c.op not in CASTING_OPS:
                todo.extend(c.outputs)
    return True


def _identity(g: Graph, ix: _Index, node) -> bool:
    src = g.tensors[node.inputs[0]]
    if src.type is None:
        return False
    if node.op == "quant":
        return fits(src.type, node.attrs["out_type"]) and _retype_safe(g, ix, node.outputs[0])
    if node.op == "relu":
        p = ix.prod.get(node.inputs[0])
        return not src.type.signed or (p is not None and p.op == "relu")
    if node.op == "clip":
        return node.attrs["lo"] <= src.type.raw_min and node.attrs["hi"] >= src.type.raw_max
    return False


def _bypass(g: Graph, ix: _Index, node) -> bool:
    """Remove a node whose output equals its input; False when that is not possible."""
    a, b = node.inputs[0], node.outputs[0]
    if b in g.outputs:
        p = ix.prod.get(a)
        if p is None or a in g.outputs or len(ix.consumers(a)) != 1:
            return False
        p.outputs = [b if o == a else o for o in p.outputs]
        g.tensors[b].type = g.tensors[a].type
        del g.tensors[a]
        ix.prod[b] = p
        ix.prod.pop(a, None)
        ix.cons.pop(a, None)
    else:
        moved = ix.cons.pop(b, [])
        for c in moved:
            c.inputs = [a if i == b else i for i in c.inputs]
        del g.tensors[b]
        ix.prod.pop(b, None)
        rest = [c for c in ix.cons.get(a, []) if c is not node]
        ix.cons[a] = rest + [c for c in moved if all(c is not r for r in rest)]
    return True


def fold(graph: Graph) -> Graph:
    """Bypass identities until none is left: each sweep is linear (an index instead of scans, one shape
    inference per sweep instead of one per removed node). Types downstream of a node removed in a sweep are
    refreshed only at its end; a stale type is always a superset of the true one, so a sweep never removes
    what is not an identity, and the next sweep finds what it missed."""
    g = infer_shapes(graph)
    while True:
        ix = _Index(g)
        removed = set()
        for node in g.nodes:
            if node.inputs[0] in g.inputs and node.op == "quant":
                continue
            if _identity(g, ix, node) and _bypass(g, ix, node):
                removed.add(id(node))
        if not removed:
            return g
        g.nodes = [n for n in g.nodes if id(n) not in removed]
        g = infer_shapes(g)
