"""``dense``: ``y_j = cast(sum_i x_i * w_ji + b_j, out_type)``; weight (n_out, n_in), bias (n_out,) optional.

Attributes set by passes: ``acc_type`` (accumulators), ``terms``/``adders`` (K-hot terms).
"""
from __future__ import annotations

from .base import OpDef, OpError, const_common, type_casts_to_out_type
from . import tokens
from .linear import check_params, matmul_hls, weighted_sum
from .intervals import linear_acc


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



# ---- HLS plan
def hls(ctx):
    """``qfx::dense``: reads the vector, ``reuse`` folds of the products, writes ``n_out`` values."""
    n_out, n_in = (int(v) for v in ctx.node.params["weight"].raw.shape)
    if n_in != ctx.inputs[0].count or n_out != ctx.output.count:
        raise ctx.error(f"weight shape {(n_out, n_in)} does not match input {ctx.inputs[0].count} / "
                        f"output {ctx.output.count}")
    return matmul_hls(ctx, [("n_in", n_in), ("n_out", n_out)], products=n_in * n_out, read=n_in, outputs=1,
                      writes=n_out, macs=n_in * n_out, weight_dims="[n_out][n_in]", bias_dims="[n_out]",
                      straight_dims=(f"[{n_in}]", n_out, lambda i: f"m{i}", lambda i: f"x[{i}]"))



def acc(node, ins):
    return linear_acc(node.params["weight"], node.params.get("bias"), ins[0].type)


OP = OpDef("dense", __doc__,
           attrs={"out_type": "FixedType", "acc_type": "FixedType?", "terms": "list?", "adders": "int?"},
           params={"weight": "(n_out, n_in)", "bias": "(n_out,)?"}, n_inputs=1,
           shape=shape, type=type_casts_to_out_type, run=run, casts=True, hls=hls, acc=acc, weighted=True,
           tokens=tokens.all_first)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import FLOAT as _FLOAT, INT as _INT, onnx_import  # noqa: E402


@onnx_import("Gemm", max_inputs=3)
def import_gemm(r, out):
    """``Gemm(x, W, b)``: a pending ``dense`` (fixed-point weights) or an exact integer ``dense`` (float weights)."""
    if r.attr("transA", _INT, 0) != 0:
        raise r.err("transA must be 0")
    if r.attr("alpha", _FLOAT, 1.0) != 1.0 or r.attr("beta", _FLOAT, 1.0) != 1.0:
        raise r.err("alpha and beta must be 1")
    x, wv, bv = r.inp(0), r.inp(1), r.inp(2, optional=True)
    if r.wants_real(x, wv, bv):
        W = wv if r.attr("transB", _INT, 0) else _transposed(r, wv)
        return r.real_linear(out, x, W, bv, "dense", {})
    x = r.typed_act(0)
    w = r.fixed_const(1, "weight")
    if w.raw.ndim != 2:
        raise r.err(f"weight must be 2-D, got shape {tuple(w.raw.shape)}")
    if r.attr("transB", _INT, 0) == 0:
        w = w.transposed()
    params = {"weight": r.to_const(w, "weight")}
    if bv is not None:
        bc = r.fixed_const(2, "bias")
        if bc.raw.size != w.raw.shape[0]:
            raise r.err(f"bias has {bc.raw.size} values for {w.raw.shape[0]} outputs")
        params["bias"] = r.to_const(bc, "bias", (w.raw.shape[0],))
    r.pending(out, "dense", x, {}, params, "needs_bias" if bv is None else "done")


def _transposed(r, c):
    import dataclasses
    import numpy as np
    arr = getattr(c, "arr", None)
    if arr is not None:
        if np.ndim(arr) != 2:
            raise r.err(f"weight must be 2-D, got shape {tuple(np.shape(arr))}")
        return dataclasses.replace(c, arr=np.asarray(arr).T.copy())
    if not hasattr(c, "raw"):
        raise r.err("weight must be a constant (an initializer, possibly through a Quant)")
    if np.ndim(c.raw) != 2:
        raise r.err(f"weight must be 2-D, got shape {tuple(np.shape(c.raw))}")
    return c.transposed()


@onnx_import("MatMul", max_inputs=2)
def import_matmul(r, out):
    """``MatMul(x, W)``: a pending ``dense`` waiting for its bias ``Add``, or the exact integer ``dense``."""
    x, wv = r.inp(0), r.inp(1)
    if r.wants_real(x, wv):
        return r.real_linear(out, x, _transposed(r, wv), None, "dense", {})
    x = r.typed_act(0)
    w = r.fixed_const(1, "weight")
    if w.raw.ndim != 2:
        raise r.err(f"weight must be 2-D, got shape {tuple(w.raw.shape)}")
    r.pending(out, "dense", x, {}, {"weight": r.to_const(w.transposed(), "weight")}, "needs_bias")
