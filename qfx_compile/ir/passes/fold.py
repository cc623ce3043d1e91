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
from ..ops import CASTING_OPS
from .shapes import infer_shapes


def fits(src: FixedType, dst: FixedType) -> bool:
    """Every value of ``src`` is a value of ``dst`` (so ``cast(x, dst) == x``)."""
    s = dst.frac_bits - src.frac_bits
    return s >= 0 and dst.raw_min <= (src.raw_min << s) and (src.raw_max << s) <= dst.raw_max


def _retype_safe(g: Graph, tensor: str) -> bool:
    """No graph output or clip sees ``tensor``'s type through non-casting ops."""
    todo, seen = [tensor], set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in g.outputs:
            return False
        for c in g.consumers(t):
            if c.op in ("clip", "multithreshold", "table", "softmax"):  # bounds / thresholds / table indices: this type
                return False
            if c.op not in CASTING_OPS:
                todo.extend(c.outputs)
    return True


def _identity(g: Graph, node) -> bool:
    src = g.tensors[node.inputs[0]]
    if src.type is None:
        return False
    if node.op == "quant":
        return fits(src.type, node.attrs["out_type"]) and _retype_safe(g, node.outputs[0])
    if node.op == "relu":
        p = g.producer(node.inputs[0])
        return not src.type.signed or (p is not None and p.op == "relu")
    if node.op == "clip":
        return node.attrs["lo"] <= src.type.raw_min and node.attrs["hi"] >= src.type.raw_max
    return False


def _bypass(g: Graph, node) -> bool:
    """Remove a node whose output equals its input; False when that is not possible."""
    a, b = node.inputs[0], node.outputs[0]
    if b in g.outputs:
        p = g.producer(a)
        if p is None or a in g.outputs or len(g.consumers(a)) != 1:
            return False
        p.outputs = [b]
        g.tensors[b].type = g.tensors[a].type
        del g.tensors[a]
    else:
        for c in g.consumers(b):
            c.inputs = [a if i == b else i for i in c.inputs]
        del g.tensors[b]
    g.nodes.remove(node)
    return True


def fold(graph: Graph) -> Graph:
    g = infer_shapes(graph)
    changed = True
    while changed:
        changed = False
        for node in list(g.nodes):
            if node.inputs[0] in g.inputs and node.op == "quant":
                continue
            if _identity(g, node) and _bypass(g, node):
                g = infer_shapes(g)
                changed = True
                break
    return g
