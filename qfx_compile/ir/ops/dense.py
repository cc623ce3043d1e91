"""``dense``: ``y_j = cast(sum_i x_i * w_ji + b_j, out_type)``; weight (n_out, n_in), bias (n_out,) optional.

Attributes set by passes: ``acc_type`` (accumulators), ``terms``/``adders`` (K-hot terms).
"""
from __future__ import annotations

from .base import OpDef, OpError, const_common, type_casts_to_out_type
from .linear import check_params, weighted_sum


def shape(node, in_shapes):
    w = node.params.get("weight")
    check_params(node, w.shape[0] if w is not None and len(w.shape) == 2 else -1)
    if len(w.shape) != 2:
        raise OpError(f"node {node.name!r} (dense): weight must be (n_out, n_in), got {w.shape}")
    if tuple(in_shapes[0]) != (w.shape[1],):
        raise OpError(f"node {node.name!r} (dense): input shape {tuple(in_shapes[0])} does not match weight "
                      f"{w.shape} (expects ({w.shape[1]},); flatten first)")
    return (w.shape[0],)


def run(node, inputs):
    (x, tx), = inputs
    w2, fw = const_common(node.params["weight"])
    return weighted_sum(node, x, tx, w2, fw, channel_axis=1)


OP = OpDef("dense", __doc__,
           attrs={"out_type": "FixedType", "acc_type": "FixedType?", "terms": "list?", "adders": "int?"},
           params={"weight": "(n_out, n_in)", "bias": "(n_out,)?"}, n_inputs=1,
           shape=shape, type=type_casts_to_out_type, run=run, casts=True)
