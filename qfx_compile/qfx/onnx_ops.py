"""Bodies of the ``qfx`` ONNX ops as model-local functions (torch-free).

Every body uses only standard ops that onnxruntime runs in double and is
exact in double (see docs/semantics.md, "ONNX format"):

* ``qfx.FixedPoint(X, int_bits)``: the ap_fixed cast, one overload per
  ``(signed, width, rounding, overflow)``, named ``"{s|u}{W}_{rounding}_{overflow}"``.
* ``qfx.Conv(X, W[, B])``: im2col by ``Gather`` with a constant index table into
  the flattened input with a zero appended (padding), then ``MatMul`` (+ bias).
  The table depends on the input shape, so each conv node has its own overload.
* ``qfx.AveragePool(X)`` / ``qfx.GlobalAveragePool(X)``: exact window sum
  (``ReduceSum``) times ``r = cast(1/N, ap_ufixed<R, 1-p, AP_RND_CONV, AP_SAT>)``.

Exactness of the FixedPoint body (mirrors :func:`qfx_compile.qfx.quantize`):
``Pow(2, k)`` for integer ``k`` is exact (a power of two is representable and
``pow`` is correctly rounded for exact results; the tests check every exponent
used); ``Mod(fmod=1)`` is exact; scaling by a power of two is exact away from
underflow, and any nonzero ``|y| < 1/2`` is replaced by ``sign(x)/4`` which rounds
the same way; rounding compares ``y`` with ``floor(y) + 1/2`` (exact whenever
``y`` is not an integer); overflow works on integer-valued doubles ``<= 2**54``
with ``Min``/``Max``/``Where``/``Mod`` and only exact sums.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..fixed.window import out_size
from ..fixed.types import OVERFLOW_MODES, ROUNDING_MODES, FixedType, raw_range, reciprocal_raw, sat_sym_raw_min

DOMAIN = "qfx"
DOMAIN_VERSION = 1
OPSET = 17
#: Widest FixedPoint the double body computes exactly.
MAX_ONNX_WIDTH = 53

FIXED_POINT_ATTRS = ("width", "signed", "rounding", "overflow", "k_hot", "digits")
CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group")
POOL_ATTRS = ("kernel_shape", "strides", "pads", "recip_bits")


def fixed_point_overload(width: int, signed: bool, rounding: str, overflow: str) -> str:
    return f"{'s' if signed else 'u'}{int(width)}_{rounding}_{overflow}"


def parse_fixed_point_overload(name: str) -> tuple[int, bool, str, str]:
    """Inverse of :func:`fixed_point_overload`: ``(width, signed, rounding, overflow)``."""
    if not name or name[0] not in "su":
        raise ValueError(f"malformed FixedPoint overload {name!r}")
    for o in OVERFLOW_MODES:
        if name.endswith("_" + o):
            head = name[: -len(o) - 1]
            for r in ROUNDING_MODES:
                if head.endswith("_" + r):
                    w = head[1: -len(r) - 1]
                    if w.isdigit():
                        return int(w), name[0] == "s", r, o
    raise ValueError(f"malformed FixedPoint overload {name!r}")


class _Body:
    """Small builder for function bodies: fresh local names, constants, nodes."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self._n = 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, out: str | None = None,
           **attrs) -> str:
        out = out or self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value, hint: str = "c", dtype=np.float64) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.fresh(hint)
        self.nodes.append(helper.make_node("Constant", [], [name],
                                           value=numpy_helper.from_array(arr, name=name)))
        return name


def _function(name: str, overload: str, inputs: Sequence[str], outputs: Sequence[str], body: _Body,
              attributes: Sequence[str] = ()) -> onnx.FunctionProto:
    f = helper.make_function(DOMAIN, name, list(inputs), list(outputs), body.nodes,
                             [helper.make_opsetid("", OPSET)], attributes=list(attributes))
    f.overload = overload
    return f


# ------------------------------------------------------------------ FixedPoint
def fixed_point_function(width: int, signed: bool, rounding: str, overflow: str) -> onnx.FunctionProto:
    """``qfx.FixedPoint(X, int_bits) -> Y``: the exact ap_fixed cast in double.

    ``X`` is double; ``int_bits`` is int64, a scalar or shaped to broadcast with X
    (per channel). ``width``/``signed``/modes are fixed by the overload.
    """
    width = int(width)
    signed = bool(signed)
    if not 1 <= width <= MAX_ONNX_WIDTH:
        raise ValueError(f"FixedPoint in ONNX handles widths 1..{MAX_ONNX_WIDTH} (exact in double), got {width}")
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}")
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"unsupported overflow mode {overflow!r}")
    raw_min, raw_max = raw_range(width, signed)

    b = _Body()
    two = b.const(2.0, "two")
    zero = b.const(0.0, "zero")
    ib = b.op("Cast", ["int_bits"], "ib", to=TensorProto.DOUBLE)
    frac = b.op("Sub", [b.const(float(width), "width"), ib], "frac")  # F = W - I (integer, exact)
    scale = b.op("Pow", [two, frac], "scale")  # 2**F
    inv = b.op("Pow", [two, b.op("Neg", [frac], "negfrac")], "inv")  # 2**-F
    x = "X"
    if overflow == "AP_WRAP":
        span = b.op("Pow", [two, ib], "span")  # 2**I
        x = b.op("Mod", [x, span], "xmod", fmod=1)  # exact, keeps the sign, |x| < 2**I
    else:
        span2 = b.op("Pow", [two, b.op("Add", [ib, b.const(1.0, "one")], "ib1")], "span2")  # 2**(I+1)
        x = b.op("Max", [b.op("Min", [x, span2], "xmin"), b.op("Neg", [span2], "nspan2")], "xclamp")
    y = b.op("Mul", [x, scale], "y")
    # Underflow guard: every nonzero |y| < 1/2 rounds like sign(x)/4.
    small = b.op("And", [b.op("Less", [b.op("Abs", [y], "absy"), b.const(0.25, "quarter")], "ysmall"),
                         b.op("Not", [b.op("Equal", [x, zero], "xzero")], "xnz")], "small")
    y = b.op("Where", [small, b.op("Mul", [b.op("Sign", [x], "sx"), b.const(0.25, "q4")], "tiny"), y], "yg")

    if rounding == "AP_TRN":
        q = b.op("Floor", [y], "q")
    elif rounding == "AP_TRN_ZERO":
        q = b.op("Where", [b.op("Less", [y, zero], "neg"), b.op("Ceil", [y], "cy"), b.op("Floor", [y], "fy")], "q")
    elif rounding == "AP_RND_CONV":
        q = b.op("Round", [y], "q")  # half to even
    else:
        f = b.op("Floor", [y], "f")
        h = b.op("Add", [f, b.const(0.5, "half")], "h")  # exact whenever y is not an integer
        isfrac = b.op("Not", [b.op("Equal", [y, f], "isint")], "isfrac")
        gt = b.op("Greater", [y, h], "gt")
        eq = b.op("Equal", [y, h], "eq")
        if rounding == "AP_RND":
            up = b.op("Or", [gt, eq], "up")
        elif rounding == "AP_RND_MIN_INF":
            up = gt
        elif rounding == "AP_RND_ZERO":
            up = b.op("Or", [gt, b.op("And", [eq, b.op("Less", [y, zero], "yneg")], "eqneg")], "up")
        else:  # AP_RND_INF
            up = b.op("Or", [gt, b.op("And", [eq, b.op("Greater", [y, zero], "ypos")], "eqpos")], "up")
        up = b.op("Cast", [b.op("And", [up, isfrac], "upf")], "upd", to=TensorProto.DOUBLE)
        q = b.op("Add", [f, up], "q")

    lo, hi = b.const(float(raw_min), "rawmin"), b.const(float(raw_max), "rawmax")
    if overflow == "AP_WRAP":
        # |q| <= 2**W; fmod by 2**W is exact, then one exact correction into [raw_min, raw_max].
        modw = b.const(float(2 ** width), "twow")
        r = b.op("Mod", [q, modw], "r", fmod=1)
        if signed:
            r = b.op("Where", [b.op("Greater", [r, hi], "above"), b.op("Sub", [r, modw], "rdown"), r], "rhi")
            r = b.op("Where", [b.op("Less", [r, lo], "below"), b.op("Add", [r, modw], "rup"), r], "rlo")
        else:
            r = b.op("Where", [b.op("Less", [r, zero], "below"), b.op("Add", [r, modw], "rup"), r], "rlo")
        q = r
    elif overflow == "AP_SAT":
        q = b.op("Max", [b.op("Min", [q, hi], "qmin"), lo], "qsat")
    elif overflow == "AP_SAT_SYM":
        lo2 = b.const(float(sat_sym_raw_min(width, signed)), "symmin")
        q = b.op("Max", [b.op("Min", [q, hi], "qmin"), lo2], "qsat")
    else:  # AP_SAT_ZERO
        out = b.op("Or", [b.op("Less", [q, lo], "under"), b.op("Greater", [q, hi], "over")], "ovf")
        q = b.op("Where", [out, zero, q], "qsat")
    b.op("Mul", [q, inv], out="Y")
    return _function("FixedPoint", fixed_point_overload(width, signed, rounding, overflow),
                     ["X", "int_bits"], ["Y"], b, FIXED_POINT_ATTRS)


# ------------------------------------------------------------------ Conv
def _out_size(n: int, k: int, s: int, p0: int, p1: int, d: int) -> int:
    return out_size(n, k, s, (p0, p1), d)  # the one rule: fixed.window


def im2col_index(in_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
                 pads: Sequence[int], dilations: Sequence[int] = (1, 1)) -> tuple[np.ndarray, int, int]:
    """Index table ``[OH*OW, C*KH*KW]`` into ``X.reshape(C*H*W)`` with index ``C*H*W`` meaning 0.

    Columns are in PyTorch weight order ``(c, ky, kx)``. Returns ``(idx, OH, OW)``.
    """
    c, h, w = (int(v) for v in in_shape)
    kh, kw = (int(v) for v in kernel_shape)
    sh, sw = (int(v) for v in strides)
    pt, pl, pb, pr = (int(v) for v in pads)
    dh, dw = (int(v) for v in dilations)
    oh, ow = _out_size(h, kh, sh, pt, pb, dh), _out_size(w, kw, sw, pl, pr, dw)
    oy = np.arange(oh)[:, None, None, None, None] * sh - pt
    ox = np.arange(ow)[None, :, None, None, None] * sw - pl
    cc = np.arange(c)[None, None, :, None, None]
    ky = np.arange(kh)[None, None, None, :, None] * dh
    kx = np.arange(kw)[None, None, None, None, :] * dw
    yy, xx = oy + ky, ox + kx
    valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    flat = (cc * h + yy) * w + xx
    idx = np.where(valid, flat, c * h * w)
    idx = np.broadcast_to(idx, (oh, ow, c, kh, kw)).reshape(oh * ow, c * kh * kw).astype(np.int64)
    return idx, oh, ow


def _flatten_with_zero(b: _Body, x: str, flat: int, per_channel: int | None = None) -> str:
    """``X -> [N, flat + 1]`` (or ``[N, C, per_channel + 1]``) with a trailing zero column."""
    shape_x = b.op("Shape", [x], "shapex")
    n = b.op("Slice", [shape_x, b.const([0], "s0", np.int64), b.const([1], "s1", np.int64)], "n")
    if per_channel is None:
        xf = b.op("Reshape", [x, b.const([0, flat], "fshape", np.int64)], "xf")
        zshape = b.op("Concat", [n, b.const([1], "one1", np.int64)], "zshape", axis=0)
        axis = 1
    else:
        c = flat // per_channel
        xf = b.op("Reshape", [x, b.const([0, c, per_channel], "fshape", np.int64)], "xf")
        zshape = b.op("Concat", [n, b.const([c, 1], "c1", np.int64)], "zshape", axis=0)
        axis = 2
    z = b.op("ConstantOfShape", [zshape], "zeros",
             value=numpy_helper.from_array(np.zeros(1, np.float64), name="zero"))
    return b.op("Concat", [xf, z], "xpad", axis=axis)


def conv_function(overload: str, in_shape: Sequence[int], out_channels: int, kernel_shape: Sequence[int],
                  strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int] = (1, 1),
                  group: int = 1, has_bias: bool = True, one_d: bool = False) -> onnx.FunctionProto:
    """``qfx.Conv(X, W[, B]) -> Y`` for inputs ``[N, C, H, W]`` of the given ``(C, H, W)``.

    Exact in double when every product and partial sum fits 53 bits (the
    exporter checks the accumulator bound). ``group`` G: W is ``[OC, C/G, KH, KW]``
    and each group's columns meet its filters in one batched MatMul. ``one_d``: X is ``[N, C, L]``
    (``in_shape`` (C, 1, L), the kernel (1, K)) and Y ``[N, OC, L']``.
    """
    c, h, w = (int(v) for v in in_shape)
    g, oc = int(group), int(out_channels)
    if g < 1 or c % g or oc % g:
        raise ValueError(f"qfx.Conv: group={group} must divide the {c} input and {oc} output channels")
    idx, oh, ow = im2col_index(in_shape, kernel_shape, strides, pads, dilations)
    ckk = c // g * int(kernel_shape[0]) * int(kernel_shape[1])  # columns per group
    b = _Body()
    xp = _flatten_with_zero(b, "X", c * h * w)
    cols = b.op("Gather", [xp, b.const(idx, "im2col", np.int64)], "cols", axis=1)  # [N, OH*OW, C*KK]
    cols = b.op("Reshape", [cols, b.const([0, oh * ow, g, ckk], "gshape", np.int64)], "colsg")
    cols = b.op("Transpose", [cols], "colst", perm=[0, 2, 1, 3])  # [N, G, OH*OW, CKK]
    wm = b.op("Reshape", ["W", b.const([g, oc // g, ckk], "wshape", np.int64)], "wm")
    wt = b.op("Transpose", [wm], "wt", perm=[0, 2, 1])  # [G, CKK, OC/G]
    y = b.op("MatMul", [cols, wt], "acc")  # [N, G, OH*OW, OC/G]
    y = b.op("Transpose", [y], "yt", perm=[0, 1, 3, 2])  # [N, G, OC/G, OH*OW]
    y = b.op("Reshape", [y, b.const([0, oc, oh * ow], "oshape", np.int64)], "yo")  # [N, OC, OH*OW]
    if has_bias:
        y = b.op("Add", [y, b.op("Unsqueeze", ["B", b.const([1], "bax", np.int64)], "bcol")], "accb")
    b.op("Reshape", [y, b.const([0, oc, ow] if one_d else [0, oc, oh, ow], "yshape", np.int64)], out="Y")
    inputs = ["X", "W", "B"] if has_bias else ["X", "W"]
    return _function("Conv", overload, inputs, ["Y"], b, CONV_ATTRS)


# ------------------------------------------------------------------ pooling
def avgpool_reciprocal(n: int, recip_bits: int) -> tuple[int, FixedType]:
    """``r = cast(1/N, ap_ufixed<R, 1-p, AP_RND_CONV, AP_SAT>)``: ``(mantissa, type)`` (rule in types.py)."""
    return reciprocal_raw(n, recip_bits)


def avgpool_reciprocal_value(n: int, recip_bits: int) -> float:
    m, t = avgpool_reciprocal(n, recip_bits)
    if t.width > MAX_ONNX_WIDTH:
        raise ValueError(f"recip_bits={recip_bits} exceeds the {MAX_ONNX_WIDTH} bits exact in double")
    return float(Fraction(m) * Fraction(2) ** -t.frac_bits)


def avgpool_function(overload: str, in_shape: Sequence[int], kernel_shape: Sequence[int],
                     strides: Sequence[int], recip_bits: int, pads: Sequence[int] = (0, 0, 0, 0),
                     one_d: bool = False) -> onnx.FunctionProto:
    """``qfx.AveragePool(X) -> Y``: exact window sum times ``r``; padding cells are zeros and N = KH*KW
    (PyTorch's ``count_include_pad=True``); ``pads`` in ONNX order (top, left, bottom, right)."""
    c, h, w = (int(v) for v in in_shape)
    idx, oh, ow = im2col_index((1, h, w), kernel_shape, strides, pads)
    n = int(kernel_shape[0]) * int(kernel_shape[1])
    b = _Body()
    if any(int(p) for p in pads):  # index h*w of each channel is the appended zero
        xf = _flatten_with_zero(b, "X", c * h * w, per_channel=h * w)
    else:
        xf = b.op("Reshape", ["X", b.const([0, c, h * w], "fshape", np.int64)], "xf")
    win = b.op("Gather", [xf, b.const(idx, "windows", np.int64)], "win", axis=2)  # [N, C, OH*OW, K]
    s = b.op("ReduceSum", [win, b.const([3], "ax", np.int64)], "sum", keepdims=0)
    y = b.op("Mul", [s, b.const(avgpool_reciprocal_value(n, recip_bits), "recip")], "avg")
    b.op("Reshape", [y, b.const([0, c, ow] if one_d else [0, c, oh, ow], "yshape", np.int64)], out="Y")
    return _function("AveragePool", overload, ["X"], ["Y"], b, POOL_ATTRS)


def global_avgpool_function(overload: str, in_shape: Sequence[int], recip_bits: int,
                            one_d: bool = False) -> onnx.FunctionProto:
    """``qfx.GlobalAveragePool(X) -> Y`` (``[N, C, 1, 1]``, or ``[N, C, 1]`` for ``one_d`` X ``[N, C, L]``
    with ``in_shape`` (C, 1, L)): exact sum over H, W times ``r``."""
    c, h, w = (int(v) for v in in_shape)
    b = _Body()
    s = b.op("ReduceSum", ["X", b.const([2] if one_d else [2, 3], "ax", np.int64)], "sum", keepdims=1)
    b.op("Mul", [s, b.const(avgpool_reciprocal_value(h * w, recip_bits), "recip")], out="Y")
    return _function("GlobalAveragePool", overload, ["X"], ["Y"], b, ("recip_bits",))


# ------------------------------------------------------------------ upsampling
def upsample_function(overload: str, in_shape: Sequence[int], scales: Sequence[int]) -> onnx.FunctionProto:
    """``qfx.Upsample(X) -> Y``: nearest-neighbour by integer ``scales`` (sh, sw), ``Y[.., i, j] =
    X[.., i // sh, j // sw]``: two ``Gather``s with constant index tables (no arithmetic)."""
    c, h, w = (int(v) for v in in_shape)
    sh, sw = (int(v) for v in scales)
    b = _Body()
    rows = b.op("Gather", ["X", b.const(np.arange(h * sh) // sh, "rows", np.int64)], "up_rows", axis=2)
    b.op("Gather", [rows, b.const(np.arange(w * sw) // sw, "cols", np.int64)], out="Y", axis=3)
    return _function("Upsample", overload, ["X"], ["Y"], b, ("scales",))


# ------------------------------------------------------------------ tables (sigmoid, tanh, ..., softmax)
TABLE_ATTRS = ("function",)
SOFTMAX_ATTRS = ("axis",)


def _codes(b: _Body, x: str, frac_bits: int, offset: int) -> str:
    """``int64(x * 2**F) - offset``: the mantissa of an on-grid double (exact) minus ``offset``."""
    m = b.op("Cast", [b.op("Mul", [x, b.const(2.0 ** frac_bits, "scale")], "xs")], "m", to=TensorProto.INT64)
    return b.op("Sub", [m, b.const(int(offset), "offset", np.int64)], "idx")


def table_function(overload: str, in_frac_bits: int, in_raw_min: int) -> onnx.FunctionProto:
    """``qfx.Table(X, T) -> Y``: ``Y = T[m - raw_min]``, ``m`` the mantissa of X (``Gather``; exact).

    ``T`` (double, ``2**W`` entries) holds the output values; the node's ``function`` attribute
    names the function it was built from. One overload per input binary point and range.
    """
    b = _Body()
    idx = _codes(b, "X", int(in_frac_bits), int(in_raw_min))
    b.op("Gather", ["T", idx], out="Y", axis=0)
    return _function("Table", overload, ["X", "T"], ["Y"], b, TABLE_ATTRS)


def softmax_function(overload: str, in_frac_bits: int, span: int, exp_frac_bits: int, div_shift: int,
                     exp_width: int) -> onnx.FunctionProto:
    """``qfx.Softmax(X, E) -> Y`` over the last axis of ``[N, K]``, on int64 (exact):

    ``d = m - max m``, ``e = int64(E * 2**Fe)[d + span]``, ``S = sum e``, ``q = e * 2**k div S``,
    ``r = e * 2**k mod S``; ``Y = (2q + (r != 0)) * 2**-(k+1)``, a value that every cast with
    ``F <= k - 1`` fractional bits rounds exactly like ``e / S`` (the node is followed by the
    ``FixedPoint`` of the output type; docs/semantics.md). Integer ``Div`` of non-negative int64
    is the floor.
    """
    if exp_width + div_shift + 1 > MAX_ONNX_WIDTH:
        raise ValueError(f"softmax: e * 2**{div_shift} has {exp_width + div_shift + 1} bits, more than the "
                         f"{MAX_ONNX_WIDTH} exact in double")
    b = _Body()
    m = b.op("Cast", [b.op("Mul", ["X", b.const(2.0 ** int(in_frac_bits), "scale")], "xs")], "m",
             to=TensorProto.INT64)
    mx = b.op("ReduceMax", [m], "mx", axes=[-1], keepdims=1)
    idx = b.op("Add", [b.op("Sub", [m, mx], "d"), b.const(int(span), "span", np.int64)], "idx")
    et = b.op("Cast", [b.op("Mul", ["E", b.const(2.0 ** int(exp_frac_bits), "escale")], "es")], "etab",
              to=TensorProto.INT64)
    e = b.op("Gather", [et, idx], "e", axis=0)
    s = b.op("ReduceSum", [e, b.const([-1], "ax", np.int64)], "s", keepdims=1)
    num = b.op("Mul", [e, b.const(1 << int(div_shift), "pow2k", np.int64)], "num")
    q = b.op("Div", [num, s], "q")
    r = b.op("Sub", [num, b.op("Mul", [q, s], "qs")], "r")
    sticky = b.op("Cast", [b.op("Greater", [r, b.const(0, "zero", np.int64)], "rnz")], "sticky",
                  to=TensorProto.INT64)
    mq = b.op("Add", [b.op("Mul", [q, b.const(2, "two", np.int64)], "q2"), sticky], "mq")
    b.op("Mul", [b.op("Cast", [mq], "mqd", to=TensorProto.DOUBLE), b.const(2.0 ** -(int(div_shift) + 1), "unit")],
         out="Y")
    return _function("Softmax", overload, ["X", "E"], ["Y"], b, SOFTMAX_ATTRS)
