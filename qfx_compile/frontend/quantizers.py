"""Fixed-point types of cast nodes: ``qfx.FixedPoint`` attributes and QONNX ``Quant`` parameters.

``describe_*`` return ``(width, signed, rounding, overflow, frac)`` where ``frac``
(fractional bits) is an int array broadcastable to the quantized tensor (per channel
for constants). Raise ``ValueError`` with the reason a quantizer is not an ap_fixed.
"""
from __future__ import annotations

import numpy as np

from ..fixed.types import MAX_WIDTH, OVERFLOW_MODES, ROUNDING_MODES

#: QONNX rounding_mode -> ap_fixed quantization mode (CEIL and UP have no ap_fixed twin).
QONNX_ROUNDING = {"FLOOR": "AP_TRN", "ROUND": "AP_RND_CONV", "HALF_EVEN": "AP_RND_CONV", "HALF_UP": "AP_RND_INF",
                  "HALF_DOWN": "AP_RND_ZERO", "DOWN": "AP_TRN_ZERO"}


def _int_scalar(a: np.ndarray, what: str) -> int:
    a = np.asarray(a)
    if a.size != 1:
        raise ValueError(f"{what} must be a scalar, got shape {a.shape}")
    v = a.reshape(()).item()
    if not np.isfinite(v) or v != int(v):
        raise ValueError(f"{what} must be an integer, got {v}")
    return int(v)


def describe_fixedpoint(width, signed, rounding, overflow, int_bits: np.ndarray):
    if not isinstance(width, int) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"width {width!r} outside the supported 1..{MAX_WIDTH}; use a width in that range")
    if signed not in (0, 1):
        raise ValueError(f"signed must be 0 or 1, got {signed!r}")
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding {rounding!r} is not one of {', '.join(ROUNDING_MODES)}")
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow {overflow!r} is not one of {', '.join(OVERFLOW_MODES)}")
    ib = np.asarray(int_bits)
    if ib.size == 0 or not np.issubdtype(ib.dtype, np.number) or not np.all(np.isfinite(ib)) \
            or not np.all(ib == np.round(ib)):
        raise ValueError("int_bits must be a nonempty integer tensor")
    ib = ib.astype(np.int64)
    if np.abs(ib).max() > 4 * MAX_WIDTH:
        raise ValueError(f"int_bits {int(np.abs(ib).max())} outside the supported range")
    return width, bool(signed), rounding, overflow, width - ib


def describe_qonnx(scale: np.ndarray, zeropt: np.ndarray, bitwidth: np.ndarray, signed: int, narrow: int,
                   rounding_mode: str):
    """A QONNX Quant as ap_fixed: power-of-two scale, zero point 0, saturating."""
    w = _int_scalar(bitwidth, "bitwidth")
    if not 1 <= w <= MAX_WIDTH:
        raise ValueError(f"bitwidth {w} outside the supported 1..{MAX_WIDTH}; use a bit width in that range")
    if np.any(np.asarray(zeropt) != 0):
        raise ValueError("the zero point is not 0: an offset grid is not an ap_fixed type")
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("the scale must be positive and finite")
    m, e = np.frexp(s)
    if np.any(m != 0.5):
        bad = s[m != 0.5].ravel()[0]
        raise ValueError(f"the scale {bad!r} is not a power of two: the grid is not fixed-point "
                         f"(use a power-of-two scale, e.g. Brevitas *FixedPoint quantizers)")
    frac = (1 - e).astype(np.int64)  # scale = 2**(e-1) = 2**-frac
    if rounding_mode not in QONNX_ROUNDING:
        raise ValueError(f"rounding_mode {rounding_mode!r} has no ap_fixed equivalent "
                         f"(supported: {', '.join(QONNX_ROUNDING)})")
    if signed not in (0, 1) or narrow not in (0, 1):
        raise ValueError("signed and narrow must be 0 or 1")
    if signed and w == 1:
        raise ValueError("a 1-bit signed Quant is bipolar (+-1), not an ap_fixed type")
    if narrow and not signed:
        raise ValueError("an unsigned narrow Quant (max 2**W - 2) has no ap_fixed overflow mode")
    return w, bool(signed), QONNX_ROUNDING[rounding_mode], "AP_SAT_SYM" if narrow else "AP_SAT", frac
