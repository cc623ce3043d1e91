"""The exact weighted sum shared by ``dense`` and ``conv2d``: ``cast(sum x*w + b, out_type)``."""
from __future__ import annotations

import numpy as np

from ...fixed.cast import requantize_raw
from ...fixed.types import FixedType
from ..graph import Const, Node
from .base import OpError, align_sum, as_wide, const_common, max_abs_raw, matmul_exact, out_type
from ...backend import shiftadd
from ...backend.estimate import LayerShape
from ...backend.layerplan import StraightCode, TableFold, signed_bits


def check_params(node: Node, n_out: int) -> None:
    w = node.params.get("weight")
    if not isinstance(w, Const):
        raise OpError(f"node {node.name!r} ({node.op}) has no weight")
    b = node.params.get("bias")
    if b is not None and (not isinstance(b, Const) or b.shape != (n_out,)):
        raise OpError(f"node {node.name!r} ({node.op}): bias must have shape ({n_out},), got "
                      f"{getattr(b, 'shape', b)}")


def weighted_sum(node: Node, cols: np.ndarray, tx: FixedType, w2: np.ndarray, fw: int,
                 channel_axis: int) -> np.ndarray:
    """``cast(w2 @ cols + bias, out_type)``: ``w2`` (O, K) mantissas at frac ``fw``; ``cols`` (N, K[, P])."""
    wsum = int(np.abs(as_wide(w2)).sum(axis=1).max()) if w2.size else 0
    bound = max_abs_raw(tx) * wsum
    if cols.ndim == 2:  # dense: (N, K) @ (K, O)
        acc = matmul_exact(cols, w2.T, bound)
    else:  # conv: (O, K) @ (N, K, P) -> (N, O, P)
        acc = matmul_exact(w2, cols, bound)
    f = tx.frac_bits + fw
    b = node.params.get("bias")
    if b is not None:
        braw, fb = const_common(b)
        shape = [1] * acc.ndim
        shape[channel_axis] = -1
        bb = int(np.abs(as_wide(braw)).max()) if braw.size else 0
        acc, f = align_sum(acc, f, np.asarray(braw).reshape(shape), fb, max(bound, bb))
    return requantize_raw(acc, f, out_type(node))


# ---- HLS plan (dense and conv2d)
def matmul_hls(ctx, sizes, products: int, read: int, outputs: int, writes: int, macs: int,
               weight_dims: str, bias_dims: str, straight_dims):
    """Plan of a weighted sum: a multiplier kernel, or shift-add for K-hot weights.

    ``products`` per output vector (dense) or pixel (conv), ``read`` cycles to stream the input,
    ``outputs`` vectors/pixels per sample with ``writes`` values each. ``straight_dims``:
    ``(x_dims, n_out, leaf, element)`` of the straight-line form. Constants are in stream order
    (``backend.lower``).
    """
    n = ctx.node
    conv = n.op == "conv2d"
    w, b = n.params["weight"], n.params.get("bias")
    if b is None:
        b = Const(raw=np.zeros(w.raw.shape[0], dtype=np.int64), type=FixedType(1, 1, True))
    wa = ctx.const("weight", "w", w, weight_dims)
    ba = ctx.const("bias", "b", b, bias_dims)
    acc = ctx.acc_type()
    common = dict(macs=macs, params_bits=wa.depth * wa.width + ba.depth * ba.width,
                  n_params=wa.depth + (ba.depth if n.params.get("bias") is not None else 0))
    x_t, y_t = ctx.x, ctx.y
    if w.k_hot is None:
        return ctx.layer(
            n.op, LayerShape("mul", products=products, read_cycles=read, outputs=outputs, max_reuse=products,
                             natural_reuse=writes, writes=writes, a_bits=signed_bits(x_t),
                             b_bits=signed_bits(wa.type), x_type=(x_t.width, x_t.signed),
                             w_type=(wa.type.width, wa.type.signed)),
            types=[("in_t", x_t.cpp()), ("w_t", wa.type.cpp()), ("b_t", ba.type.cpp()), ("acc_t", acc.cpp()),
                   ("out_t", y_t.cpp()), ("w_raw_t", wa.ctype), ("b_raw_t", ba.ctype)],
            sizes=sizes, arrays=[wa, ba], acc=acc, has_reuse=True, has_mul_impl=True, **common)
    if w.mixed_rows():
        raise ctx.error("a weight with mixed rows (k_hot 0 on some channels) reached the plan; "
                        "backend.lower.split_mixed_rows splits it first")
    # K-hot: shift-add, no multiplier
    w_raw = np.asarray(w.raw)
    if "terms" not in n.attrs:
        raise ctx.error("no shift-add terms; run qfx_compile.ir.passes.run_default_passes (khot_terms) first")
    terms = [[shiftadd.Term(*t) for t in row] for row in n.attrs["terms"]]  # in stream order (backend.lower)
    x_dims, n_out, leaf, element = straight_dims
    # option shiftadd=1: the table kernel even where straight-line code fits (backend.explore chooses)
    code = None if int(ctx.options.shiftadd) == 1 else shiftadd.straight_line(
        terms, x_t, [int(v) for v in np.asarray(b.raw).reshape(-1).tolist()], ba.type, leaf,
        element)   # None: the estimator prefers the table kernel
    if code is not None:
        sc = StraightCode(f"sa_{ctx.id}", tuple(code.body), code.terms, code.adders, code.depth, x_dims, n_out)
        return ctx.layer(
            f"{n.op} shift-add",
            LayerShape("shiftadd", adders=code.adders, adder_bits=code.adder_bits,
                       fixed_cycles=read + outputs * (1 + writes), products=products, read_cycles=read,
                       outputs=outputs, writes=writes, natural_reuse=writes, max_reuse=products,
                       k=shiftadd.sign_shift_tables(w_raw)[2], acc_bits=acc.width),  # its table form
            callee=f"qfx_gen::{'conv2d' if conv else 'dense'}_straight<cfg_{ctx.id}, {sc.name}>",
            types=[("in_t", x_t.cpp()), ("b_t", ba.type.cpp()), ("out_t", y_t.cpp()), ("b_raw_t", ba.ctype)],
            sizes=sizes, arrays=[ba], acc=code.widest or acc, straight=sc, **common)
    sign, shift, k = shiftadd.sign_shift_tables(w_raw)
    dims = weight_dims + "[n_terms]"
    units = -(-products // writes)  # the table kernel at reuse n_out / n_filt: ceil(P / reuse) term units
    fold = TableFold(products, k, read, outputs, writes, acc.width, writes)
    return ctx.layer(
        f"{n.op}_shiftadd",
        LayerShape("shiftadd", adders=units * k, adder_bits=units * k * acc.width,
                   fixed_cycles=read + outputs * (-(-products // units) + writes)),
        types=[("in_t", x_t.cpp()), ("w_t", wa.type.cpp()), ("b_t", ba.type.cpp()), ("acc_t", acc.cpp()),
               ("out_t", y_t.cpp()), ("w_raw_t", wa.ctype), ("b_raw_t", ba.ctype)],
        sizes=list(sizes) + [("n_terms", k)],
        arrays=[ctx.int_array("sign", "wsign", sign, dims), ctx.int_array("shift", "wshift", shift, dims), ba],
        acc=acc, fold=fold, has_reuse=True, has_mul_impl=True, **common)
