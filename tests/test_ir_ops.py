"""Per-op integer interpreter vs an independent Fraction computation (small random cases)."""
from __future__ import annotations

import math
from fractions import Fraction as Fr

import numpy as np
import pytest

from qfx_compile.ir.graph import Const, Graph, Node, Tensor
from qfx_compile.ir.interpret import run, to_fractions
from qfx_compile.ir.ops import REGISTRY
from qfx_compile.ir.ops.avgpool import reciprocal
from qfx_compile.fixed.types import FixedType, ROUNDING_MODES

SAT = ("AP_SAT", "AP_WRAP", "AP_SAT_SYM", "AP_SAT_ZERO")


def fr_cast(v: Fr, t: FixedType) -> int:
    """Independent exact cast of a Fraction to t's mantissa (rounding then overflow)."""
    q = v * 2 ** t.frac_bits
    fl = math.floor(q)
    rem = q - fl
    r = t.rounding
    if rem == 0:
        m = fl
    elif r == "AP_TRN":
        m = fl
    elif r == "AP_TRN_ZERO":
        m = fl if q > 0 else fl + 1
    else:
        half = Fr(1, 2)
        if rem != half:
            m = fl + (rem > half)
        else:
            m = {"AP_RND": fl + 1, "AP_RND_MIN_INF": fl, "AP_RND_ZERO": fl + (q < 0),
                 "AP_RND_INF": fl + (q > 0), "AP_RND_CONV": fl + (fl % 2)}[r]
    lo, hi = t.raw_min, t.raw_max
    if t.overflow == "AP_SAT_SYM" and t.signed:
        lo = -hi
    if lo <= m <= hi:
        return m
    o = t.overflow
    if o == "AP_SAT":
        return min(max(m, lo), hi)
    if o == "AP_SAT_SYM":
        return min(max(m, lo), hi)
    if o == "AP_SAT_ZERO":
        return 0
    return (m - t.raw_min) % (1 << t.width) + t.raw_min


def rand_type(rng, wmax=10, signed=None):
    w = int(rng.integers(2, wmax))
    return FixedType(w, int(rng.integers(-2, w + 3)), bool(rng.integers(2)) if signed is None else signed,
                     ROUNDING_MODES[rng.integers(len(ROUNDING_MODES))], SAT[rng.integers(4)])


def rand_raw(rng, t, shape):
    return rng.integers(t.raw_min, t.raw_max + 1, size=shape, dtype=np.int64)


def rand_const(rng, shape, per_channel):
    t = rand_type(rng, 8)
    ib = rng.integers(-2, 6, size=shape[0]) if per_channel else None
    return Const(rand_raw(rng, t, shape), t, ib)


def const_vals(c: Const):
    f = np.broadcast_to(c.frac_bits(), (c.raw.shape[0],))
    return [[Fr(int(m)) / 2 ** int(f[j]) for m in np.ravel(c.raw[j])] for j in range(c.raw.shape[0])]


def one_node(node, in_shape, in_type, extra_inputs=()):
    tensors = {"x": Tensor("x", in_shape, in_type), node.outputs[0]: Tensor(node.outputs[0])}
    for n, s, t in extra_inputs:
        tensors[n] = Tensor(n, s, t)
    return Graph("g", ["x"], node.outputs, [node], tensors)


@pytest.mark.parametrize("seed", range(30))
def test_dense(seed):
    rng = np.random.default_rng(seed)
    tx, to = rand_type(rng), rand_type(rng)
    n_in, n_out = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    w = rand_const(rng, (n_out, n_in), seed % 2 == 0)
    b = rand_const(rng, (n_out,), seed % 3 == 0) if seed % 4 else None
    node = Node("d", "dense", ["x"], ["y"], {"out_type": to}, {"weight": w} | ({"bias": b} if b else {}))
    x = rand_raw(rng, tx, (4, n_in))
    got = run(one_node(node, (n_in,), tx), x)
    wv, bv = const_vals(w), (const_vals(b) if b else None)
    for s in range(4):
        for j in range(n_out):
            acc = sum(Fr(int(x[s, i])) / 2 ** tx.frac_bits * wv[j][i] for i in range(n_in))
            acc += bv[j][0] if bv else 0
            assert got[s, j] == fr_cast(acc, to)


@pytest.mark.parametrize("seed", range(12))
def test_conv2d(seed):
    rng = np.random.default_rng(100 + seed)
    tx, to = rand_type(rng), rand_type(rng)
    c, o, h, wd = int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(3, 6)), int(rng.integers(3, 6))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    pads = tuple(int(v) for v in rng.integers(0, 2, size=4))
    w = rand_const(rng, (o, c, kh, kw), seed % 2 == 0)
    b = rand_const(rng, (o,), True)
    node = Node("c", "conv2d", ["x"], ["y"], {"out_type": to, "kernel": (kh, kw), "stride": (sh, sw),
                                               "pads": pads}, {"weight": w, "bias": b})
    x = rand_raw(rng, tx, (2, c, h, wd))
    got = run(one_node(node, (c, h, wd), tx), x)
    xv = to_fractions(x, tx)
    xp = np.full((2, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]), Fr(0), dtype=object)
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = xv
    wv, bv = const_vals(w), const_vals(b)
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    assert got.shape == (2, o, ho, wo)
    for s in range(2):
        for j in range(o):
            wj = np.array(wv[j], dtype=object).reshape(c, kh, kw)
            for yy in range(ho):
                for xx in range(wo):
                    win = xp[s, :, yy * sh:yy * sh + kh, xx * sw:xx * sw + kw]
                    acc = sum((win * wj).ravel(), Fr(0)) + bv[j][0]
                    assert got[s, j, yy, xx] == fr_cast(acc, to)


@pytest.mark.parametrize("seed", range(20))
def test_batchnorm_add_quant(seed):
    rng = np.random.default_rng(200 + seed)
    tx, to, ty = rand_type(rng), rand_type(rng), rand_type(rng)
    a, b = rand_const(rng, (3,), True), rand_const(rng, (3,), seed % 2 == 0)
    x = rand_raw(rng, tx, (3, 3, 2, 2))
    node = Node("bn", "batchnorm", ["x"], ["y"], {"out_type": to}, {"scale": a, "shift": b})
    got = run(one_node(node, (3, 2, 2), tx), x)
    av, bv = const_vals(a), const_vals(b)
    xv = to_fractions(x, tx)
    for idx in np.ndindex(x.shape):
        assert got[idx] == fr_cast(xv[idx] * av[idx[1]][0] + bv[idx[1]][0], to)
    q = Node("q", "quant", ["x"], ["y"], {"out_type": to})
    got = run(one_node(q, (3, 2, 2), tx), x)
    for idx in np.ndindex(x.shape):
        assert got[idx] == fr_cast(xv[idx], to)
    # add: two inputs of different types
    quant_y = Node("qy", "quant", ["x"], ["y0"], {"out_type": ty})
    add = Node("a", "add", ["y0", "x"], ["z"], {"out_type": to})
    g = Graph("g", ["x"], ["z"], [quant_y, add], {"x": Tensor("x", (3, 2, 2), tx), "y0": Tensor("y0"),
                                                  "z": Tensor("z")})
    got = run(g, x)
    yv = [fr_cast(v, ty) for v in xv.ravel()]
    for k, idx in enumerate(np.ndindex(x.shape)):
        assert got[idx] == fr_cast(Fr(yv[k]) / 2 ** ty.frac_bits + xv[idx], to)


@pytest.mark.parametrize("seed", range(12))
def test_pools_relu_clip_flatten(seed):
    rng = np.random.default_rng(300 + seed)
    tx, to = rand_type(rng), rand_type(rng, 14)
    x = rand_raw(rng, tx, (2, 2, 4, 6))
    xv = to_fractions(x, tx)
    k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    rb = int(rng.integers(2, 20))
    mp = Node("m", "maxpool", ["x"], ["y"], {"kernel": k, "stride": s, "pads": (0, 0, 0, 0)})
    ap = Node("a", "avgpool", ["x"], ["y"], {"kernel": k, "stride": s, "pads": (0, 0, 0, 0),
                                             "out_type": to, "recip_bits": rb})
    gp = Node("g", "global_avgpool", ["x"], ["y"], {"out_type": to, "recip_bits": rb})
    ho, wo = (4 - k[0]) // s[0] + 1, (6 - k[1]) // s[1] + 1
    gm, ga, gg = (run(one_node(n, (2, 4, 6), tx), x) for n in (mp, ap, gp))
    n = k[0] * k[1]
    p = n.bit_length() - 1
    r = fr_cast(Fr(1, n), FixedType(rb, 1 - p, False, "AP_RND_CONV", "AP_SAT"))
    r = Fr(r) / 2 ** (rb - 1 + p)
    assert reciprocal(n, rb).type.value_of_raw(int(reciprocal(n, rb).raw)) == r
    for b_, c in np.ndindex(2, 2):
        for yy in range(ho):
            for xx in range(wo):
                win = x[b_, c, yy * s[0]:yy * s[0] + k[0], xx * s[1]:xx * s[1] + k[1]]
                assert gm[b_, c, yy, xx] == win.max()
                S = sum(xv[b_, c, yy * s[0]:yy * s[0] + k[0], xx * s[1]:xx * s[1] + k[1]].ravel(), Fr(0))
                assert ga[b_, c, yy, xx] == fr_cast(S * r, to)
        n2 = 24
        p2 = n2.bit_length() - 1
        r2 = Fr(fr_cast(Fr(1, n2), FixedType(rb, 1 - p2, False, "AP_RND_CONV", "AP_SAT"))) / 2 ** (rb - 1 + p2)
        assert gg[b_, c, 0, 0] == fr_cast(sum(xv[b_, c].ravel(), Fr(0)) * r2, to)
    assert (run(one_node(Node("r", "relu", ["x"], ["y"]), (2, 4, 6), tx), x) == np.maximum(x, 0)).all()
    lo, hi = sorted(int(v) for v in rng.integers(tx.raw_min, tx.raw_max + 1, size=2))
    got = run(one_node(Node("c", "clip", ["x"], ["y"], {"lo": lo, "hi": hi}), (2, 4, 6), tx), x)
    assert (got == np.clip(x, lo, hi)).all()
    got = run(one_node(Node("f", "flatten", ["x"], ["y"]), (2, 4, 6), tx), x)
    assert (got == x.reshape(2, -1)).all()


def test_wide_values_use_python_ints():
    tx = FixedType(60, 10)
    to = FixedType(200, 100)
    w = Const(np.array([[(1 << 61) - 1, -(1 << 61)]], dtype=np.int64), FixedType(63, 3))
    node = Node("d", "dense", ["x"], ["y"], {"out_type": to}, {"weight": w})
    x = np.array([[tx.raw_max, tx.raw_min]], dtype=np.int64)
    got = run(one_node(node, (2,), tx), x)
    exact = (Fr(tx.raw_max) * ((1 << 61) - 1) + Fr(tx.raw_min) * -(1 << 61)) / 2 ** (tx.frac_bits + 60)
    assert got[0, 0] == fr_cast(exact, to)


def test_registry_declares_every_op():
    assert set(REGISTRY) == {"quant", "dense", "conv2d", "batchnorm", "relu", "clip", "add", "maxpool", "avgpool",
                             "global_avgpool", "flatten", "concat", "pad", "upsample", "multithreshold", "table",
                             "softmax", "leaky_relu", "argmax", "merge_rows"}
    for op in REGISTRY.values():
        assert op.doc and callable(op.shape) and callable(op.type) and callable(op.run)
