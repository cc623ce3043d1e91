"""``multithreshold``: ``y = base_c + step_c * #{k : x >= T[c, k]}`` per channel (axis 0), no arithmetic rounding.

The exact form of "integer accumulator -> float scale / BatchNorm / bias -> quantizer"
(a monotone step function of the accumulator; ``ir.exact_real`` computes it).
Param ``thresholds`` (C, K) or (1, K): integer mantissas at the input's binary point,
ascending per channel. Attrs ``base`` and ``step`` (ints, one per channel or one):
the output mantissa below every threshold, and +1 or -1 per threshold passed.
``out_type``: the output grid; every result lies in its range by construction
(the frontend checks it), and ``run`` refuses anything else.
"""
from __future__ import annotations

import numpy as np

from ..graph import Const
from .base import OpDef, OpError, as_wide, cast_check, out_type
from . import tokens


def _per_channel(node, key, c):
    v = node.attrs.get(key)
    a = np.asarray(v, dtype=object).reshape(-1) if v is not None else None
    if a is None or a.size not in (1, c):
        raise OpError(f"node {node.name!r} (multithreshold): {key} must have 1 or {c} entries")
    return a


def shape(node, in_shapes):
    s = tuple(in_shapes[0])
    if len(s) not in (1, 3):
        raise OpError(f"node {node.name!r} (multithreshold) needs a (C, H, W) or (C,) input, got {s}")
    t = node.params.get("thresholds")
    if not isinstance(t, Const) or t.raw.ndim != 2 or t.raw.shape[0] not in (1, s[0]) or t.int_bits is not None:
        raise OpError(f"node {node.name!r} (multithreshold): thresholds must be (C, K) or (1, K) with one "
                      f"binary point, got {getattr(t, 'shape', t)}")
    _per_channel(node, "base", s[0])
    _per_channel(node, "step", s[0])
    return s


def type_rule(node, in_types):
    cast_check(node, in_types[0])
    t = node.params["thresholds"].type
    if t.frac_bits != in_types[0].frac_bits:
        raise OpError(f"node {node.name!r} (multithreshold): thresholds are at binary point {t.frac_bits}, the "
                      f"input at {in_types[0].frac_bits}")
    return out_type(node)


def run(node, inputs):
    (x, tx), = inputs
    c = x.shape[1]
    thr = node.params["thresholds"].raw
    big = x.dtype == object or thr.dtype == object
    xs = as_wide(x) if big else x.astype(np.int64)
    th = as_wide(thr) if big else np.asarray(thr, dtype=np.int64)
    th = np.broadcast_to(th, (c, th.shape[1]))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    cnt = np.zeros(x.shape, dtype=np.int64)
    for k in range(th.shape[1]):
        cnt += (xs >= th[:, k].reshape(bshape)).astype(np.int64)
    base = np.asarray(_per_channel(node, "base", c).astype(np.int64)).reshape((1, -1) + (1,) * (x.ndim - 2))
    step = np.asarray(_per_channel(node, "step", c).astype(np.int64)).reshape((1, -1) + (1,) * (x.ndim - 2))
    y = base + step * cnt
    t = out_type(node)
    if y.size and (y.min() < t.raw_min or y.max() > t.raw_max):
        raise OpError(f"node {node.name!r} (multithreshold): a result leaves {t} (the thresholds do not fit it)")
    return y


# ---- HLS plan
def hls(ctx):
    """``qfx::multithreshold`` (hls_lib/qfx_threshold.h): K comparators per element, one element per cycle."""
    import numpy as np
    from ...backend.estimate import LayerShape
    from ...fixed.types import FixedType
    from ..graph import Const
    c, h, w = ctx.chw(ctx.output)
    thr = ctx.node.params["thresholds"]
    k = int(thr.raw.shape[1])
    ta = ctx.const("thresholds", "thr", Const(np.asarray(thr.raw).reshape(-1), thr.type), "[n_thr_chan * n_thr]")
    base = [int(v) for v in np.broadcast_to(np.asarray(ctx.node.attrs["base"], dtype=object), (c,))]
    step = [int(v) for v in np.broadcast_to(np.asarray(ctx.node.attrs["step"], dtype=object), (c,))]

    def ints(role, prefix, vals):
        return ctx.const(role, prefix, Const(np.array(vals, dtype=np.int64),
                                             FixedType.for_raw_range(min(vals + [0]), max(vals + [0]), 0)), "[n_chan]")
    ba, sa = ints("base", "tbase", base), ints("step", "tstep", step)
    cost = LayerShape("shiftadd", adders=k, adder_bits=k * thr.type.width, fixed_cycles=c * h * w)
    return ctx.layer(
        "multithreshold", cost,
        types=[("in_t", ctx.x.cpp()), ("thr_t", thr.type.cpp()), ("out_t", ctx.y.cpp()), ("thr_raw_t", ta.ctype),
               ("base_raw_t", ba.ctype), ("step_raw_t", sa.ctype)],
        sizes=[("n_chan", c), ("n_pixels", h * w), ("n_thr", k), ("n_thr_chan", int(thr.raw.shape[0]))],
        arrays=[ta, ba, sa], n_params=ta.depth, params_bits=ta.depth * ta.width)


OP = OpDef("multithreshold", __doc__, attrs={"out_type": "FixedType", "base": "ints", "step": "ints"},
           params={"thresholds": "(C, K)"}, n_inputs=1, shape=shape, type=type_rule, run=run,
           **({"hls": hls} if "hls" in OpDef.__dataclass_fields__ else {}), reads_codes=True,
           tokens=tokens.per_element)  # (the typed plan may land later)
