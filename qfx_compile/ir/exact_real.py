"""Exact real arithmetic for QONNX semantics: float scales, float BatchNorm, quantizers as step functions.

Every float32/float64 constant is a dyadic rational, so a file's real-number
meaning is exactly computable: values here are :class:`Q2` numbers
``p + q * sqrt(v)`` (``p, q`` Fractions; ``v`` a positive non-square Fraction,
from a float BatchNorm's ``sqrt(var + eps)``, or None for a rational), compared
exactly. A *chain* is a per-channel list of monotone elementwise steps applied
to an IR tensor's value (``("affine", A, B)``: ``A*x + B``; ``("relu",)``); a
:class:`Quantizer` maps a real to an integer code (QONNX ``Quant``/``IntQuant``,
``BipolarQuant``, ``Trunc``) monotonically. Their composition on the integer
mantissas of an accumulator interval is a monotone step function, which
:func:`step_function` computes exactly as thresholds (float64 only proposes
candidates; every threshold is confirmed in exact arithmetic) and
:func:`fit_mul_shift` realizes, when cheaper, as ``floor(a*m + b)`` with dyadic
``a, b`` checked against the same thresholds. docs/semantics.md states the rules.
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

ROUNDING = ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")


def _isqrt_frac(v: Fraction) -> Fraction | None:
    """sqrt(v) when it is rational, else None."""
    n, d = v.numerator, v.denominator
    rn, rd = math.isqrt(n), math.isqrt(d)
    return Fraction(rn, rd) if rn * rn == n and rd * rd == d else None


@dataclasses.dataclass(frozen=True)
class Q2:
    """``p + q*sqrt(v)``, exact; ``v`` None (or q == 0) for a rational."""

    p: Fraction
    q: Fraction = Fraction(0)
    v: Fraction | None = None

    @staticmethod
    def of(x) -> "Q2":
        return x if isinstance(x, Q2) else Q2(Fraction(x))

    @staticmethod
    def sqrt(v) -> "Q2":
        v = Fraction(v)
        if v <= 0:
            raise ValueError("the square root of a non-positive number")
        r = _isqrt_frac(v)
        return Q2(r) if r is not None else Q2(Fraction(0), Fraction(1), v)

    @property
    def rational(self) -> bool:
        return self.q == 0 or self.v is None

    def _v(self, o: "Q2"):
        if self.rational:
            return o.v if not o.rational else None
        if o.rational or o.v == self.v:
            return self.v
        raise ValueError("two different square roots (two float BatchNorms without a quantizer between) "
                         "cannot be compared exactly")

    def __add__(self, o):
        o = Q2.of(o)
        v = self._v(o)
        return Q2(self.p + o.p, self.q + o.q, v)

    def __neg__(self):
        return Q2(-self.p, -self.q, self.v)

    def __sub__(self, o):
        return self + (-Q2.of(o))

    def __mul__(self, o):
        o = Q2.of(o)
        v = self._v(o)
        if v is None:
            return Q2(self.p * o.p)
        return Q2(self.p * o.p + self.q * o.q * v, self.p * o.q + self.q * o.p, v)

    def inverse(self) -> "Q2":
        if self.rational:
            if self.p == 0:
                raise ZeroDivisionError("division by zero")
            return Q2(1 / self.p)
        den = self.p * self.p - self.q * self.q * self.v  # nonzero: sqrt(v) is irrational
        return Q2(self.p / den, -self.q / den, self.v)

    def __truediv__(self, o):
        return self * Q2.of(o).inverse()

    def sign(self) -> int:
        """Sign of the exact value (float64 decides only where its error bound, far below 1e-9 of the
        magnitudes, cannot change the sign; otherwise exact integer comparison of squares)."""
        d, q = self.p, self.q
        if self.rational or q == 0:
            return (d > 0) - (d < 0)
        fp, fq = float(d), float(q) * math.sqrt(float(self.v))
        mag, tot = abs(fp) + abs(fq), fp + fq
        if math.isfinite(tot) and 1e-280 < mag < 1e280 and abs(tot) > 1e-9 * mag:
            return 1 if tot > 0 else -1
        if d >= 0 and q >= 0:
            return 1
        if d <= 0 and q <= 0:
            return -1
        a, b = d * d, q * q * self.v
        return ((d > 0) - (d < 0)) if a > b else ((q > 0) - (q < 0))

    def cmp(self, r) -> int:
        return (self - r).sign()

    def __float__(self):
        return float(self.p) + (float(self.q) * math.sqrt(self.v) if not self.rational else 0.0)

    def approx(self, bits: int) -> Fraction:
        """A rational within 2**-bits of the value (exact for a rational)."""
        if self.rational:
            return self.p
        s = Fraction(math.isqrt(int(self.v * 4 ** (bits + 8 + abs(self.q).numerator.bit_length()))),
                     2 ** (bits + 8 + abs(self.q).numerator.bit_length()))
        return self.p + self.q * s

    def floor(self) -> int:
        if self.rational:
            return math.floor(self.p)
        n = math.floor(float(self))
        while self.cmp(n) < 0:
            n -= 1
        while self.cmp(n + 1) >= 0:
            n += 1
        return n

    @property
    def dyadic(self) -> bool:
        return self.rational and (self.p.denominator & (self.p.denominator - 1)) == 0


ZERO, ONE = Q2(Fraction(0)), Q2(Fraction(1))


def round_code(t: Q2, mode: str) -> int:
    """QONNX rounding of an exact real (numpy's functions as qonnx applies them, exactly)."""
    f = t.floor()
    frac = t - f  # in [0, 1)
    if mode == "FLOOR":
        return f
    if mode == "CEIL":
        return f if frac.sign() == 0 else f + 1
    if mode in ("DOWN", "UP"):
        if frac.sign() == 0:
            return f
        toward_zero = f + 1 if t.sign() < 0 else f
        return toward_zero if mode == "DOWN" else (f + 1 if t.sign() > 0 else f)
    c = frac.cmp(Fraction(1, 2))
    if c != 0:
        return f + (c > 0)
    if mode in ("ROUND", "HALF_EVEN"):
        return f + (f % 2)
    if mode == "HALF_UP":  # ties away from zero
        return f + 1 if t.sign() > 0 else f
    if mode == "HALF_DOWN":  # ties toward zero
        return f if t.sign() > 0 else f + 1
    raise ValueError(f"unknown rounding mode {mode!r}")


def _round_float(t: np.ndarray, mode: str) -> np.ndarray:
    if mode == "FLOOR":
        return np.floor(t)
    if mode == "CEIL":
        return np.ceil(t)
    if mode == "DOWN":
        return np.trunc(t)
    if mode == "UP":
        return np.sign(t) * np.ceil(np.abs(t))
    if mode == "HALF_UP":
        return np.sign(t) * np.floor(np.abs(t) + 0.5)
    if mode == "HALF_DOWN":
        return np.sign(t) * np.ceil(np.abs(t) - 0.5)
    return np.round(t)


@dataclasses.dataclass
class Quantizer:
    """A QONNX quantizer on exact reals, per channel (lists of length 1 or C).

    code = round_mode(clamp((round_half_even(y/scale + zeropt) if pre_round else y/scale + zeropt) / div, qmin, qmax))
    (``bipolar``: code = +1 if y/scale + zeropt >= 0 else -1); the quantizer's output value is
    ``(code - out_offset) * out_scale``.
    """

    scale: list  # Fractions (nonzero)
    zeropt: list  # Fractions
    qmin: int | None
    qmax: int | None
    rounding: str = "ROUND"
    bipolar: bool = False
    pre_round: bool = False
    div: Fraction = Fraction(1)
    out_scale: list | None = None  # default: scale
    out_offset: list | None = None  # default: zeropt

    def _c(self, arr, c):
        return arr[c if len(arr) > 1 else 0]

    def code(self, y: Q2, c: int) -> int:
        t = y / self._c(self.scale, c) + self._c(self.zeropt, c)
        if self.bipolar:
            return 1 if t.sign() >= 0 else -1
        if self.pre_round:
            t = Q2(Fraction(round_code(t, "ROUND")))
        if self.div != 1:
            t = t / self.div
        return self.code_of_t(t)

    def code_of_t(self, t: Q2) -> int:
        """The code of ``t = (y/scale + zeropt) / div`` (no pre-rounding): clamp, then round (or the sign)."""
        if self.bipolar:
            return 1 if t.sign() >= 0 else -1
        if self.qmax is not None and t.cmp(self.qmax) > 0:
            return round_code(Q2(Fraction(self.qmax)), self.rounding)
        if self.qmin is not None and t.cmp(self.qmin) < 0:
            return round_code(Q2(Fraction(self.qmin)), self.rounding)
        return round_code(t, self.rounding)

    def t_affine(self, A: Q2, B: Q2, c: int) -> tuple[Q2, Q2]:
        """``(P, Q)`` with ``(A*x + B)/scale + zeropt, / div`` = ``P*x + Q`` (bipolar: no div)."""
        s, z = Q2(Fraction(self._c(self.scale, c))), Fraction(self._c(self.zeropt, c))
        P, Q = A / s, B / s + z
        if self.div != 1 and not self.bipolar:
            P, Q = P / self.div, Q / self.div
        return P, Q

    def code_float(self, y: np.ndarray, c: int) -> np.ndarray:
        t = y / float(self._c(self.scale, c)) + float(self._c(self.zeropt, c))
        if self.bipolar:
            return np.where(t >= 0, 1.0, -1.0)
        if self.pre_round:
            t = np.round(t)
        t = t / float(self.div)
        if self.qmax is not None:
            t = np.minimum(t, self.qmax)
        if self.qmin is not None:
            t = np.maximum(t, self.qmin)
        return _round_float(t, self.rounding)

    def value_affine(self, n: int) -> tuple[list, list]:
        """Per channel (A, B) with output value = A*code + B."""
        os_ = self.out_scale if self.out_scale is not None else self.scale
        oo = self.out_offset if self.out_offset is not None else self.zeropt
        k = max(len(os_), len(oo), 1)
        A = [Q2(Fraction(os_[c if len(os_) > 1 else 0])) for c in range(k)]
        B = [Q2(-Fraction(oo[c if len(oo) > 1 else 0]) * Fraction(os_[c if len(os_) > 1 else 0])) for c in range(k)]
        return A, B

    def n_channels(self) -> int:
        return max(len(self.scale), len(self.zeropt), len(self.out_scale or [0]), len(self.out_offset or [0]))


# --------------------------------------------------------------------- chains
def chain_channels(chain) -> int:
    return max([len(s[1]) for s in chain if s[0] == "affine"] + [1])


def eval_chain(chain, c: int, x: Q2) -> Q2:
    for s in chain:
        if s[0] == "affine":
            A, B = s[1], s[2]
            x = x * A[c if len(A) > 1 else 0] + B[c if len(B) > 1 else 0]
        elif s[0] == "relu":
            x = x if x.sign() > 0 else ZERO
        else:
            raise ValueError(f"unknown chain step {s[0]!r}")
    return x


def eval_chain_float(chain, c: int, x: np.ndarray) -> np.ndarray:
    for s in chain:
        if s[0] == "affine":
            A, B = s[1], s[2]
            x = x * float(A[c if len(A) > 1 else 0]) + float(B[c if len(B) > 1 else 0])
        else:
            x = np.maximum(x, 0.0)
    return x


def chain_is_identity(chain) -> bool:
    return all(s[0] == "affine" and all(a.cmp(1) == 0 for a in s[1]) and all(b.sign() == 0 for b in s[2])
               for s in chain)


def compose_affine(chain):
    """The chain as one per-channel affine (A, B) when it has no relu, else None."""
    if any(s[0] != "affine" for s in chain):
        return None
    n = chain_channels(chain)
    A, B = [ONE] * n, [ZERO] * n
    for s in chain:
        a, b = s[1], s[2]
        A = [A[c] * a[c if len(a) > 1 else 0] for c in range(n)]
        B = [B[c] * a[c if len(a) > 1 else 0] + b[c if len(b) > 1 else 0] for c in range(n)]
    return A, B


# -------------------------------------------------------------- step functions
@dataclasses.dataclass
class Steps:
    """Per channel ``code(m) = base[c] + step[c] * #{k : m >= thresholds[c][k]}`` for integer m in [lo, hi]."""

    lo: int
    hi: int
    base: list[int]
    step: list[int]
    thresholds: list[list[int]]  # ascending, each in (lo, hi]; channels padded to one K with hi + 1

    def eval(self, m: np.ndarray, c: int) -> np.ndarray:
        t = self.thresholds[c]
        cnt = np.zeros(np.shape(m), dtype=np.int64)
        for v in t:
            cnt += (m >= v)
        return self.base[c] + self.step[c] * cnt


def step_function(fn, fn_float, channels: int, lo: int, hi: int) -> Steps:
    """Exact thresholds of the monotone integer functions ``fn(m, c)`` (exact) on [lo, hi].

    ``fn_float(m_array, c)`` is the same in float64 (only to propose candidates: every breakpoint is
    confirmed exactly on both sides, and every run between them at its ends, which proves the whole
    run by monotonicity; where a proposal fails, exact bisection decides).
    """
    base, step, thr = [], [], []
    for c in range(channels):
        q_lo, q_hi = fn(lo, c), fn(hi, c)
        if q_lo == q_hi:
            base.append(q_lo)
            step.append(1)
            thr.append([])
            continue
        d = 1 if q_hi > q_lo else -1
        levels = np.arange(1, abs(q_hi - q_lo) + 1)  # the k-th threshold: first m with d*(code - q_lo) >= k
        a = np.full(levels.shape, lo, dtype=object)
        b = np.full(levels.shape, hi, dtype=object)
        # float bisection for every level at once (on Python ints: any width)
        for _ in range(int(hi - lo).bit_length() + 1):
            mid = (a + b) // 2
            h = d * (fn_float(np.array(mid, dtype=np.float64), c) - q_lo)
            ok = h >= levels
            b = np.where(ok, mid, b)
            a = np.where(ok, a, mid)
        cand = [int(v) for v in b]
        cand = [max(lo + 1, min(hi, v)) for v in cand]
        cand = list(np.maximum.accumulate(np.array(cand, dtype=object))) if cand else cand

        def exact_level(k):  # smallest m in (lo, hi] with d*(fn(m)-q_lo) >= k
            x, y = lo, hi  # invariant: h(x) < k <= h(y)
            while y - x > 1:
                z = (x + y) // 2
                if d * (fn(z, c) - q_lo) >= k:
                    y = z
                else:
                    x = z
            return y

        ok = True
        for k, t in zip(levels, cand):
            if not (d * (fn(t, c) - q_lo) >= k and d * (fn(t - 1, c) - q_lo) < k):
                ok = False
                break
        if not ok:
            cand = [exact_level(int(k)) for k in levels]
        base.append(q_lo)
        step.append(d)
        thr.append([int(v) for v in cand])
    K = max((len(t) for t in thr), default=0)
    thr = [t + [hi + 1] * (K - len(t)) for t in thr]
    return Steps(lo, hi, base, step, thr)


# ---------------------------------------------------------------- multiply-shift
def fit_mul_shift(steps: Steps, slopes: list, tmin: int, tmax: int, max_shift: int = 64):
    """Dyadic ``a_c = M_c * 2**-sh``, ``b_c = Bm_c * 2**-sh`` with ``clamp(floor(a_c*m + b_c), tmin, tmax)``
    equal to the step function on [lo, hi] for every channel, or None.

    ``slopes[c]`` is the exact slope (Q2) of the real function the codes round; the fit is checked
    exactly at every breakpoint (both sides) and at the interval ends, which proves it on the whole
    interval (both sides are monotone in the same direction and constant between breakpoints).
    """
    lo, hi = steps.lo, steps.hi
    for sh in range(0, max_shift + 1):
        Ms, Bs = [], []
        for c in range(len(steps.base)):
            pts = {lo, hi}
            for t in steps.thresholds[c]:
                if lo < t <= hi:
                    pts.update((t, t - 1))
            s = slopes[c if len(slopes) > 1 else 0]
            a = Fraction(round(s.approx(sh + 8) * 2 ** sh), 2 ** sh)
            L, U = None, None  # b in [L, U)
            for p in pts:
                q = int(steps.eval(np.array(p, dtype=object), c))
                lo_b = None if q <= tmin else Fraction(q) - a * p
                up_b = None if q >= tmax else Fraction(q + 1) - a * p
                if q < tmin or q > tmax:
                    return None
                if lo_b is not None:
                    L = lo_b if L is None else max(L, lo_b)
                if up_b is not None:
                    U = up_b if U is None else min(U, up_b)
            if L is None:
                L = (U - 1) if U is not None else Fraction(0)
            bm = math.ceil(L * 2 ** sh)
            if U is not None and Fraction(bm, 2 ** sh) >= U:
                break
            Ms.append(int(a * 2 ** sh))
            Bs.append(bm)
        else:
            return sh, Ms, Bs
    return None


# ------------------------------------------------------------- input boundary
@dataclasses.dataclass
class InputMap:
    """The float graph input's boundary: ``code = quantizer(chain(x))`` per channel (axis 0 of a sample),
    exact for any float input (``x`` is read as the exact value of its float32/float64)."""

    chain: list
    quantizer: Quantizer
    channels: int

    def codes(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError("input values must be finite")
        out = np.zeros(x.shape, dtype=np.int64)
        for c in range(self.channels):
            sel = (slice(None), c) if self.channels > 1 else (slice(None),)
            part = x[sel]
            u, inv = np.unique(part, return_inverse=True)
            codes = np.array([self.quantizer.code(eval_chain(self.chain, c, Q2(Fraction(float(v)))), c)
                              for v in u], dtype=np.int64)
            out[sel] = codes[inv].reshape(part.shape)
        return out
