"""SP2 digits (Mix and Match sums of two powers of two): level set, projection, membership, training, csim.

The references here are written from the paper's definition of the m-bit code
(a sign bit, an m1-bit index of q1, an m2-bit index of q2; index i > 0 means
2**-i, index 0 means 0), evaluated with exact fractions, not from the table
code under test.
"""
import itertools
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from qfx_compile.fixed import digits as D
from qfx_compile.fixed.types import FixedType, raw_range


def code_levels(width: int, signed: bool, k: int = 2) -> set[int]:
    """Mantissas of every ``width``-bit SP2 code word on a ``width``-bit grid (reference)."""
    m = width
    m1 = -(-(m - 1) // 2)          # ceil((m-1)/2): m1 + m2 + 1 = m, m1 >= m2
    m2 = m - 1 - m1
    lo, hi = raw_range(width, signed)
    # the type's binary point is the scale: the level 1 = q1 + q2 with q1 = q2 = 1/2 sits at
    # the power of two just above the positive range (2**(W-1) signed, 2**W unsigned)
    scale = 2 ** (width - 1 if signed else width)
    out = set()
    for s, i, j in itertools.product((1, -1) if signed else (1,), range(2 ** m1), range(2 ** m2 if k == 2 else 1)):
        q1 = Fraction(1, 2 ** i) if i else Fraction(0)
        q2 = Fraction(1, 2 ** j) if j else Fraction(0)
        v = s * (q1 + q2) * scale
        if v.denominator == 1 and abs(v) <= hi and (not signed or -abs(v) >= lo):
            out.add(int(v))
    return out


@pytest.mark.parametrize("width", range(1, 12))
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_table_equals_the_code(width, signed, k):
    tab = D.sp2_table(width, signed, k)
    assert tab.tolist() == sorted(code_levels(width, signed, k))
    assert 0 in tab.tolist()


def test_four_bit_levels_from_the_paper():
    # 4-bit SP2 (m1 = 2, m2 = 1): {0, 1/8, 1/4, 1/2, 5/8, 3/4, 1}; on ap_fixed<4,1> (lsb 1/8) the level 1 is
    # beyond the range, the rest are mantissas 0, 1, 2, 4, 5, 6
    assert D.sp2_split(4) == (2, 1)
    assert D.sp2_table(4, True).tolist() == [-6, -5, -4, -2, -1, 0, 1, 2, 4, 5, 6]
    assert D.khot_table(FixedType(4, 1, True), 2, "sp2").tolist() == [-6, -5, -4, -2, -1, 0, 1, 2, 4, 5, 6]
    assert D.khot_table(FixedType(4, 1, True), 1, "sp2").tolist() == [-4, -2, -1, 0, 1, 2, 4]


@pytest.mark.parametrize("width", [4, 5, 6, 8, 10])
def test_sp2_is_same_sign_two_hot_not_csd(width):
    sp2 = set(D.sp2_table(width, True).tolist())
    binary = set(D.khot_table(FixedType(width, 1, True), 2, "binary").tolist())
    csd = set(D.khot_table(FixedType(width, 1, True), 2, "csd").tolist())
    assert sp2 <= binary
    assert sp2 != csd  # e.g. 7 = 8 - 1 is CSD 2-hot, never SP2
    assert 7 not in sp2 and 7 in csd
    for m in sp2:
        terms = D.digits_of(m, "sp2")
        assert sum(s * 2 ** e for s, e in terms) == m and len(terms) <= 2
        assert len({s for s, _ in terms}) <= 1


@pytest.mark.parametrize("width", [4, 6, 9])
def test_membership_is_exact(width):
    lo, hi = raw_range(width, True)
    grid = np.arange(lo, hi + 1)
    for k in (1, 2):
        ref = code_levels(width, True, k)
        got = D.is_khot(grid, k, "sp2", width, True)
        assert [int(m) for m in grid[got]] == sorted(ref)
    # without a width the count is only the same-sign digit count (a necessary condition)
    assert (D.digit_count(grid, "sp2") == D.popcount(grid)).all()


def _nearest(y: Fraction, levels) -> int:
    """Nearest level to y by exhaustive search; ties to the smaller magnitude (reference)."""
    return min(sorted(levels), key=lambda v: (abs(Fraction(v) - y), abs(v)))


@pytest.mark.parametrize("width", [3, 4, 6, 8])
def test_projection_against_brute_force(width):
    levels = code_levels(width, True)
    lo, hi = raw_range(width, True)
    # every half and quarter point (all midpoints and ties), beyond the range, and random reals
    ys = [Fraction(n, 4) for n in range(4 * (lo - 3), 4 * (hi + 3) + 1)]
    rng = np.random.default_rng(width)
    ys += [Fraction(float(v)) for v in rng.uniform(lo - 4, hi + 4, 300)]
    got = D.project_raw(np.array([float(y) for y in ys]), D.khot_table(FixedType(width, 2, True), 2, "sp2"))
    assert [int(g) for g in got] == [_nearest(y, levels) for y in ys]


def test_bad_k_and_flavour():
    with pytest.raises(ValueError, match="K must be 1 or 2"):
        D.check_khot(3, "sp2", 8)
    with pytest.raises(ValueError, match="digits must be one of"):
        D.check_khot(2, "sp3", 8)


# ------------------------------------------------------------ training side and the compiler
torch = pytest.importorskip("torch")


def _small_model():
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


def test_qfx_config_sp2_trains_and_exports(tmp_path):
    from qfx_compile import qfx
    from qfx_compile.frontend import load_model

    model = qfx.quantize_model(_small_model(),
                               qfx.QFXConfig(k_hot=2, digits="sp2", weight="ap_fixed<5,1,AP_RND_CONV,AP_SAT>"))
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    qfx.calibrate(model, x)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(x).square().mean()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    model.eval()
    path = qfx.export_onnx(model, x[:2], str(tmp_path / "sp2.onnx"), vectors=8)
    g = load_model(path)
    dense = [n for n in g.nodes if n.op == "dense"]
    assert dense
    ref = code_levels(5, True)
    for n in dense:
        w = n.params["weight"]
        assert w.digits == "sp2"
        assert set(np.asarray(w.raw).reshape(-1).tolist()) <= ref


def test_frontend_rejects_weights_outside_the_code(tmp_path):
    """A CSD 2-hot model relabelled as SP2 has weights outside the code: the frontend says so."""
    import onnx
    from qfx_compile.frontend import ModelError, load_model
    from qfx_compile.testing.models import export_zoo_model

    p = Path(export_zoo_model("khot_csd", tmp_path, vectors=2))
    m = onnx.load(str(p))
    n_changed = 0
    for node in list(m.graph.node) + [n for f in m.functions for n in f.node]:
        for a in node.attribute:
            if a.name == "digits":
                a.s = b"sp2"
                n_changed += 1
    assert n_changed
    bad = tmp_path / "relabelled.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ModelError, match="not .*-hot \\(sp2\\)"):
        load_model(str(bad))


@pytest.mark.slow
def test_zoo_sp2_csim_bit_exact(tmp_path):
    from qfx_compile.cli import main
    from qfx_compile.testing.models import export_zoo_model

    p = export_zoo_model("khot_sp2", tmp_path, vectors=100)
    out = tmp_path / "prj"
    assert main([p, "-t", "ultra96", "-o", str(out), "--csim", "-q"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert sum(bool(L["shift_add"]) for L in rep["layers"]) == 3  # conv1, conv2, fc: no multiplier
    assert rep["csim"]["failed"] == 0 and rep["csim"]["passed"] == 100
