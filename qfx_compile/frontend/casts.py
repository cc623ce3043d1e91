"""ONNX importers of the casts: ``qfx.FixedPoint``, QONNX ``Quant``/``IntQuant``, ``BipolarQuant``, ``Trunc``.

A cast whose grid is an ``ap_fixed`` type (power-of-two scale, zero point 0, a
rounding and overflow mode ap_fixed has) becomes a ``quant`` node or is merged into
the node it casts (the qfx path). Every other QONNX quantizer (a float scale, a
zero point, CEIL/UP rounding, an unsigned narrow range, 1-bit bipolar, Trunc) is
read exactly as a :class:`~qfx_compile.ir.exact_real.Quantizer` (``frontend/real.py``):
on a constant its exact values; on an activation a step function of the integer
tensor it reads (``multithreshold``, or a multiply-shift ``batchnorm``); on the
float graph input the input boundary.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..fixed.digits import DIGIT_FLAVOURS
from ..fixed.types import MAX_WIDTH
from ..ir.exact_real import Q2, ROUNDING, Quantizer
from ..ir.ops.onnx_table import INT, INTS, QONNX, STRING, onnx_import
from .errors import ModelError
from .quantizers import describe_fixedpoint, describe_qonnx
from .values import Act, CFixed, CFloat, Real


@onnx_import("FixedPoint", domain="qfx", max_inputs=2, label="qfx.FixedPoint")
def import_fixedpoint(r, out):
    if len(r.cur.input) != 2:
        raise r.err("FixedPoint needs inputs (X, int_bits)")
    ib = r.const(r.cur.input[1], "int_bits")
    try:
        desc = describe_fixedpoint(r.attr("width", INT, required=True), r.attr("signed", INT, required=True),
                                   r.attr("rounding", STRING, required=True), r.attr("overflow", STRING, required=True),
                                   ib)
    except ModelError:
        raise
    except ValueError as e:
        raise r.err(str(e)) from None
    k_hot = r.attr("k_hot", INTS)
    digits = r.attr("digits", STRING)
    if digits is not None and digits not in DIGIT_FLAVOURS:
        raise r.err(f"digits must be one of {', '.join(DIGIT_FLAVOURS)}, got {digits!r}")
    x = r.inp(0)
    if isinstance(x, Real):
        raise r.err(f"a qfx.FixedPoint cannot cast the real-valued result of {x.onnx_name!r}; use a QONNX Quant")
    r.cast(out, desc, None if k_hot is None else np.asarray(k_hot, dtype=np.int64), digits)


def _scalar_int(r, i, what) -> int:
    a = r.const(r.cur.input[i], what)
    if a.size != 1 or not float(a.reshape(-1)[0]).is_integer():
        raise r.err(f"{what} must be one integer, got {a.size} value(s)")
    return int(a.reshape(-1)[0])


def _per_channel(r, i, what, allow_zero=False) -> np.ndarray:
    a = r.const(r.cur.input[i], what)
    if a.size == 0:
        raise r.err(f"{what} is empty")
    if not allow_zero and np.any(a == 0):
        raise r.err(f"{what} is 0 somewhere: a quantizer divides by its scale; use a nonzero scale")
    return a


def _channels(r, a: np.ndarray, x, what) -> list:
    """A scale/zero point as exact per-channel Fractions (one, or one per index of the channel axis)."""
    fl = np.asarray(a, dtype=np.float64)
    if fl.size == 1:
        return [Fraction(float(fl.reshape(-1)[0]))]
    shape = getattr(x, "shape", None)
    if isinstance(x, (CFloat, CFixed)):
        shape = np.shape(x.arr if isinstance(x, CFloat) else x.raw)
        full = np.broadcast_to(fl, np.broadcast_shapes(fl.shape, shape)) if fl.ndim <= len(shape) else None
        if full is None:
            raise r.err(f"{what} of shape {tuple(fl.shape)} does not broadcast to the tensor's {tuple(shape)}")
        return full  # the caller takes elementwise values
    c = shape[0]
    ok = {(c,), (1, c)} if len(shape) == 1 else {(c, 1, 1), (1, c, 1, 1)}
    if tuple(fl.shape) not in ok:
        raise r.err(f"{what} of shape {tuple(fl.shape)} does not act per channel on an activation of shape "
                    f"{tuple(shape)} (expected one of {sorted(ok)})")
    return [Fraction(float(v)) for v in fl.reshape(-1)]


def _split(a):
    """Veltkamp split of float64 values: a = hi + lo with 26-bit halves (exact)."""
    c = a * 134217729.0  # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _product_exact(a, b) -> np.ndarray:
    """Where ``a * b`` is exact in float64 (Dekker's error term of the product is 0)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    err = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return (err == 0) & np.isfinite(p)


def _fast_values(q: Quantizer, w, s, z, os_, oo):
    """Float64 codes and values of a quantizer on float64 constants, and where they are not proven exact.

    ``t = w/s + z`` in float64 is within 2**-51 (|w/s| + |z|) of the exact value; away from the rounding
    boundaries that matter (half-integers for the HALF/ROUND modes, integers otherwise, 0 for bipolar) by
    more than a generous 2**-30 (|t| + 1), its rounding is the exact one. The value ``(code - oo) * os`` is
    checked exact by Dekker's product error. Elements not proven go to exact arithmetic.
    """
    with np.errstate(all="ignore"):
        t = w / s + z
        slack = 2.0 ** -30 * (np.abs(t) + np.abs(z) + 1)
        if q.bipolar:
            code = np.where(t >= 0, 1.0, -1.0)
            near = np.abs(t) <= slack
        else:
            tc = t
            if q.qmax is not None:
                tc = np.minimum(tc, q.qmax)
            if q.qmin is not None:
                tc = np.maximum(tc, q.qmin)
            from ..ir.exact_real import _round_float
            code = _round_float(tc, q.rounding)
            f = t - np.floor(t)
            d = np.abs(f - 0.5) if q.rounding in ("ROUND", "HALF_EVEN", "HALF_UP", "HALF_DOWN") else \
                np.minimum(f, 1 - f)
            near = d <= slack
        a = code - oo
        val = a * os_
        near |= ~np.isfinite(t) | ~_product_exact(a, os_) | (a + oo != code)
    return val, near


def quantize_constant(r, out, x, q: Quantizer, arrays: dict):
    """The exact values of a quantized constant (float64 holds them exactly, or an error)."""
    arr = np.asarray(x.arr, dtype=np.float64) if isinstance(x, CFloat) else None
    if arr is not None and not q.pre_round and q.div == 1 and arr.size:
        b = lambda k, default: np.broadcast_to(np.asarray(arrays[k], dtype=np.float64), arr.shape) \
            if k in arrays else np.broadcast_to(np.float64(float(default[0])), arr.shape)  # noqa: E731
        s, z = b("scale", q.scale), b("zeropt", q.zeropt)
        os_ = b("out_scale", q.out_scale) if q.out_scale is not None or "out_scale" in arrays else s
        oo = b("out_offset", q.out_offset) if q.out_offset is not None else z
        val, near = _fast_values(q, arr, s, z, os_, oo)
        if not near.any():
            r.vals[out] = CFloat(val)
            return
        if near.mean() < 0.05:  # the few elements near a boundary: exact arithmetic, one by one
            val = val.copy()
            for idx in zip(*np.nonzero(near)):
                qq = Quantizer(**{**q.__dict__})
                qq.scale, qq.zeropt = [Fraction(float(s[idx]))], [Fraction(float(z[idx]))]
                qq.out_scale, qq.out_offset = [Fraction(float(os_[idx]))], [Fraction(float(oo[idx]))]
                v = qq.value_affine(1)
                e = v[0][0] * qq.code(Q2(Fraction(float(arr[idx]))), 0) + v[1][0]
                if Fraction(float(e.p)) != e.p:
                    raise r.err("the quantized constant's exact values do not fit float64 (scale and bit width "
                                "too fine); use fewer bits")
                val[idx] = float(e.p)
            r.vals[out] = CFloat(val)
            return
    if arr is None:
        f = np.broadcast_to(x.frac, x.raw.shape)
        vals = np.array([Fraction(int(m), 2 ** int(fb)) if fb >= 0 else Fraction(int(m) * 2 ** int(-fb))
                         for m, fb in zip(np.asarray(x.raw).ravel(), f.ravel())], dtype=object).reshape(x.raw.shape)
    else:
        vals = np.array([Fraction(float(v)) for v in arr.ravel()], dtype=object).reshape(arr.shape)
    shape = vals.shape
    full = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), shape) if np.size(v) > 1 else None
            for k, v in arrays.items()}
    res = np.empty(shape, dtype=object)
    cache = {}
    for idx in np.ndindex(*shape) if shape else [()]:
        qq = q
        if any(v is not None for v in full.values()):
            key = tuple(float(full[k][idx]) if full[k] is not None else None for k in sorted(full))
            qq = cache.get(key)
            if qq is None:
                qq = Quantizer(**{**q.__dict__})
                for k in full:
                    if full[k] is not None:
                        setattr(qq, k, [Fraction(float(full[k][idx]))])
                cache[key] = qq
        code = qq.code(Q2(vals[idx]), 0)
        A, B = qq.value_affine(1)
        v = A[0] * code + B[0]
        res[idx] = v.p
    flt = np.array([float(v) for v in res.ravel()], dtype=np.float64).reshape(shape)
    if any(Fraction(float(a)) != b for a, b in zip(flt.ravel(), res.ravel())):
        raise r.err("the quantized constant's exact values do not fit float64 (scale and bit width too fine); "
                    "use fewer bits")
    r.vals[out] = CFloat(flt)


def apply_quantizer(r, out, q: Quantizer, arrays: dict, out_width: int, out_signed: bool):
    """A quantizer on whatever its input is: a constant, an activation, an exact result, the float input."""
    from .real import as_real, real_quant
    x = r.inp(0)
    if isinstance(x, (CFloat, CFixed)):
        return quantize_constant(r, out, x, q, arrays)
    for k, v in arrays.items():
        if np.size(v) > 1:
            setattr(q, k, _channels(r, v, x, k))
    rv = x if isinstance(x, Real) else as_real(r, x)
    return real_quant(r, out, rv, q, out_width, out_signed)


@onnx_import("Quant", "IntQuant", domain=QONNX, max_inputs=4, label="Quant (QONNX)")
def import_quant(r, out):
    if len(r.cur.input) != 4:
        raise r.err("Quant needs inputs (X, scale, zeropt, bitwidth)")
    signed, narrow = r.attr("signed", INT, 1), r.attr("narrow", INT, 0)
    mode = r.attr("rounding_mode", STRING, "ROUND")
    if mode.upper() not in ROUNDING:
        raise r.err(f"rounding_mode {mode[:20]!r} is not a QONNX rounding mode ({', '.join(ROUNDING)})")
    mode = mode.upper()
    if signed not in (0, 1) or narrow not in (0, 1):
        raise r.err("signed and narrow must be 0 or 1")
    scale = _per_channel(r, 1, "scale")
    zeropt = r.const(r.cur.input[2], "zeropt")
    w = _scalar_int(r, 3, "bitwidth")
    if not 1 <= w <= MAX_WIDTH:
        raise r.err(f"bitwidth {w} outside the supported 1..{MAX_WIDTH}; use a bit width in that range")
    x = r.inp(0)
    if not isinstance(x, Real) and not (isinstance(x, Act) and x.type is None and mode in ("CEIL", "UP")):
        try:
            desc = describe_qonnx(scale, zeropt, np.asarray(w), signed, narrow, mode)
        except ValueError:
            desc = None
        if desc is not None:
            return r.cast(out, desc)
    bipolar = bool(signed) and w == 1
    qmin = 0 if not signed else (-(1 << (w - 1)) + (1 if narrow else 0))
    qmax = ((1 << w) - 1 - (1 if narrow else 0)) if not signed else (1 << (w - 1)) - 1
    q = Quantizer([Fraction(float(np.asarray(scale).reshape(-1)[0]))],
                  [Fraction(float(np.asarray(zeropt).reshape(-1)[0]))], qmin, qmax, mode, bipolar=bipolar)
    apply_quantizer(r, out, q, {"scale": scale, "zeropt": zeropt}, 2 if bipolar else w, bool(signed))


@onnx_import("BipolarQuant", domain=QONNX, max_inputs=2, label="BipolarQuant (QONNX)")
def import_bipolar(r, out):
    if len(r.cur.input) != 2:
        raise r.err("BipolarQuant needs inputs (X, scale)")
    scale = _per_channel(r, 1, "scale")
    q = Quantizer([Fraction(1)], [Fraction(0)], None, None, bipolar=True,
                  out_scale=[Fraction(float(np.asarray(scale).reshape(-1)[0]))], out_offset=[Fraction(0)])
    apply_quantizer(r, out, q, {"out_scale": scale}, 2, True)


@onnx_import("Trunc", domain=QONNX, max_inputs=6, label="Trunc (QONNX)")
def import_trunc(r, out):
    n = len(r.cur.input)
    if n not in (5, 6):
        raise r.err("Trunc needs inputs (X, scale, zeropt, input_bit_width, output_bit_width) or, version 2, "
                    "(X, scale, zeropt, input_bit_width, output_scale, output_bit_width)")
    mode = r.attr("rounding_mode", STRING, "FLOOR").upper()
    if mode not in ROUNDING:
        raise r.err(f"rounding_mode {mode[:20]!r} is not a QONNX rounding mode ({', '.join(ROUNDING)})")
    scale = _per_channel(r, 1, "scale")
    zeropt = r.const(r.cur.input[2], "zeropt")
    ib = _scalar_int(r, 3, "input_bit_width")
    if np.size(scale) != 1 or np.size(zeropt) != 1:
        raise r.err("a per-channel Trunc is not supported; use one scale and zero point")
    s, z = Fraction(float(scale.reshape(-1)[0])), Fraction(float(np.asarray(zeropt).reshape(-1)[0]))
    if n == 5:  # version 1: y = (round_mode(round(x/s + z) / 2**(ib - ob)) - z) * s
        ob = _scalar_int(r, 4, "output_bit_width")
        if not 0 <= ib - ob <= MAX_WIDTH:
            raise r.err(f"output_bit_width {ob} must be at most input_bit_width {ib}")
        q = Quantizer([s], [z], None, None, mode, pre_round=True, div=Fraction(2) ** (ib - ob))
        width, signed = ob + 1, True
    else:  # version 2: clamp to the output bit width, output scale
        os_ = _per_channel(r, 4, "output_scale")
        ob = _scalar_int(r, 5, "output_bit_width")
        signed, narrow = r.attr("signed", INT, 1), r.attr("narrow", INT, 0)
        if np.size(os_) != 1:
            raise r.err("a per-channel Trunc output_scale is not supported")
        ratio = float(np.asarray(os_, dtype=np.float32).reshape(-1)[0] / np.asarray(scale, np.float32).reshape(-1)[0])
        k = int(np.round(np.log2(ratio)))  # as the reference: the truncation is a power of two
        ts = Fraction(2) ** k
        qmin = 0 if not signed else (-(1 << (ob - 1)) + (1 if narrow else 0))
        qmax = ((1 << ob) - 1 - (1 if narrow else 0)) if not signed else (1 << (ob - 1)) - 1
        q = Quantizer([s], [z], qmin, qmax, mode, pre_round=True, div=ts,
                      out_scale=[Fraction(float(os_.reshape(-1)[0]))], out_offset=[z / ts])
        width, signed = ob, bool(signed)
    x = r.inp(0)
    if isinstance(x, (CFloat, CFixed)):
        return quantize_constant(r, out, x, q, {})
    from .real import as_real, real_quant
    real_quant(r, out, x if isinstance(x, Real) else as_real(r, x), q, width, signed)

