"""Fixed-point types with the semantics of Vitis HLS ``ap_[u]fixed<W, I, Q, O>``.

A :class:`FixedType` describes a grid: a value is ``m * 2**-F`` for an integer
mantissa ``m`` in ``[raw_min, raw_max]`` and ``F = W - I`` fractional bits.
``I`` counts the sign bit for signed types and may be negative or exceed ``W``.

This module is the single source of truth for type rules: ranges, the C++
spelling, the result types of ``+`` and ``*`` (exact, never rounded), and the
smallest type that holds an integer interval (used to size accumulators).
The training library, the IR and the templates all import it.
"""
from __future__ import annotations

import dataclasses
import numbers
import re
from fractions import Fraction
from typing import Iterable

ROUNDING_MODES = (
    "AP_TRN",  # floor
    "AP_TRN_ZERO",  # toward zero
    "AP_RND",  # half toward +inf
    "AP_RND_ZERO",  # half toward zero
    "AP_RND_MIN_INF",  # half toward -inf
    "AP_RND_INF",  # half away from zero
    "AP_RND_CONV",  # half to even
)
OVERFLOW_MODES = (
    "AP_WRAP",  # keep the low W bits (two's complement)
    "AP_SAT",  # clamp to [min, max]
    "AP_SAT_ZERO",  # any overflow gives 0
    "AP_SAT_SYM",  # signed: clamp to [-max, max]; unsigned: as AP_SAT
)
#: ap_fixed modes we know of but do not emulate (exactness not proven).
UNSUPPORTED_MODES = ("AP_WRAP_SM",)

#: Widest type the library handles (mantissas are kept in int64 / Python int).
MAX_WIDTH = 1024


def raw_range(width: int, signed: bool) -> tuple[int, int]:
    """Mantissa range of a W-bit type: ``[-2**(W-1), 2**(W-1)-1]`` signed, ``[0, 2**W-1]`` unsigned."""
    return (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)


@dataclasses.dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, int_bits, rounding, overflow>`` (``ap_ufixed`` when unsigned).

    Quantization (``rounding``) is applied first, then overflow; see
    :func:`qfx_compile.qfx.quantize`. ``sat_bits`` (the ``N`` template argument)
    is not supported and always 0.
    """

    width: int
    int_bits: int
    signed: bool = True
    rounding: str = "AP_TRN"
    overflow: str = "AP_WRAP"

    def __post_init__(self):
        for name in ("width", "int_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"FixedType {name} must be an int, got {v!r}")
            object.__setattr__(self, name, int(v))
        if isinstance(self.signed, str) or self.signed not in (0, 1):
            raise ValueError(f"FixedType signed must be a bool, got {self.signed!r}")
        if not 1 <= self.width <= MAX_WIDTH:
            raise ValueError(f"FixedType width must be in 1..{MAX_WIDTH}, got {self.width}")
        if abs(self.int_bits) > 4 * MAX_WIDTH:
            raise ValueError(f"FixedType int_bits {self.int_bits} is out of the supported range")
        if not isinstance(self.signed, bool):
            object.__setattr__(self, "signed", bool(self.signed))
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(
                f"unknown rounding mode {self.rounding!r}; expected one of {', '.join(ROUNDING_MODES)}")
        if self.overflow in UNSUPPORTED_MODES:
            raise ValueError(
                f"overflow mode {self.overflow} is not supported (its emulation is not proven exact); "
                f"use one of {', '.join(OVERFLOW_MODES)}")
        if self.overflow not in OVERFLOW_MODES:
            raise ValueError(
                f"unknown overflow mode {self.overflow!r}; expected one of {', '.join(OVERFLOW_MODES)}")

    # ----------------------------------------------------------------- grid
    @property
    def frac_bits(self) -> int:
        """F = W - I: the value is mantissa * 2**-F."""
        return self.width - self.int_bits

    @property
    def raw_min(self) -> int:
        return raw_range(self.width, self.signed)[0]

    @property
    def raw_max(self) -> int:
        return raw_range(self.width, self.signed)[1]

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac_bits

    @property
    def min(self) -> float:
        return self.raw_min * 2.0 ** -self.frac_bits

    @property
    def max(self) -> float:
        return self.raw_max * 2.0 ** -self.frac_bits

    def exact_min(self) -> Fraction:
        return Fraction(self.raw_min) * Fraction(2) ** -self.frac_bits

    def exact_max(self) -> Fraction:
        return Fraction(self.raw_max) * Fraction(2) ** -self.frac_bits

    # ------------------------------------------------------------- spelling
    def __str__(self) -> str:
        base = "ap_fixed" if self.signed else "ap_ufixed"
        args = [str(self.width), str(self.int_bits)]
        if self.rounding != "AP_TRN" or self.overflow != "AP_WRAP":
            args.append(self.rounding)
        if self.overflow != "AP_WRAP":
            args.append(self.overflow)
        return f"{base}<{', '.join(args)}>"

    def cpp(self) -> str:
        """The C++ spelling with both modes always written (for generated code)."""
        base = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{base}<{self.width}, {self.int_bits}, {self.rounding}, {self.overflow}>"

    _SPELLING = re.compile(
        r"^\s*(ap_u?fixed)\s*<\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(\w+)\s*(?:,\s*(\w+)\s*(?:,\s*(\d+)\s*)?)?)?>\s*$")

    @classmethod
    def parse(cls, text: str) -> "FixedType":
        """Parse ``ap_fixed<W,I[,Q[,O[,N]]]>`` or ``ap_ufixed<...>``; N must be 0."""
        if not isinstance(text, str):
            raise ValueError(f"expected a C++ type string such as 'ap_fixed<8,3>', got {text!r}")
        m = cls._SPELLING.match(text)
        if not m:
            raise ValueError(
                f"malformed fixed-point type {text!r}: expected ap_fixed<W,I[,Q[,O]]> or ap_ufixed<W,I[,Q[,O]]>")
        base, w, i, q, o, n = m.groups()
        if n is not None and int(n) != 0:
            raise ValueError(f"in {text!r}: saturation bits N={n} are not supported (only N=0)")
        return cls(int(w), int(i), base == "ap_fixed", q or "AP_TRN", o or "AP_WRAP")

    def replace(self, **changes) -> "FixedType":
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------- raw <-> exact value
    def value_of_raw(self, m: int) -> Fraction:
        return Fraction(m) * Fraction(2) ** -self.frac_bits

    # ---------------------------------------------------------- result types
    def add(self, other: "FixedType") -> "FixedType":
        """Type of the exact sum ``a + b`` as ap_fixed computes it (before any assignment)."""
        signed = self.signed or other.signed
        i1 = self.int_bits + (1 if other.signed and not self.signed else 0)
        i2 = other.int_bits + (1 if self.signed and not other.signed else 0)
        i = max(i1, i2) + 1
        f = max(self.frac_bits, other.frac_bits)
        return FixedType(i + f, i, signed)

    def mul(self, other: "FixedType") -> "FixedType":
        """Type of the exact product ``a * b``: W1+W2 bits, I1+I2 integer bits."""
        return FixedType(self.width + other.width, self.int_bits + other.int_bits,
                         self.signed or other.signed)

    def sum_of(self, n: int) -> "FixedType":
        """Type that holds any sum of ``n`` values of this type exactly (worst case)."""
        if n < 1:
            raise ValueError(f"sum_of needs n >= 1, got {n}")
        lo, hi = self.raw_min * n, self.raw_max * n
        return FixedType.for_raw_range(lo, hi, self.frac_bits)

    @staticmethod
    def for_raw_range(lo: int, hi: int, frac_bits: int, signed: bool | None = None) -> "FixedType":
        """Smallest type (AP_TRN, AP_WRAP) holding every mantissa in [lo, hi] at ``frac_bits``.

        Signed unless ``lo >= 0`` (or ``signed`` forces it). Used for accumulators
        sized from intervals: no value of the interval can overflow.
        """
        if lo > hi:
            raise ValueError(f"empty range [{lo}, {hi}]")
        if signed is None:
            signed = lo < 0
        if signed:
            w = 1
            while not (-(1 << (w - 1)) <= lo and hi <= (1 << (w - 1)) - 1):
                w += 1
        else:
            if lo < 0:
                raise ValueError(f"unsigned type cannot hold negative range [{lo}, {hi}]")
            w = max(1, int(hi).bit_length())
        return FixedType(w, w - frac_bits, signed)


def common_type(types: Iterable[FixedType]) -> FixedType:
    """Smallest type (AP_TRN, AP_WRAP) that holds every value of every given type exactly."""
    types = list(types)
    if not types:
        raise ValueError("common_type needs at least one type")
    f = max(t.frac_bits for t in types)
    lo = min(t.raw_min << (f - t.frac_bits) for t in types)
    hi = max(t.raw_max << (f - t.frac_bits) for t in types)
    return FixedType.for_raw_range(lo, hi, f)


def sat_sym_raw_min(width: int, signed: bool) -> int:
    """Lowest mantissa AP_SAT_SYM saturates to: ``-raw_max`` for signed types, 0 unsigned.

    Exception, as the Xilinx headers behave: a signed 1-bit type holds {-1, 0}
    and its AP_SAT_SYM saturates to -1 like AP_SAT (``overflow_adjust`` sets the
    sign bit and bit 0, which are the same bit).
    """
    if not signed:
        return 0
    return -raw_range(width, True)[1] if width > 1 else -1


def reciprocal_type(n: int, recip_bits: int) -> FixedType:
    """Type of the average-pooling constant ``r = cast(1/n, .)``: ``ap_ufixed<R, 1-p, AP_RND_CONV, AP_SAT>``.

    ``p = floor(log2 n)``, ``R = recip_bits``: ``1/n`` lies in ``(2**-(p+1), 2**-p]``, so
    the type holds it with R significant bits, and exactly when ``n`` is a power of two.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"average pooling needs a window of at least 1 element, got {n!r}")
    if isinstance(recip_bits, bool) or int(recip_bits) != recip_bits or recip_bits < 1:
        raise ValueError(f"recip_bits must be a positive int, got {recip_bits!r}")
    p = int(n).bit_length() - 1
    return FixedType(int(recip_bits), 1 - p, False, "AP_RND_CONV", "AP_SAT")


def reciprocal_raw(n: int, recip_bits: int) -> tuple[int, FixedType]:
    """Mantissa and type of ``r = cast(1/n, reciprocal_type(n, recip_bits))``, exact (integers only)."""
    t = reciprocal_type(n, recip_bits)
    n = int(n)
    q, rem = divmod(1 << t.frac_bits, n)  # 2**F / n = q + rem/n; F = R - 1 + p >= 0
    if 2 * rem > n or (2 * rem == n and q & 1):  # round half to even
        q += 1
    return min(max(q, t.raw_min), t.raw_max), t
