"""K-hot value sets, digit decompositions and the exact nearest projection (brute force over whole grids)."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from qfx_compile import qfx
from qfx_compile.qfx import khot
from qfx_compile.fixed.types import FixedType


def _min_signed_digits(m: int, width: int) -> int:
    """Fewest terms +-2**e summing to m, by breadth-first search (brute force)."""
    powers = [s << e for e in range(width + 2) for s in (1, -1)]
    frontier, seen, k = {0}, {0}, 0
    while m not in frontier:
        k += 1
        frontier = {v + p for v in frontier for p in powers} - seen
        seen |= frontier
    return k


@pytest.mark.parametrize("digits", ["binary", "csd"])
def test_digits_of_sums_back_and_counts(digits):
    for m in range(-300, 301):
        ds = khot.digits_of(m, digits)
        assert sum(s * (1 << e) for s, e in ds) == m
        assert len(ds) == int(khot.digit_count(np.array([m]), digits)[0])
        if digits == "binary":
            assert len(ds) == bin(abs(m)).count("1")


def test_csd_is_minimal_signed_digits():
    for m in range(-130, 131):
        ds = khot.digits_of(m, "csd")
        assert len(ds) == _min_signed_digits(m, 8)
        es = sorted(e for _, e in ds)
        assert all(b - a >= 2 for a, b in zip(es, es[1:]))  # non-adjacent form


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("digits", ["binary", "csd"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_projection_is_exact_nearest_over_whole_grid(signed, digits, k):
    t = FixedType(6, 2, signed)
    grid = range(t.raw_min, t.raw_max + 1)
    allowed = [m for m in grid if (bin(abs(m)).count("1") if digits == "binary" else _min_signed_digits(m, 6)) <= k]
    assert list(khot.khot_table(t, k, digits)) == allowed
    # every point of a 4x finer grid plus out-of-range values, ties included
    ys = [Fraction(v, 4) for v in range(4 * t.raw_min - 40, 4 * t.raw_max + 41)]
    x = torch.tensor([float(y) * t.lsb for y in ys], dtype=torch.float64)
    got = qfx.khot_quantize(x, t, k, digits)
    for y, g in zip(ys, got.tolist()):
        best = min(allowed, key=lambda m: (abs(Fraction(m) - y), abs(m)))
        assert g == best * t.lsb
        assert khot.digit_count(np.array([int(g / t.lsb)]), digits)[0] <= k
    # the numpy core agrees
    assert np.array_equal(khot.project_raw(np.array([float(y) for y in ys]), khot.khot_table(t, k, digits)),
                          (got / t.lsb).numpy().astype(np.int64))


def test_wide_table_matches_enumeration():
    # the combinatorial builder (W > 16) agrees with filtering the grid
    t = FixedType(17, 1)
    for digits in ("binary", "csd"):
        tab = khot.khot_table(t, 2, digits)
        grid = np.arange(t.raw_min, t.raw_max + 1, dtype=np.int64)
        assert np.array_equal(tab, grid[khot.digit_count(grid, digits) <= 2])


def test_per_channel_k_and_float32_training_path():
    q = qfx.Quantizer("ap_fixed<6,1,AP_RND_CONV,AP_SAT>", channels=3, axis=0, k_hot=[1, 2, 3], digits="binary")
    w = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    q.calibrate(w)
    train = q(w)
    q.eval()
    ev = q(w.double())
    assert torch.equal(train.double(), ev)
    ib = q.int_bits_tensor()
    for c, k in enumerate([1, 2, 3]):
        raw = (ev[c] * 2.0 ** (6 - int(ib[c]))).long().numpy()
        assert (khot.popcount(raw) <= k).all()


def test_khot_errors():
    with pytest.raises(ValueError, match="larger than the weight width"):
        qfx.Quantizer("ap_fixed<4,1>", k_hot=5)
    with pytest.raises(ValueError, match="digits"):
        qfx.Quantizer("ap_fixed<4,1>", k_hot=2, digits="ternary")
    with pytest.raises(ValueError, match="at least 1"):
        khot.khot_table(FixedType(4, 1), 0, "csd")


def test_khot_gradient_is_straight_through():
    t = FixedType(6, 1)
    x = torch.tensor([0.3, -0.7, 5.0], requires_grad=True)
    qfx.khot_quantize(x, t, 2, "csd").sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]
