"""backend.addergraph: every optimized graph equals the integer matrix product, exactly.

The graphs are evaluated here by the test's own interpreter (over the Adder list), on every
input vector where that is few enough, else on random vectors plus the interval corners;
the oracle is numpy's integer ``M @ x``. Also checked: each signal's interval is exactly the
min/max over all inputs (so its width is the smallest), the depth bound holds, sharing never
costs adders, and the graph really shares (fewer adders than per-output trees).
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qfx_compile.backend import addergraph as AG
from qfx_compile.fixed.digits import digit_count, khot_table
from qfx_compile.fixed.types import FixedType


def run(g: AG.Graph, x):
    """The test's own evaluation: every signal's value, then the outputs."""
    v = [int(t) for t in x]
    for k, a in enumerate(g.adders):
        assert a.id == g.n_in + k and a.a < a.id and a.b < a.id
        v.append(v[a.a] - (v[a.b] << a.shift) if a.sub else v[a.a] + (v[a.b] << a.shift))
    out = [0 if o.signal is None else (-1 if o.neg else 1) * (v[o.signal] << o.shift) for o in g.outputs]
    return out, v


def khot_matrix(rng, shape, k, digits, bits=8):
    return rng.choice(khot_table(FixedType(bits, bits, True), k, digits), size=shape)


def check_exact(g, M, lo, hi, xs):
    Mo = np.asarray(M, dtype=object)
    for x in xs:
        out, v = run(g, x)
        assert out == list(Mo @ np.asarray([int(t) for t in x], dtype=object))
        for s, val in enumerate(v):
            assert g.lo[s] <= val <= g.hi[s]
            assert AG.bits(g.lo[s], g.hi[s]) == g.width(s)


def corners_and_random(rng, lo, hi, n=40):
    xs = [list(lo), list(hi)]
    xs += [[int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)] for _ in range(n)]
    xs += [[a if rng.random() < 0.5 else b for a, b in zip(lo, hi)] for _ in range(n)]
    return xs


@pytest.mark.parametrize("digits", ["csd", "binary"])
@pytest.mark.parametrize("signed", [False, True])
def test_exhaustive_small(digits, signed):
    """3 inputs of 3 bits: all 512 vectors, and the intervals are exactly the extremes seen."""
    rng = np.random.default_rng(1)
    lo, hi = ([-4] * 3, [3] * 3) if signed else ([0] * 3, [7] * 3)
    for trial in range(6):
        M = khot_matrix(rng, (5, 3), 2 + trial % 2, digits)
        M[trial % 5] = M[(trial + 1) % 5]
        for share, depth in ((True, None), (True, 2), (False, None)):
            g = AG.optimize_matrix(M, lo, hi, digits=digits, share=share, max_depth=depth)
            xs = list(itertools.product(*[range(a, b + 1) for a, b in zip(lo, hi)]))
            check_exact(g, M, lo, hi, xs)
            seen = np.array([run(g, x)[1] for x in xs])
            assert list(seen.min(axis=0)) == g.lo and list(seen.max(axis=0)) == g.hi


@pytest.mark.parametrize("shape,k,digits", [((24, 10), 2, "csd"), ((16, 16), 1, "csd"), ((32, 32), 3, "binary"),
                                            ((8, 40), 2, "binary"), ((40, 6), 2, "csd")])
@pytest.mark.parametrize("signed", [False, True])
def test_random_khot_matrices(shape, k, digits, signed):
    rng = np.random.default_rng(shape[0] * 7 + shape[1] + k)
    M = khot_matrix(rng, shape, k, digits)
    n_in = shape[1]
    lo, hi = ([-128] * n_in, [127] * n_in) if signed else ([0] * n_in, [255] * n_in)
    base = AG.optimize_matrix(M, lo, hi, digits=digits, share=False)
    g = AG.optimize_matrix(M, lo, hi, digits=digits, tries=2)
    check_exact(g, M, lo, hi, corners_and_random(rng, lo, hi))
    check_exact(base, M, lo, hi, corners_and_random(rng, lo, hi, 5))
    terms = int(digit_count(M, digits).sum())
    nonzero_rows = int((np.abs(M).sum(axis=1) > 0).sum())
    assert base.n_adders == terms - nonzero_rows          # per-output trees: one adder per term beyond the first
    assert g.n_adders < 0.9 * base.n_adders               # sharing pays on every such layer
    for a in g.adders:
        assert a.width == g.width(a.id) and a.cost == max(1, a.width - a.shift)


def test_depth_bound():
    rng = np.random.default_rng(5)
    M = khot_matrix(rng, (24, 24), 2, "csd")
    lo, hi = [0] * 24, [255] * 24
    free = AG.optimize_matrix(M, lo, hi)
    rows = AG.digit_rows(M)
    own = [max(0, (len(r) - 1).bit_length()) for r in rows]   # each output's own minimum depth
    for bound in (min(own), max(own), max(own) + 2):
        g = AG.optimize_matrix(M, lo, hi, max_depth=bound)
        check_exact(g, M, lo, hi, corners_and_random(rng, lo, hi, 10))
        for o, m in zip(g.outputs, own):
            assert g.depth[o.signal] <= max(bound, m)
        assert g.n_adders >= free.n_adders or g.max_depth <= free.max_depth


def _row_mantissas(w):
    """Integer rows of a float64 weight matrix on dyadic grids: each row times 2^f_j, f_j as small as exact."""
    w = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    rows = []
    for r in w:
        f = 0
        while not np.all(np.ldexp(r, f) == np.round(np.ldexp(r, f))):
            f += 1
        rows.append([int(v) for v in np.round(np.ldexp(r, f))])
    return np.array(rows, dtype=np.int64)


def test_zoo_khot_layers():
    """K-hot layers of the zoo's K-hot models (per-channel binary points): exact, and sharing pays."""
    pytest.importorskip("torch")
    from qfx_compile.testing.models import khot
    for k, digits in ((2, "csd"), (3, "binary"), (1, "csd")):
        model, _ = khot(k, digits)
        mats = [_row_mantissas(m.quantized_weight().numpy()) for m in (model.conv1, model.conv2, model.fc)]
        rng = np.random.default_rng(k)
        for M in mats:
            assert int(digit_count(M, digits).max()) <= k
            n_in = M.shape[1]
            lo, hi = [-128] * n_in, [127] * n_in
            ag = AG.optimize_matrix(M, lo, hi, digits=digits)
            check_exact(ag, M, lo, hi, corners_and_random(rng, lo, hi, 20))
            assert ag.n_adders <= AG.optimize_matrix(M, lo, hi, digits=digits, share=False).n_adders


terms_st = st.lists(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6), st.sampled_from([1, -1])),
                             max_size=12), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(rows=terms_st, signed=st.booleans(), width=st.integers(1, 9), depth=st.one_of(st.none(), st.integers(1, 5)),
       share=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_any_terms(rows, signed, width, depth, share, seed):
    """Any term lists (duplicate (input, shift) pairs dropped): the graph is the exact sum."""
    rows = [list({(i, e): s for i, e, s in r}.items()) for r in rows]
    rows = [[(i, e, s) for (i, e), s in r] for r in rows]
    n_in = 6
    lo, hi = ([-(1 << (width - 1))] * n_in, [(1 << (width - 1)) - 1] * n_in) if signed else \
        ([0] * n_in, [(1 << width) - 1] * n_in)
    M = np.zeros((len(rows), n_in), dtype=object)
    for j, r in enumerate(rows):
        for i, e, s in r:
            M[j, i] += s << e
    g = AG.optimize(rows, lo, hi, share=share, max_depth=depth)
    check_exact(g, M, lo, hi, corners_and_random(np.random.default_rng(seed), lo, hi, 8))
    assert g.n_adders <= sum(max(0, len(r) - 1) for r in rows)


def test_bad_terms_are_refused():
    with pytest.raises(ValueError, match="bad term"):
        AG.optimize([[(0, 0, 1), (0, 0, -1)]], [0], [1])
    with pytest.raises(ValueError, match="bad term"):
        AG.optimize([[(3, 0, 1)]], [0], [1])


@pytest.mark.parametrize("digits", ["csd", "binary"])
def test_trained_khot_layer(digits):
    """A K=2 layer trained on scikit-learn's digits (64 -> 10, a few steps): exact, and sharing pays."""
    torch = pytest.importorskip("torch")
    datasets = pytest.importorskip("sklearn.datasets")
    from qfx_compile.qfx import nn as qnn
    torch.manual_seed(0)
    x, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x[:512] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[:512])
    layer = qnn.Linear(64, 10, k_hot=2, digits=digits, output_type="ap_fixed<12,6,AP_RND,AP_SAT>")
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    layer.train()
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y)
        loss.backward()
        opt.step()
    M = _row_mantissas(layer.quantized_weight().numpy())
    assert int(digit_count(M, digits).max()) <= 2 and np.count_nonzero(M) > 100
    lo, hi = [0] * 64, [255] * 64
    g = AG.optimize_matrix(M, lo, hi, digits=digits)
    check_exact(g, M, lo, hi, corners_and_random(np.random.default_rng(0), lo, hi, 30))
    assert g.n_adders < 0.85 * AG.optimize_matrix(M, lo, hi, digits=digits, share=False).n_adders
