"""The exact fixed-point cast on integers: ``ap_fixed`` assignment as mantissa arithmetic (torch-free).

``requantize_raw(m, src_frac, t)`` is what ``t v = x;`` does in C++ when ``x``
has mantissa ``m`` at ``src_frac`` fractional bits; ``float_to_raw(x, t)`` is
the same cast from float32/float64 values. Both are exact for any width
(int64 where it cannot overflow, Python ints beyond) and equal the Xilinx
headers bit for bit (tests/test_cast_headers.py).
"""
from __future__ import annotations

import numpy as np

from .types import FixedType, sat_sym_raw_min


def _floor_shift(m: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split m = q * 2**s + r with 0 <= r < 2**s: returns q, half-compare (-1/0/+1), r != 0."""
    q = m >> s
    r = m - (q << s)
    half = 1 << (s - 1)
    cmp = np.sign(r - half) if r.dtype != object else np.array([(v > half) - (v < half) for v in r.ravel()],
                                                                   dtype=np.int64).reshape(r.shape)
    return q, cmp, r != 0


def requantize_int64(m: np.ndarray, s: int, t: FixedType) -> np.ndarray:
    """:func:`requantize_raw` on int64 mantissas dropping ``s`` bits, for ``t.width <= 62``, ``s <= 62``
    and ``|m| << max(0, -s)`` below ``2**62`` (the caller proves it); ``m`` is not modified.

    Rounding is an added constant and a floor shift (``h = 2**(s-1)``): TRN +0, RND +h, RND_MIN_INF
    +h-1, TRN_ZERO +(2**s-1 if m<0), RND_ZERO +h-1+(m<0), RND_INF +h-(m<0), RND_CONV +h-1+(bit s
    of m): every sum stays below 2**63.
    """
    if s <= 0:
        q = m << -s
    else:
        h = 1 << (s - 1)
        r = t.rounding
        if r == "AP_TRN":
            q = m >> s
        elif r == "AP_RND":
            q = (m + h) >> s
        elif r == "AP_RND_MIN_INF":
            q = (m + (h - 1)) >> s
        elif r == "AP_TRN_ZERO":
            q = (m + np.where(m < 0, (1 << s) - 1, 0)) >> s
        elif r == "AP_RND_ZERO":
            q = (m + (h - 1) + (m < 0)) >> s
        elif r == "AP_RND_INF":
            q = (m + h - (m < 0)) >> s
        else:  # AP_RND_CONV: ties go up exactly when the kept LSB is odd
            q = (m + (h - 1) + ((m >> s) & 1)) >> s
    lo, hi, o = t.raw_min, t.raw_max, t.overflow
    if o == "AP_WRAP":
        return ((q - lo) & ((1 << t.width) - 1)) + lo
    if o == "AP_SAT_ZERO":
        return np.where((q < lo) | (q > hi), 0, q)
    if o == "AP_SAT_SYM":
        lo = sat_sym_raw_min(t.width, t.signed)
    return np.minimum(np.maximum(q, lo), hi)


def requantize_raw(m, src_frac: int, t: FixedType) -> np.ndarray:
    """Integer twin of :func:`quantize`: cast mantissas ``m`` (value ``m * 2**-src_frac``) to ``t``.

    ``m`` is an integer array (any numpy integer dtype) or an object array of
    Python ints (any width). The result holds ``t``'s mantissas: int64 when
    ``t.width <= 62``, otherwise an object array of Python ints. This is the
    rule the IR interpreter and the HLS kernels implement at every assignment;
    it equals the ap_fixed headers' ``ap_fixed<W,I> = ap_fixed<W2,I2>`` bit for
    bit (tests/test_cast_headers.py), including sources wider than 64 bits.

    Header limitation (not ours): when the whole source lies below the
    target's rounding bit (``src_frac - F > W2``) and the rounding mode is not
    AP_TRN, the headers' C simulation aborts with the assertion "Attempting to
    read bit beyond MSB" (ap_private::get_bit) unless compiled with NDEBUG;
    generated C++ should not contain such a cast. This function returns the
    mathematically defined result there (rounding of a value below half an LSB).
    """
    if not isinstance(t, FixedType):
        raise ValueError(f"requantize_raw expects a FixedType, got {type(t).__name__}")
    if isinstance(src_frac, bool) or not isinstance(src_frac, (int, np.integer)):
        raise ValueError(f"src_frac must be an integer, got {src_frac!r}")
    src_frac = int(src_frac)
    m = np.asarray(m)
    if m.dtype == object:
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in m.ravel()):
            raise ValueError("requantize_raw: an object array must hold Python ints only")
        m = np.vectorize(int, otypes=[object])(m) if m.size else m
    elif m.dtype.kind not in "iu":
        raise ValueError(f"requantize_raw expects integer mantissas, got dtype {m.dtype}")
    s = src_frac - t.frac_bits
    if m.dtype != object:
        # int64 arithmetic is exact while |m| << max(0, -s) and the rounding stay below 2**62.
        if t.width > 62 or abs(s) > 62:
            big = True
        else:
            big = bool(m.size) and max(abs(int(m.min())), abs(int(m.max()))) >= (1 << (62 + min(s, 0)))
        if big:
            m = m.astype(object)
            m = np.vectorize(int, otypes=[object])(m) if m.size else m
        else:  # (t.width <= 62 here)
            return requantize_int64(m.astype(np.int64), s, t)
    if s <= 0:
        q = m << (-s)
    else:
        q, cmp, nonzero = _floor_shift(m, s)
        neg = m < 0
        r = t.rounding
        if r == "AP_TRN":
            up = np.zeros(q.shape, bool)
        elif r == "AP_TRN_ZERO":
            up = neg & nonzero
        elif r == "AP_RND":
            up = cmp >= 0
        elif r == "AP_RND_MIN_INF":
            up = cmp > 0
        elif r == "AP_RND_ZERO":
            up = (cmp > 0) | ((cmp == 0) & neg)
        elif r == "AP_RND_INF":
            up = (cmp > 0) | ((cmp == 0) & ~neg)
        else:  # AP_RND_CONV
            odd = (q & 1) == 1 if q.dtype != object else np.array([v & 1 == 1 for v in q.ravel()],
                                                                   dtype=bool).reshape(q.shape)
            up = (cmp > 0) | ((cmp == 0) & odd)
        up = up & nonzero
        q = q + up.astype(q.dtype) if q.dtype != object else q + up.astype(np.int64).astype(object)
    lo, hi = t.raw_min, t.raw_max
    o = t.overflow
    if o == "AP_WRAP":
        q = (q - lo) % (1 << t.width) + lo
    elif o == "AP_SAT":
        q = np.where(q < lo, lo, np.where(q > hi, hi, q))
    elif o == "AP_SAT_SYM":
        lo2 = sat_sym_raw_min(t.width, t.signed)
        q = np.where(q < lo2, lo2, np.where(q > hi, hi, q))
    else:  # AP_SAT_ZERO
        q = np.where((q < lo) | (q > hi), 0, q)
    if q.dtype == object and t.width <= 62:
        q = q.astype(np.int64)
    return q


def float_to_raw(x, t: FixedType) -> np.ndarray:
    """``cast(x, t)`` of float32/float64 values, exact for any width (via the floats' own mantissas)."""
    x = np.asarray(x, dtype=np.float64)  # float32 -> float64 is exact
    if not np.isfinite(x).all():
        raise ValueError("input values must be finite")
    m, e = np.frexp(x)
    mant = (m * float(1 << 53)).astype(np.int64)  # exact: |m| < 1
    out = None
    for ex in np.unique(e):
        sel = e == ex
        q = requantize_raw(mant[sel], 53 - int(ex), t)
        if out is None:
            out = np.zeros(x.shape, dtype=q.dtype)
        if q.dtype == object and out.dtype != object:
            out = out.astype(object)
        out[sel] = q
    return out if out is not None else np.zeros(x.shape, dtype=np.int64)
