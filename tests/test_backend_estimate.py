"""backend.estimate: DSPs per product, multipliers/folds/cycles per the hls_lib formulas, the reuse choice."""
import math

import pytest

from qfx_compile.backend import estimate as E


@pytest.mark.parametrize("a,b,kind,dsp", [
    (8, 8, "DSP48E2", 1), (27, 18, "DSP48E2", 1), (18, 27, "DSP48E2", 1), (28, 18, "DSP48E2", 2),
    (27, 19, "DSP48E2", 2), (26, 18, "DSP48E1", 2), (25, 18, "DSP48E1", 1), (30, 30, "DSP48E2", 4),
    (54, 36, "DSP48E2", 4)])
def test_dsp_per_product(a, b, kind, dsp):
    assert E.dsp_per_product(a, b, kind) == dsp


def test_signed_bits_and_small_products_go_to_luts():
    assert E.signed_bits(8, True) == 8 and E.signed_bits(8, False) == 9
    assert E.product_cost(4, 9, "DSP48E2", E.MUL_AUTO) == (0, E.fabric_mul_luts(4, 9), True)
    assert E.product_cost(5, 9, "DSP48E2", E.MUL_AUTO) == (1, 0, False)
    assert E.product_cost(4, 9, "DSP48E2", E.MUL_DSP) == (1, 0, False)
    d, lut, small = E.product_cost(8, 8, "DSP48E2", E.MUL_FABRIC)
    assert (d, small) == (0, True) and lut == E.cost_tables()["fabric_mul"]["8x8"]  # measured with yosys


@pytest.mark.parametrize("p,r,mults,folds", [
    (10, 1, 10, 1), (10, 3, 4, 3), (10, 4, 3, 4), (10, 10, 1, 10), (10, 100, 1, 10), (72, 8, 9, 8), (7, 2, 4, 2)])
def test_multipliers_and_folds(p, r, mults, folds):
    assert E.multipliers(p, r) == mults and E.folds(p, r) == folds
    assert folds <= max(r, 1) or r > p


def _dense(n_in, n_out, a=8, b=8):
    return E.LayerShape("mul", products=n_in * n_out, read_cycles=n_in, outputs=1, writes=n_out,
                        max_reuse=n_in * n_out, natural_reuse=n_out, a_bits=a, b_bits=b)


def _conv(h, w, c, f, k=3, pad=1):
    return E.LayerShape("mul", products=k * k * c * f, read_cycles=(h + 2 * pad) * (w + 2 * pad) * c,
                        outputs=h * w, writes=f, max_reuse=k * k * c * f, natural_reuse=f, a_bits=8, b_bits=8)


def test_cycles_follow_the_readme_formulas():
    d = _dense(64, 10)
    assert E.layer_cycles(d, 10) == 64 + 10 + 10
    assert E.layer_cycles(d, 7) == 64 + math.ceil(640 / math.ceil(640 / 7)) + 10
    c = _conv(8, 8, 4, 6)
    assert E.layer_cycles(c, 6) == 10 * 10 * 4 + 64 * (6 + 6)
    e = E.estimate_layer(c, 6, E.MUL_AUTO, "DSP48E2")
    assert (e.multipliers, e.dsp, e.lut, e.reuse) == (36, 36, 0, 6)
    sa = E.LayerShape("shiftadd", adders=100, adder_bits=1200, fixed_cycles=500)
    e = E.estimate_layer(sa, None, E.MUL_AUTO, "DSP48E2")
    per_bit = E.cost_tables()["graph"]["lut_per_bit"]   # measured with yosys on whole adder graphs
    assert (e.dsp, e.lut, e.adders, e.cycles, e.multipliers) == (0, round(per_bit * 1200), 100, 500, 0)
    bn = E.LayerShape("fixed_mul", a_bits=8, b_bits=12, fixed_cycles=640)
    assert E.estimate_layer(bn, None, E.MUL_AUTO, "DSP48E2").dsp == 1
    assert E.estimate_layer(bn, None, E.MUL_FABRIC, "DSP48E2").dsp == 0


def test_choose_reuse_fastest_when_it_fits():
    shapes = [_conv(8, 8, 1, 4), _conv(8, 8, 4, 8), _dense(512, 10)]
    r = E.choose_reuse(shapes, [None] * 3, [0] * 3, "DSP48E2", 1000)
    # never below the natural point (n_filt / n_out), never slower than the slowest layer needs
    assert all(x >= s.natural_reuse for x, s in zip(r, shapes))
    t = max(E.layer_cycles(s, x) for s, x in zip(shapes, r))
    assert t == max(E.layer_cycles(s, s.natural_reuse) for s in shapes)
    # the dense layer is not the bottleneck: it gets the fewest multipliers that keep up
    d = shapes[2]
    m = E.multipliers(d.products, r[2])
    assert E.layer_cycles(d, r[2]) <= t
    assert m == 1 or d.read_cycles + math.ceil(d.products / (m - 1)) + d.writes > t
    assert r[2] == E.folds(d.products, r[2])  # reuse is canonical: every fold cycle used


def test_choose_reuse_fits_the_budget_and_equalises():
    shapes = [_conv(16, 16, 16, 16), _conv(16, 16, 16, 16), _conv(8, 8, 16, 32)]
    budget = 100
    r = E.choose_reuse(shapes, [None] * 3, [0] * 3, "DSP48E2", budget)
    dsp = sum(E.estimate_layer(s, x, 0, "DSP48E2").dsp for s, x in zip(shapes, r))
    assert dsp <= budget
    t = max(E.layer_cycles(s, x) for s, x in zip(shapes, r))
    # minimal: one cycle less for the common target does not fit
    tighter = [E.largest_reuse_within(s, t - 1) for s in shapes]
    assert sum(E.estimate_layer(s, x, 0, "DSP48E2").dsp for s, x in zip(shapes, tighter)) > budget
    # the two equal layers get the same reuse
    assert r[0] == r[1]


def test_choose_reuse_keeps_fixed_and_fabric():
    shapes = [_conv(16, 16, 16, 16), _conv(16, 16, 16, 16)]
    r = E.choose_reuse(shapes, [5, None], [0, 0], "DSP48E2", 1000)
    assert r[0] == 5
    # a layer forced to LUTs needs no DSP: the other may use the whole budget
    r = E.choose_reuse(shapes, [None, None], [E.MUL_FABRIC, 0], "DSP48E2", 50)
    assert E.estimate_layer(shapes[1], r[1], 0, "DSP48E2").dsp <= 50


def test_choose_reuse_cannot_fit():
    shapes = [E.LayerShape("fixed_mul", a_bits=8, b_bits=8, fixed_cycles=10) for _ in range(5)] + [_dense(4, 4)]
    with pytest.raises(E.FitError) as ei:
        E.choose_reuse(shapes, [None] * 6, [0] * 6, "DSP48E2", 5)
    assert ei.value.args[0] == 6  # 5 BatchNorm multipliers + 1 for the dense layer at maximum reuse
    with pytest.raises(E.FitError):
        E.choose_reuse([_dense(4, 4)], [2], [0], "DSP48E2", 7)  # a fixed reuse of 2 needs 8


def test_design_throughput():
    d = E.DesignEstimate([E.LayerEstimate(1, 0, 1, 1, 0, 0, 1000, False),
                          E.LayerEstimate(None, 0, 0, 0, 50, 5, 2500, False)], clock_ns=4.0)
    assert (d.dsp, d.lut, d.adders, d.interval_cycles, d.latency_cycles) == (1, 50, 5, 2500, 3500)
    assert d.samples_per_s == pytest.approx(1e9 / (4.0 * 2500))
