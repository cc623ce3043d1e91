"""Backend-only rewrites, IR -> IR, that put constants in the order the HLS kernels stream them.

The IR keeps PyTorch's layouts (feature maps ``(C, H, W)``, conv weights
``[filt][chan][kh][kw]``, dense weights ``[out][in]`` with ``in`` in
``C*H*W`` order after a Flatten). The hardware streams feature maps pixel by
pixel, channels innermost (HWC). These functions return new graphs whose
constants match that order; they never change a value, only positions.

Each rewritten node gets ``attrs["layout"] = "hwc"`` so a rewrite is never
applied twice.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Const, Graph


def _const_like(c: Const, raw: np.ndarray) -> Const:
    return Const(raw=raw, type=c.type, int_bits=c.int_bits, k_hot=c.k_hot, digits=c.digits)


def conv_weights_hwc(graph: Graph) -> Graph:
    """Conv weights ``[F][C][KH][KW]`` -> ``[F][KH][KW][C]`` (the kernel's window order)."""
    g = graph.copy()
    for n in g.nodes:
        if n.op != "conv2d" or n.attrs.get("layout") == "hwc":
            continue
        w = n.params["weight"]
        if w.raw.ndim != 4:
            raise ValueError(f"conv2d weight must be 4-D [F][C][KH][KW], got shape {w.raw.shape}")
        groups = int(n.attrs.pop("groups", 1))
        if groups != 1:  # grouped / depthwise: the block-diagonal dense weight (zeros outside each group)
            from ..ir.ops.conv2d import expand_groups
            _, cg, kh, kw = w.raw.shape
            per = w.raw.shape[0] // groups
            terms = n.attrs.get("terms")
            if terms is not None:  # a term of filter f moves to its group's channels
                n.attrs["terms"] = [[(i + (f // per) * cg * kh * kw, s, e) for i, s, e in row]
                                    for f, row in enumerate(terms)]
            w = expand_groups(w, groups)
        n.params["weight"] = _const_like(w, np.ascontiguousarray(w.raw.transpose(0, 2, 3, 1)))
        n.attrs["layout"] = "hwc"
    return g


def _chw_to_hwc_index(c: int, h: int, w: int) -> np.ndarray:
    """perm[k] = CHW flat index of the element at HWC flat position k."""
    idx = np.arange(c * h * w).reshape(c, h, w)
    return idx.transpose(1, 2, 0).reshape(-1)


def remove_flatten(graph: Graph) -> Graph:
    """Drop Flatten nodes: in HWC stream order a flatten moves nothing.

    The dense layer that consumes a flattened ``(C, H, W)`` map gets its weight
    columns permuted from CHW to HWC order and reads the map directly.
    """
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        for n in g.nodes:
            if n.op != "flatten":
                continue
            src, dst = n.inputs[0], n.outputs[0]
            shape = g.tensors[src].shape
            consumers = g.consumers(dst)
            for m in consumers:
                if m.op == "dense" and shape is not None and len(shape) == 3:
                    w = m.params["weight"]
                    if m.attrs.get("layout") != "hwc":
                        perm = _chw_to_hwc_index(*shape)
                        m.params["weight"] = _const_like(w, np.ascontiguousarray(w.raw[:, perm]))
                        m.attrs["layout"] = "hwc"
                elif m.op not in ("dense", "relu", "clip", "quant", "add"):
                    raise ValueError(f"a Flatten output feeds {m.op!r}, which the backend cannot lower")
                elif m.op != "dense" and shape is not None and len(shape) == 3 and shape[1] * shape[2] > 1:
                    # elementwise ops after a flatten would see HWC order instead of CHW: keep it simple
                    raise ValueError(f"elementwise {m.op!r} after a Flatten of a {shape} map is not supported")
                m.inputs = [src if i == dst else i for i in m.inputs]
            if dst in g.outputs:
                # the graph output is the flattened map: the testbench files use stream (HWC) order
                # for 3-D maps, so keep the flat shape by aliasing (order of a (C,1,1) map is the same)
                if shape is not None and len(shape) == 3 and shape[1] * shape[2] > 1:
                    raise ValueError("a model whose output is a flattened feature map is not supported")
                g.outputs = [src if o == dst else o for o in g.outputs]
            g.nodes.remove(n)
            g.tensors.pop(dst, None)
            changed = True
            break
    return g


def lower(graph: Graph) -> Graph:
    """All backend rewrites in order."""
    return conv_weights_hwc(remove_flatten(graph))


def chw_to_stream(arr: np.ndarray) -> np.ndarray:
    """Vectors ``(N, C, H, W)`` -> ``(N, H*W*C)`` in stream order; ``(N, K)`` unchanged."""
    if arr.ndim == 4:
        return np.ascontiguousarray(arr.transpose(0, 2, 3, 1)).reshape(arr.shape[0], -1)
    return arr.reshape(arr.shape[0], -1)
