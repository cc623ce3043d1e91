"""Hypothesis properties of the cast (the header comparison is tests/test_cast_headers.py)."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qfx_compile.qfx.quantize import quantize, requantize_raw, to_raw
from qfx_compile.fixed.types import OVERFLOW_MODES, ROUNDING_MODES, FixedType

FAST = settings(max_examples=300, deadline=None)


@st.composite
def types(draw, max_width=53, overflow=OVERFLOW_MODES):
    w = draw(st.integers(1, max_width))
    return FixedType(w, draw(st.integers(-4, w + 4)), draw(st.booleans()),
                     draw(st.sampled_from(ROUNDING_MODES)), draw(st.sampled_from(overflow)))


def _values(t: FixedType, n=20):
    """Doubles around the type's range, many of them dyadic (ties) or far out of range."""
    scale = 2.0 ** t.int_bits
    fine = st.integers(-(8 << t.width), 8 << t.width).map(lambda k: k * 2.0 ** -(t.frac_bits + 3))
    wide = st.floats(-4 * scale, 4 * scale, allow_nan=False, allow_infinity=False)
    far = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)
    return st.lists(st.one_of(fine, wide, far), min_size=1, max_size=n)


@FAST
@given(st.data())
def test_idempotent_on_grid_in_range(data):
    t = data.draw(types())
    x = torch.tensor(data.draw(_values(t)), dtype=torch.float64)
    q = quantize(x, t)
    assert torch.equal(quantize(q, t), q)
    m = q * 2.0 ** t.frac_bits
    assert torch.equal(m, torch.round(m))
    assert bool(((q >= t.min) & (q <= t.max)).all())
    to_raw(q, t)  # raises when off grid or out of range


@FAST
@given(st.data())
def test_monotone_for_saturating_modes(data):
    t = data.draw(types(overflow=("AP_SAT", "AP_SAT_SYM")))
    x = torch.sort(torch.tensor(data.draw(_values(t)), dtype=torch.float64)).values
    q = quantize(x, t)
    assert bool((q[1:] >= q[:-1]).all())


@FAST
@given(st.data())
def test_float_cast_equals_integer_cast(data):
    t = data.draw(types())
    src_frac = data.draw(st.integers(t.frac_bits - 6, t.frac_bits + 20))
    bound = 1 << 52
    ms = data.draw(st.lists(st.integers(-bound, bound), min_size=1, max_size=30))
    x = torch.tensor(ms, dtype=torch.float64) * 2.0 ** -src_frac  # exact: |m| <= 2**52
    via_float = to_raw(quantize(x, t), t).tolist()
    via_int = [int(v) for v in requantize_raw(np.array(ms, dtype=np.int64), src_frac, t)]
    obj = np.empty(len(ms), dtype=object)
    obj[:] = ms
    assert via_float == via_int == [int(v) for v in requantize_raw(obj, src_frac, t)]


@FAST
@given(st.data())
def test_per_channel_equals_scalar_loop(data):
    t = data.draw(types(max_width=24))
    c = data.draw(st.integers(1, 4))
    ib = data.draw(st.lists(st.integers(-4, t.width + 4), min_size=c, max_size=c))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    vals = data.draw(st.lists(st.floats(-2.0 ** 30, 2.0 ** 30, width=32), min_size=3 * c, max_size=3 * c))
    x = torch.tensor(vals, dtype=dtype).reshape(3, c)
    q = quantize(x, t, int_bits=ib, axis=1)
    for k in range(c):
        assert torch.equal(q[:, k], quantize(x[:, k], t.replace(int_bits=ib[k])))
    qt = quantize(x.t().contiguous(), t, int_bits=torch.tensor(ib), axis=0)
    assert torch.equal(qt, q.t())


@FAST
@given(st.data())
def test_straight_through_gradient(data):
    t = data.draw(types(max_width=24))
    vals = data.draw(_values(t))
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(vals, dtype=dtype)
        x = x[torch.isfinite(x)].requires_grad_(True)  # 1e300 is inf in float32: outside the contract
        quantize(x, t).sum().backward()
        inside = (x.detach().double() >= t.min) & (x.detach().double() <= t.max)
        assert torch.equal(x.grad, inside.to(dtype))


def test_requantize_raw_handles_shifts_beyond_62_bits():
    """A source grid far finer or coarser than the target (|shift| > 62) is exact via Python ints."""
    from fractions import Fraction

    from qfx_compile.qfx import FixedType, requantize_raw

    t = FixedType(8, 3, rounding="AP_RND", overflow="AP_SAT")
    # value = m * 2**-src_frac; src_frac = -100 (huge values) and 200 (tiny values)
    for src_frac, m in ((-100, [1, -1, 0]), (200, [1 << 199, -(1 << 199) - 1, 3 << 197])):
        got = requantize_raw(np.array(m, dtype=np.int64) if max(map(abs, m)) < 2**62 else np.array(m, dtype=object),
                             src_frac, t)
        for mi, gi in zip(m, got):
            v = Fraction(mi) / Fraction(2) ** src_frac
            q = Fraction(int(gi)) / 2 ** t.frac_bits
            # nearest grid value, ties up (AP_RND), saturated
            exact = min(max(Fraction((v * 2 ** t.frac_bits + Fraction(1, 2)).__floor__()), t.raw_min), t.raw_max)
            assert q * 2 ** t.frac_bits == exact, (src_frac, mi, gi)
