"""Backend-only rewrites, IR -> IR, that put constants in the order the HLS kernels stream them.

The IR keeps PyTorch's layouts (feature maps ``(C, H, W)``, conv weights
``[filt][chan][kh][kw]``, dense weights ``[out][in]`` with ``in`` in
``C*H*W`` order after a Flatten). The hardware streams feature maps pixel by
pixel, channels innermost (HWC). These functions return new graphs whose
constants match that order; they never change a value, only positions. One
rewrite changes the structure instead: :func:`split_mixed_rows` computes a
layer with mixed rows (Mix and Match) as a multiplier core and a shift-add
core, merged in channel order.

Each rewritten node gets ``attrs["layout"] = "hwc"`` so a rewrite is never
applied twice.
"""
from __future__ import annotations

import numpy as np

from ..fixed.types import FixedType
from ..ir.graph import Const, Graph, Node, Tensor
from ..ir.ops.base import as_wide
from ..ir.ops import get as get_op


class LowerError(ValueError):
    """A graph the backend cannot put in stream order (a user error: exit 2)."""


def _const_like(c: Const, raw: np.ndarray) -> Const:
    return Const(raw=raw, type=c.type, int_bits=c.int_bits, k_hot=c.k_hot, digits=c.digits)


def _move_terms(node, new_index: np.ndarray) -> None:
    """Re-address the node's shift-add terms (``ir.passes.khot_terms``): input ``i`` moves to ``new_index[i]``."""
    terms = node.attrs.get("terms")
    if terms is not None:
        node.attrs["terms"] = [None if row is None else [(int(new_index[i]), s, e) for i, s, e in row]
                               for row in terms]


def conv_weights_hwc(graph: Graph) -> Graph:
    """Conv weights ``[F][C][KH][KW]`` -> ``[F][KH][KW][C]`` (the kernel's window order; a grouped weight
    ``[F][C/G][KH][KW]`` -> ``[F][KH][KW][C/G]``, or its block-diagonal dense form when K-hot)."""
    g = graph.copy()
    for n in g.nodes:
        if n.op != "conv2d" or n.attrs.get("layout") == "hwc":
            continue
        w = n.params["weight"]
        if w.raw.ndim != 4:
            raise ValueError(f"conv2d weight must be 4-D [F][C][KH][KW], got shape {w.raw.shape}")
        groups = int(n.attrs.get("groups", 1))
        if groups != 1 and w.k_hot is not None:  # shift-add kernels: the block-diagonal dense weight
            del n.attrs["groups"]
            from ..ir.ops.conv2d import expand_groups
            _, cg, kh, kw = w.raw.shape
            per = w.raw.shape[0] // groups
            terms = n.attrs.get("terms")
            if terms is not None:  # a term of filter f moves to its group's channels
                n.attrs["terms"] = [None if row is None else [(i + (f // per) * cg * kh * kw, s, e) for i, s, e in row]
                                    for f, row in enumerate(terms)]
            w = expand_groups(w, groups)
        n.params["weight"] = _const_like(w, np.ascontiguousarray(w.raw.transpose(0, 2, 3, 1)))
        _, c, kh, kw = w.raw.shape
        _move_terms(n, np.arange(c * kh * kw).reshape(kh, kw, c).transpose(2, 0, 1).reshape(-1))
        n.attrs["layout"] = "hwc"
    return g


def _chw_to_hwc_index(c: int, h: int, w: int) -> np.ndarray:
    """perm[k] = CHW flat index of the element at HWC flat position k."""
    idx = np.arange(c * h * w).reshape(c, h, w)
    return idx.transpose(1, 2, 0).reshape(-1)


#: Graph metadata key: the flat graph output is a flattened (C, H, W) map streamed in HWC order.
OUTPUT_HWC = "qfx.output_hwc"


def remove_flatten(graph: Graph) -> Graph:
    """Drop Flatten nodes: in HWC stream order a flatten moves nothing.

    Downstream of a flattened ``(C, H, W)`` map the values stream in HWC order, so
    whatever depends on positions is re-addressed: a dense layer's weight columns, a
    per-feature batchnorm's constants, and (when the flat vector is the graph output)
    the expected output files (``metadata[OUTPUT_HWC] = "C,H,W"``). Order-free ops
    (``OpDef.order_free``) pass the order on. Anything else raises :class:`LowerError`.
    """
    g = graph.copy()
    for n in [n for n in g.nodes if n.op == "flatten"]:
        src, dst = n.inputs[0], n.outputs[0]
        shape = g.tensors[src].shape
        todo = list(g.consumers(dst))
        reaches_output = dst in g.outputs
        for m in g.nodes:
            m.inputs = [src if i == dst else i for i in m.inputs]
        g.outputs = [src if o == dst else o for o in g.outputs]
        g.nodes.remove(n)
        g.tensors.pop(dst, None)
        if shape is None or len(shape) != 3 or shape[1] * shape[2] == 1:
            continue  # a (C, 1, 1) map is in the same order either way
        perm = _chw_to_hwc_index(*shape)
        seen = set()
        while todo:
            m = todo.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            if m.op == "dense":
                if m.attrs.get("layout") != "hwc":
                    w = m.params["weight"]
                    m.params["weight"] = _const_like(w, np.ascontiguousarray(w.raw[:, perm]))
                    _move_terms(m, np.argsort(perm))
                    m.attrs["layout"] = "hwc"
                continue
            if m.op == "batchnorm":
                for k in ("scale", "shift"):
                    c = m.params[k]
                    m.params[k] = Const(raw=np.asarray(c.raw)[perm], type=c.type,
                                        int_bits=None if c.int_bits is None else np.asarray(c.int_bits)[perm])
            elif m.op == "multithreshold":  # per-feature thresholds, base and step follow the stream order
                t = m.params["thresholds"]
                if np.asarray(t.raw).shape[0] > 1:
                    m.params["thresholds"] = Const(raw=np.asarray(t.raw)[perm], type=t.type)
                for k in ("base", "step"):
                    a = np.asarray(m.attrs[k], dtype=object).reshape(-1)
                    if a.size > 1:
                        m.attrs[k] = tuple(int(v) for v in a[perm])
            elif not get_op(m.op).order_free:
                raise LowerError(f"layer {m.name!r} ({m.op}) reads a flattened {tuple(shape)} map, which "
                                 f"streams in HWC order; the backend re-orders dense and batchnorm constants "
                                 f"and passes elementwise ops through, not this op. "
                                 f"Flatten right before the dense layer")
            reaches_output |= m.outputs[0] in g.outputs
            todo.extend(g.consumers(m.outputs[0]))
        if reaches_output:
            g.metadata[OUTPUT_HWC] = ",".join(str(v) for v in shape)
    return g


def _rows(c: Const | None, idx: np.ndarray, khot: bool) -> Const | None:
    """The rows ``idx`` (axis 0) of a constant; ``khot`` False: as a plain constant (no K-hot constraint)."""
    if c is None:
        return None
    k = None
    if khot and c.k_hot is not None:
        k = np.asarray(c.k_hot).reshape(-1)
        k = k if k.size == 1 else k[idx]
    return Const(raw=np.asarray(c.raw)[idx], type=c.type,
                 int_bits=None if c.int_bits is None else np.asarray(c.int_bits)[idx], k_hot=k,
                 digits=c.digits if k is not None else None)


def _narrow(c: Const) -> Const:
    """The same mantissas, at the same binary point, in the narrowest type of the constant's signedness that
    holds them (a row subset of a weight unified across all rows may need fewer bits for its multipliers)."""
    if c.int_bits is not None or not np.asarray(c.raw).size:
        return c
    raw = as_wide(np.asarray(c.raw))
    t = FixedType.for_raw_range(min(int(raw.min()), 0), max(int(raw.max()), 0), c.type.frac_bits,
                                signed=c.type.signed)
    if t.width >= c.type.width:
        return c
    return Const(raw=np.asarray(c.raw), type=t.replace(rounding=c.type.rounding, overflow=c.type.overflow),
                 int_bits=None, k_hot=c.k_hot, digits=c.digits)


def _fresh(taken, name: str) -> str:
    while name in taken:
        name += "_"
    return name


def split_mixed_rows(graph: Graph) -> Graph:
    """A ``dense``/``conv2d`` whose weight has mixed rows (``Const.mixed_rows``: ``k_hot`` 0 on some output
    channels) -> two layers on the same input, ``<name>/dsp_rows`` (the fixed-point rows: a multiplier core)
    and ``<name>/khot_rows`` (the K-hot rows and their shift-add terms), and a ``merge_rows`` node
    ``<name>/merge_rows`` that writes their channels in the layer's order to the layer's output tensor.

    Each part keeps the layer's input, ``out_type`` and window attributes, takes its rows of the weight (in
    the smallest type that holds them) and bias and gets its own accumulator (the interval rule of the op
    on its rows: never wider than the layer's). The values are those of the layer, channel by channel.
    The node names are the ``--config`` keys of the two cores. A weight whose ``k_hot`` has no K > 0
    becomes plain. A grouped convolution with mixed rows raises :class:`LowerError`.
    """
    g = graph.copy()
    nodes = []
    node_names = {n.name for n in g.nodes}
    for n in g.nodes:
        w = n.params.get("weight") if get_op(n.op).weighted else None
        rows = None if w is None else w.khot_rows()
        if rows is not None and not rows.any():
            n.params["weight"] = Const(raw=w.raw, type=w.type, int_bits=w.int_bits)
        if rows is None or rows.all() or not rows.any():
            nodes.append(n)
            continue
        if int(n.attrs.get("groups", 1)) != 1:
            raise LowerError(f"layer {n.name!r} ({n.op}) is a grouped convolution (groups={n.attrs['groups']}) "
                             f"with mixed rows (k_hot 0 on {int((~rows).sum())} of {rows.size} output channels): "
                             f"the backend splits mixed rows only for dense and ungrouped conv2d layers; make "
                             f"every row of this layer K-hot or every row fixed-point")
        out = n.outputs[0]
        y = g.tensors[out]
        merge_in = []
        for part, sel in (("dsp_rows", ~rows), ("khot_rows", rows)):
            idx = np.flatnonzero(sel)
            attrs = {k: v for k, v in n.attrs.items() if k not in ("terms", "adders", "acc_type")}
            if part == "khot_rows" and n.attrs.get("terms") is not None:
                attrs["terms"] = [n.attrs["terms"][j] for j in idx]
                attrs["adders"] = sum(max(len(t) - 1, 0) for t in attrs["terms"])
            params = {k: _rows(c, idx, part == "khot_rows") for k, c in n.params.items()}
            params["weight"] = _narrow(params["weight"])
            name = _fresh(node_names, f"{n.name}/{part}")
            node_names.add(name)
            tname = _fresh(g.tensors, f"{out}/{part}")
            g.tensors[tname] = Tensor(tname, None if y.shape is None else (len(idx),) + tuple(y.shape[1:]), y.type)
            m = Node(name, n.op, list(n.inputs), [tname], attrs, params)
            acc = get_op(n.op).acc
            if acc is not None and "acc_type" in n.attrs:
                m.attrs["acc_type"] = acc(m, [g.tensors[i] for i in n.inputs])
            nodes.append(m)
            merge_in.append(tname)
        name = _fresh(node_names, f"{n.name}/merge_rows")
        node_names.add(name)
        nodes.append(Node(name, "merge_rows", merge_in, [out], {"parts": tuple(int(v) for v in rows)}))
    g.nodes = nodes
    return g


def lower(graph: Graph) -> Graph:
    """All backend rewrites in order."""
    return conv_weights_hwc(split_mixed_rows(remove_flatten(graph)))


def chw_to_stream(arr: np.ndarray) -> np.ndarray:
    """Vectors ``(N, C, H, W)`` -> ``(N, H*W*C)`` in stream order; ``(N, K)`` unchanged."""
    if arr.ndim == 4:
        return np.ascontiguousarray(arr.transpose(0, 2, 3, 1)).reshape(arr.shape[0], -1)
    return arr.reshape(arr.shape[0], -1)
