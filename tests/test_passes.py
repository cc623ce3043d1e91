"""Each pass: returns a new graph, keeps the input untouched, and changes no output bit."""
from __future__ import annotations

import numpy as np

from qfx_compile.ir.graph import Const, Graph, Node, Tensor
from qfx_compile.ir.interpret import run
from qfx_compile.ir.passes import fold, infer_shapes, khot_terms, run_default_passes, type_accumulators, unify_consts
from qfx_compile.fixed.types import FixedType

TX = FixedType(6, 2, True, "AP_RND", "AP_SAT")


def graph():
    w = Const(np.array([[3, -5, 0], [7, 1, -2]], dtype=np.int64), FixedType(4, 1), np.array([1, 3]),
              k_hot=np.array([2]), digits="csd")
    b = Const(np.array([1, -1], dtype=np.int64), FixedType(4, 2))
    nodes = [Node("q", "quant", ["x"], ["a"], {"out_type": TX}),
             Node("q2", "quant", ["a"], ["a2"], {"out_type": FixedType(10, 3)}),
             Node("d", "dense", ["a2"], ["y"], {"out_type": FixedType(12, 5)}, {"weight": w, "bias": b}),
             Node("r1", "relu", ["y"], ["r"]), Node("r2", "relu", ["r"], ["out"])]
    return Graph("g", ["x"], ["out"], nodes, {"x": Tensor("x", (3,)), **{n: Tensor(n) for n in "a a2 y r out".split()}})


def all_inputs():
    return np.array([[i, j, k] for i in range(-32, 32, 3) for j in range(-32, 32, 5) for k in (-32, 0, 31)])


def test_passes_keep_outputs_and_input_graph():
    g = infer_shapes(graph())
    ref = run(g, all_inputs())
    for p in (fold, unify_consts, type_accumulators, khot_terms, run_default_passes):
        before = repr(g)
        g2 = p(g)
        assert repr(g) == before and g2 is not g
        assert np.array_equal(run(g2, all_inputs()), ref)
    f = fold(g)
    assert [n.op for n in f.nodes] == ["quant", "dense", "relu"]


def test_accumulator_bounds_hold_and_are_tight():
    g = type_accumulators(fold(graph()))
    d = [n for n in g.nodes if n.op == "dense"][0]
    acc = d.attrs["acc_type"]
    # exhaustive: every exact accumulator value lies in acc_type, and the extremes are reached
    x = np.array([[i, j, k] for i in range(TX.raw_min, TX.raw_max + 1, 1) for j in (TX.raw_min, TX.raw_max)
                  for k in (TX.raw_min, TX.raw_max)])
    w = d.params["weight"]
    f = np.asarray(w.frac_bits())
    F = TX.frac_bits + f.max()
    vals = (x[:, None, :] * (w.raw << (f.max() - f)[:, None])[None]).sum(-1) + (np.array([1, -1]) << (F - 2))
    s = F - acc.frac_bits
    assert (vals % (1 << s) == 0).all()
    v = vals >> s
    assert v.min() >= acc.raw_min and v.max() <= acc.raw_max
    assert v.max() > acc.raw_max // 2 or v.min() < acc.raw_min // 2


def test_khot_terms_reconstruct_weights():
    g = khot_terms(graph())
    d = [n for n in g.nodes if n.op == "dense"][0]
    w = d.params["weight"]
    f = w.frac_bits()
    for j, terms in enumerate(d.attrs["terms"]):
        for i in range(3):
            total = sum(s * 2.0 ** e for (ii, s, e) in terms if ii == i)
            assert total == w.raw[j, i] * 2.0 ** -f[j]
    # CSD by hand: row 0: 3 = 4 - 1, -5 = -4 - 1 (4 terms); row 1: 7 = 8 - 1, 1, -2 (4 terms): 3 + 3 adders
    assert [len(t) for t in d.attrs["terms"]] == [4, 4]
    assert d.attrs["adders"] == 6


def test_unify_consts_is_exact():
    g = unify_consts(graph())
    w = [n for n in g.nodes if n.op == "dense"][0].params["weight"]
    assert w.int_bits is None
    assert (w.raw * 2.0 ** -w.type.frac_bits == np.array([[3 / 8, -5 / 8, 0], [7 / 2, 1 / 2, -2 / 2]])).all()
