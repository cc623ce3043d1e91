"""Shape and type inference through the op registry (also validates the graph's structure).

Sets ``Tensor.shape``/``Tensor.type`` of every node output from the op's shape and
type rules, and the constants an op derives from its input shapes (``OpDef.derive``, e.g. an
average pool's reciprocal). The graph input's shape must
be set (its type is None when the first node is the input ``quant``).
"""
from __future__ import annotations

from ..graph import Graph, Tensor
from ..ops import OpError, get


def infer_shapes(graph: Graph) -> Graph:
    g = graph.copy()
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise OpError(f"graph {g.name!r} must have one input and one output")
    known = set(g.inputs)
    inp = g.tensors.get(g.inputs[0])
    if inp is None or inp.shape is None:
        raise OpError(f"graph {g.name!r}: input {g.inputs[0]!r} has no shape")
    for node in g.nodes:
        op = get(node.op)
        if (len(node.inputs) != op.n_inputs if op.n_inputs is not None else not node.inputs) \
                or len(node.outputs) != 1:
            raise OpError(f"node {node.name!r} ({node.op}) needs {op.n_inputs or 'one or more'} input(s) and 1 "
                          f"output, got "
                          f"{len(node.inputs)} and {len(node.outputs)}")
        for i in node.inputs:
            if i not in known:
                raise OpError(f"node {node.name!r} ({node.op}) reads {i!r} before it is computed (not in order)")
        ins = [g.tensors[i] for i in node.inputs]
        shape = tuple(int(d) for d in op.shape(node, [t.shape for t in ins]))
        if node.op != "quant":
            for t in ins:
                if t.type is None:
                    raise OpError(f"node {node.name!r} ({node.op}): input {t.name!r} has no fixed-point type")
        typ = op.type(node, [t.type for t in ins])
        if op.derive is not None:
            node.attrs.update(op.derive(node, ins))
        out = node.outputs[0]
        if out in known:
            raise OpError(f"tensor {out!r} is written twice (node {node.name!r})")
        known.add(out)
        t = g.tensors.setdefault(out, Tensor(out))
        t.shape, t.type = shape, typ
    if g.outputs[0] not in known:
        raise OpError(f"graph {g.name!r}: output {g.outputs[0]!r} is never computed")
    return g
