"""Graph rewrites before reading: channels-last flattens (QKeras/tf2onnx) become a permutation of weights.

``Transpose(perm=[0, 2, 3, 1])`` of an (N, C, H, W) activation followed by a flatten (``Flatten`` or a
``Reshape`` to 2-D) feeds the next ``MatMul``/``Gemm`` the features in (H, W, C) order. When everything
between the flatten and that layer is elementwise with per-tensor constants (activation quantizers with
scalar parameters, ``Relu``, ``Identity``), permuting the rows of the layer's constant weight gives the same
result from the channels-first flatten: the Transpose is dropped and the weight initializer replaced. A
Transpose that does not fit this pattern is left for the reader, which refuses it with a message.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..ir.ops.onnx_table import QONNX, STD

_ELEMENTWISE = {("", "Relu"), ("", "Identity")}
_QUANTS = ("Quant", "IntQuant", "BipolarQuant")


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def flatten_weight(g, t, consumers, producer, inits):
    """For ``t`` = Transpose(perm=[0, 2, 3, 1]) of an activation: the names along its linear layer's weight
    (initializer first, then the outputs of the quantizers/Identity on it) and whether the weight is
    (out, in) (Gemm transB=1); None when the pattern does not hold."""
    if list(_attr(t, "perm", []) or []) != [0, 2, 3, 1]:
        return None
    cons = consumers.get(t.output[0], [])
    if len(cons) != 1 or cons[0].domain not in STD or cons[0].op_type not in ("Flatten", "Reshape"):
        return None
    cur = cons[0].output[0]
    while True:  # per-tensor elementwise nodes up to the linear layer
        cs = consumers.get(cur, [])
        if len(cs) != 1:
            return None
        n = cs[0]
        if (n.domain, n.op_type) in _ELEMENTWISE or (
                n.domain in QONNX and n.op_type in _QUANTS and n.input[0] == cur and
                all(i in inits and numpy_helper.to_array(inits[i]).size == 1 for i in n.input[1:])):
            cur = n.output[0]
            continue
        break
    if n.domain not in STD or n.op_type not in ("MatMul", "Gemm") or n.input[0] != cur or len(n.input) < 2:
        return None
    trans_b = bool(n.op_type == "Gemm" and _attr(n, "transB", 0))
    names, w = [n.input[1]], n.input[1]
    while w not in inits:
        p = producer.get(w)
        if p is None or len(consumers.get(w, [])) != 1 or not (
                (p.domain, p.op_type) in _ELEMENTWISE or (p.domain in QONNX and p.op_type in _QUANTS)):
            return None
        for i in p.input[1:]:  # quantizer parameters must not vary along the input (permuted) axis
            a = numpy_helper.to_array(inits[i]) if i in inits else None
            if a is None or (a.size > 1 and (a.ndim != 2 or a.shape[1 if trans_b else 0] != 1)):
                return None
        w = p.input[0]
        names.append(w)
    if len(consumers.get(w, [])) != 1:
        return None
    return names[::-1], trans_b


def permute_rows(arr: np.ndarray, chw, trans_b: bool) -> np.ndarray:
    """A weight read by the HWC flatten of a (C, H, W) map, rearranged for the CHW flatten."""
    c, h, wd = chw
    hwc_to_chw = np.arange(c * h * wd).reshape(c, h, wd).transpose(1, 2, 0).reshape(-1)
    new = np.empty_like(arr)
    if trans_b:
        new[:, hwc_to_chw] = arr
    else:
        new[hwc_to_chw] = arr
    return new
