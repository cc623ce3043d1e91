"""``conv2d``: ``y = cast(sum_{c,ky,kx} x * w + b, out_type)``, dilation 1, zero padding, ``groups`` G.

Weight (O, C/G, KH, KW), bias (O,) optional; attrs ``kernel`` (kh, kw), ``stride`` (sh, sw),
``pads`` (top, left, bottom, right), ``groups`` (default 1: output channel o reads the input channels
of its group ``o // (O/G)``; G = C is depthwise). K-hot term indices address the flattened
(C/G, KH, KW) patch of their group.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..graph import Const
from ...fixed.window import out_size
from .base import OpDef, OpError, const_common, int_pair, pads4, window_out, type_casts_to_out_type
from . import tokens
from .linear import check_params, matmul_hls, weighted_sum
from .intervals import linear_acc


def geometry(node):
    return int_pair(node, "kernel"), int_pair(node, "stride", (1, 1)), pads4(node)


def groups(node) -> int:
    g = node.attrs.get("groups", 1)
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
        raise OpError(f"node {node.name!r} (conv2d): groups must be an int >= 1, got {g!r}")
    return int(g)


def expand_groups(w: Const, g: int) -> Const:
    """The grouped weight (O, C/G, KH, KW) as the block-diagonal dense weight (O, C, KH, KW): zeros
    outside each output channel's group (the same sums exactly; per-channel binary points kept)."""
    if g == 1:
        return w
    raw = np.asarray(w.raw)
    o, cg = raw.shape[:2]
    full = np.zeros((o, cg * g) + raw.shape[2:], dtype=raw.dtype)
    per = o // g
    for f in range(o):
        k = f // per
        full[f, k * cg:(k + 1) * cg] = raw[f]
    return Const(raw=full, type=w.type, int_bits=w.int_bits, k_hot=w.k_hot, digits=w.digits)


def shape(node, in_shapes):
    w = node.params.get("weight")
    check_params(node, w.shape[0] if w is not None and len(w.shape) == 4 else -1)
    kernel, stride, pads = geometry(node)
    if len(w.shape) != 4 or tuple(w.shape[2:]) != kernel:
        raise OpError(f"node {node.name!r} (conv2d): weight {w.shape} does not match kernel {kernel}")
    g = groups(node)
    if w.shape[0] % g:
        raise OpError(f"node {node.name!r} (conv2d): {w.shape[0]} output channels do not split into {g} groups")
    if len(in_shapes[0]) != 3 or in_shapes[0][0] != w.shape[1] * g:
        raise OpError(f"node {node.name!r} (conv2d): input {tuple(in_shapes[0])} does not have the "
                      f"{w.shape[1] * g} channels the weight expects ({g} group(s) of {w.shape[1]})")
    ho, wo = window_out(node, in_shapes[0], kernel, stride, pads)
    return (w.shape[0], ho, wo)


def patches(x: np.ndarray, kernel, stride, pads, fill=0) -> np.ndarray:
    """im2col: (N, C, H, W) -> (N, C, KH, KW, H', W') (padding cells hold ``fill``)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, pads
    xp = np.full((n, c, h + pt + pb, w + pl + pr), fill, dtype=x.dtype)
    xp[:, :, pt:pt + h, pl:pl + w] = x
    ho, wo = out_size(h, kh, sh, (pt, pb)), out_size(w, kw, sw, (pl, pr))
    out = np.empty((n, c, kh, kw, ho, wo), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            out[:, :, ky, kx] = xp[:, :, ky:ky + sh * (ho - 1) + 1:sh, kx:kx + sw * (wo - 1) + 1:sw]
    return out


def run(node, inputs):
    (x, tx), = inputs
    kernel, stride, pads = geometry(node)
    p = patches(x, kernel, stride, pads)
    n, c, kh, kw, ho, wo = p.shape
    cols = p.reshape(n, c * kh * kw, ho * wo)
    wraw, fw = const_common(expand_groups(node.params["weight"], groups(node)))
    w2 = np.asarray(wraw).reshape(wraw.shape[0], -1)
    y = weighted_sum(node, cols, tx, w2, fw, channel_axis=1)
    return y.reshape(n, w2.shape[0], ho, wo)



# ---- HLS plan
def hls(ctx):
    """``qfx::conv2d``: a line buffer over the zero-padded map; per window ``reuse`` folds, ``n_filt`` writes.

    The weight is in the kernel's window order ``[F][KH][KW][C/G]`` (``backend.lower``). Grouped and
    depthwise convolutions (G > 1) run on ``qfx::conv2d_grouped``: per pixel the G groups one after
    another, each ``F/G`` outputs of ``KH*KW*C/G`` products (cost: G "outputs" per pixel). K-hot
    grouped weights reach the shift-add kernels as their block-diagonal dense form (``backend.lower``).
    """
    g = groups(ctx.node)
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = geometry(ctx.node)
    c, h, wd = ctx.chw()
    f, oh, ow = ctx.chw(ctx.output)
    sizes = [("in_height", h), ("in_width", wd), ("n_chan", c), ("n_filt", f), ("filt_height", kh),
             ("filt_width", kw), ("stride_height", sh), ("stride_width", sw), ("pad_top", pt),
             ("pad_bottom", pb), ("pad_left", pl), ("pad_right", pr), ("out_height", oh), ("out_width", ow)]
    if g != 1:
        if ctx.node.params["weight"].k_hot is not None:
            raise ctx.error("a K-hot grouped weight reached the backend unexpanded; run backend.lower first")
        cg, fg = c // g, f // g
        plan = matmul_hls(ctx, sizes + [("n_groups", g)], products=fg * kh * kw * cg,
                          read=(h + pt + pb) * (wd + pl + pr) * c, outputs=oh * ow * g, writes=fg,
                          macs=f * kh * kw * cg * oh * ow, weight_dims="[n_filt][kh][kw][n_chan/n_groups]",
                          bias_dims="[n_filt]", straight_dims=None)
        return dataclasses.replace(plan, kernel="conv2d_grouped", callee=f"qfx::conv2d_grouped<cfg_{ctx.id}>")

    def pos(i):
        return i // (c * kw), (i // c) % kw, i % c

    return matmul_hls(ctx, sizes, products=f * kh * kw * c, read=(h + pt + pb) * (wd + pl + pr) * c,
                      outputs=oh * ow, writes=f, macs=f * kh * kw * c * oh * ow,
                      weight_dims="[n_filt][kh][kw][n_chan]", bias_dims="[n_filt]",
                      straight_dims=(f"[{kh}][{kw}][{c}]", f, lambda i: "m_{}_{}_{}".format(*pos(i)),
                                     lambda i: "x[{}][{}][{}]".format(*pos(i))))



def acc(node, ins):
    return linear_acc(node.params["weight"], node.params.get("bias"), ins[0].type)


def token_rule(node, in_shapes, out_shape):
    """The line-buffered window of qfx::conv2d_core (and conv2d_straight): ``n_filt`` writes per window."""
    kernel, stride, pads = geometry(node)
    return tokens.window(in_shapes[0], kernel, stride, pads, writes=out_shape[0])


OP = OpDef("conv2d", __doc__,
           attrs={"out_type": "FixedType", "kernel": "(kh, kw)", "stride": "(sh, sw)",
                  "pads": "(top, left, bottom, right)", "groups": "int?", "acc_type": "FixedType?",
                  "terms": "list?",
                  "adders": "int?"},
           params={"weight": "(O, C, KH, KW)", "bias": "(O,)?"}, n_inputs=1,
           shape=shape, type=type_casts_to_out_type, run=run, casts=True, hls=hls, acc=acc, weighted=True,
           tokens=token_rule)


# ---- ONNX import (the reader `r` is the frontend's; see onnx_table)
from .onnx_table import INT as _INT, onnx_import  # noqa: E402


@onnx_import("Conv", max_inputs=3)
@onnx_import("Conv", domain="qfx", max_inputs=3, label="qfx.Conv")
def import_conv(r, out):
    """``Conv(x, W, b)`` (standard or ``qfx.Conv``): a pending ``conv2d``, or the exact integer ``conv2d``."""
    import numpy as np
    x, wv, bv = r.inp(0), r.inp(1), r.inp(2, optional=True)
    grp = r.attr("group", _INT, 1)
    if grp < 1:
        raise r.err(f"group must be >= 1, got {grp}")
    k, s, p = r.window_attrs(conv=True)
    wshape = tuple(np.shape(wv.arr if hasattr(wv, "arr") else getattr(wv, "raw", np.zeros(0))))
    one_d = len(wshape) == 3  # Conv1d: weight (O, C, K) -> (O, C, 1, K), maps (C, 1, L)
    if one_d:
        wshape = (wshape[0], wshape[1], 1, wshape[2])
        if hasattr(wv, "arr"):
            wv = type(wv)(np.asarray(wv.arr).reshape(wshape), wv.elem)
        elif hasattr(wv, "reshaped"):
            wv = wv.reshaped(wshape)
    if len(wshape) != 4:
        raise r.err(f"weight must be a constant (O, C, KH, KW), got shape {wshape}")
    if k is not None and tuple(k) != wshape[2:]:
        raise r.err(f"kernel_shape {list(k)} does not match the weight shape {wshape}")
    attrs = {"kernel": wshape[2:], "stride": s, "pads": p}
    if grp != 1:
        attrs["groups"] = grp
    if r.wants_real(x, wv, bv):
        if grp != 1:
            raise r.err("a grouped convolution of a float-scaled input is not supported; put a Quant before it")
        return r.real_linear(out, x, wv, bv, "conv2d", attrs)
    x = r.typed_act(0)
    w = r.fixed_const(1, "weight")
    params = {"weight": r.to_const(w, "weight", wshape if one_d else None)}
    o = w.raw.shape[0]
    if bv is not None:
        bc = r.fixed_const(2, "bias")
        if bc.raw.size != o:
            raise r.err(f"bias has {bc.raw.size} values for {o} output channels")
        params["bias"] = r.to_const(bc, "bias", (o,))
    r.pending(out, "conv2d", x, attrs, params, "needs_bias" if bv is None else "done")
