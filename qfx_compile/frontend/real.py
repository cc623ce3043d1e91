"""Exact real-valued results (float scales, float BatchNorm, unquantized biases) and how they become IR.

A :class:`~.values.Real` is an IR tensor plus a per-channel chain of monotone steps
(``ir.exact_real``). Linear layers on it get integer weights (each output row of
``W * A`` divided by its exact rational gcd, so the accumulator is an integer
combination and the row's factor moves into the chain); a quantizer on it becomes
the exact step function of the accumulator (``multithreshold``, or ``batchnorm``
as an integer multiply and shift when that costs less); on the float graph input
it becomes the input boundary; at the graph output a dyadic affine is computed
exactly in a wide enough type.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..fixed.types import FixedType
from ..ir.exact_real import (ONE, Q2, ZERO, InputMap, Quantizer, chain_channels, compose_affine, eval_chain,
                             eval_chain_float, fit_mul_shift, step_function)
from ..ir.graph import Const, Node, Tensor
from ..ir.passes.accumulators import add_acc, batchnorm_acc, linear_acc, sum_acc
from .values import Act, CFixed, CFloat, Pending, Real


def fresh(r, base: str) -> str:
    name, k = base, 1
    while name in r.tensors or name in r.vals or name in r.file_names:
        k += 1
        name = f"{base}/{k}"
    return name


def exact_values(r, c, what) -> np.ndarray:
    """A constant's exact values as an object array of Fractions."""
    if isinstance(c, CFloat):
        a = np.asarray(c.arr)
        return np.array([Fraction(int(v)) if a.dtype.kind in "iu" else Fraction(float(v)) for v in a.ravel()],
                        dtype=object).reshape(a.shape)
    if isinstance(c, CFixed):
        f = np.broadcast_to(c.frac, np.shape(c.raw))
        return np.array([Fraction(int(m)) / Fraction(2) ** int(fb) for m, fb in zip(np.asarray(c.raw).ravel(),
                                                                                    f.ravel())],
                        dtype=object).reshape(np.shape(c.raw))
    raise r.err(f"{what} must be a constant")


def chan_vals(r, c, shape, what, vector=False) -> list:
    """A constant acting per channel (axis 0 of an activation of ``shape``) as Q2 values: one or C.

    ``vector``: the constant is a per-channel vector by definition (BatchNormalization's (C,) inputs).
    """
    v = exact_values(r, c, what)
    if v.size == 1:
        return [Q2(v.reshape(-1)[0])]
    ch = shape[0]
    ok = {(ch,), (1, ch)} if len(shape) == 1 or vector else {(ch, 1, 1), (1, ch, 1, 1)}
    if tuple(v.shape) not in ok:
        raise r.err(f"{what} of shape {tuple(v.shape)} does not act per channel on an activation of shape "
                    f"{tuple(shape)} (expected one of {sorted(ok)})")
    return [Q2(x) for x in v.reshape(-1)]


def as_real(r, v) -> Real:
    """Any activation-like value as a Real (a pending exact result is emitted in its exact type)."""
    if isinstance(v, Real):
        return v
    if isinstance(v, Act):
        return Real(v, [], v.name)
    if isinstance(v, Pending):
        node = v.node
        tx = [r.tensors[i].type for i in node.inputs]
        if node.op in ("dense", "conv2d"):
            t = linear_acc(node.params["weight"], node.params.get("bias"), tx[0])
        elif node.op == "batchnorm":
            t = batchnorm_acc(node.params["scale"], node.params["shift"], tx[0])
        elif node.op == "add":
            t = add_acc(tx[0], tx[1])
        elif node.op in ("avgpool", "global_avgpool"):
            from ..fixed.types import reciprocal_type
            shp = r.tensors[node.inputs[0]].shape
            n = node.attrs["kernel"][0] * node.attrs["kernel"][1] if node.op == "avgpool" else shp[1] * shp[2]
            t = sum_acc(tx[0], n).mul(reciprocal_type(n, node.attrs["recip_bits"]))
        else:
            raise r.err(f"internal: no exact type for {node.op}")
        mid = fresh(r, v.onnx_name + "/exact")
        n2 = Node(r.node_name(node.name), node.op, list(node.inputs), [mid], dict(node.attrs, out_type=t),
                  dict(node.params))
        r.nodes.append(n2)
        r.tensors[mid] = Tensor(mid)
        r.set_act(n2, mid)
        act = r.vals[mid]
        return Real(act, [("relu",)] if v.relu_out is not None else [], v.onnx_name)
    raise r.err("this input must be an activation, not a constant")


def real_to_act(r, x: Real) -> Act | None:
    """The Real as a typed activation when its chain is the identity (or a ReLU of it); else None."""
    if x.act.type is None:
        return None
    steps = [s for s in x.chain if not (s[0] == "affine" and all(a.cmp(1) == 0 for a in s[1])
                                           and all(b.sign() == 0 for b in s[2]))]
    if not steps:
        return x.act
    if all(s[0] == "relu" for s in steps):
        out = fresh(r, x.onnx_name + "/relu")
        r.set_act(r.emit("relu", [x.act.name], out, name=x.onnx_name + "/relu"), out)
        return r.vals[out]
    return None


def affine(r, out, x: Real, A=None, B=None):
    n = len(A or B or [0])
    r.vals[out] = Real(x.act, x.chain + [("affine", A or [ONE] * n, B or [ZERO] * n)], r.cur.name or out)


def _rat_gcd(vals) -> Fraction:
    nz = [v for v in vals if v != 0]
    if not nz:
        return Fraction(1)
    den = 1
    for v in nz:
        den = den * v.denominator // math.gcd(den, v.denominator)
    g = 0
    for v in nz:
        g = math.gcd(g, int(v * den))
    return Fraction(g, den)


def dyadic_parts(r, c, what):
    """A constant as exact ``mant * 2**ex`` (mant: object array of Python ints, odd or 0; ex: int64 array)."""
    if isinstance(c, CFloat):
        a = np.asarray(c.arr)
        if a.dtype.kind in "iu":
            mant, ex = a.astype(np.int64), np.zeros(a.shape, np.int64)
        else:
            m, e = np.frexp(a.astype(np.float64))
            mant, ex = (m * 2.0 ** 53).astype(np.int64), e.astype(np.int64) - 53
    elif isinstance(c, CFixed):
        mant = np.asarray(c.raw)
        ex = -np.broadcast_to(np.asarray(c.frac, dtype=np.int64), mant.shape).astype(np.int64)
    else:
        raise r.err(f"{what} must be a constant")
    mant = np.array(mant.tolist(), dtype=object).reshape(mant.shape) if mant.dtype != object else mant
    tz = np.vectorize(lambda v: (v & -v).bit_length() - 1 if v else 0, otypes=[np.int64])(mant) if mant.size \
        else np.zeros(mant.shape, np.int64)
    return mant >> tz.astype(object), ex + tz


def real_linear(r, out, x, Wc, bias, op: str, attrs: dict):
    """``sum W x + bias`` of a Real ``x``: ``Wc`` the constant weight (O, I) or (O, C, KH, KW); bias exact (O,)."""
    x = as_real(r, x)
    if x.act.type is None:
        raise r.err("the float graph input reaches this layer without a quantizer; quantize it first, or give "
                    "the input type (--input-type / input_type=, e.g. ap_fixed<16,6>)")
    ab = compose_affine(x.chain)
    if ab is None:
        raise r.err(f"the input {x.onnx_name!r} is a ReLU of a float result without a quantizer between; put a "
                    f"Quant before this layer")
    A, B = ab
    if not all(a.rational and b.rational for a, b in zip(A, B)):
        raise r.err(f"the input {x.onnx_name!r} is a float BatchNorm result (an irrational scale) that no "
                    f"integer weight can take; put a Quant before this layer")
    mant, ex = dyadic_parts(r, Wc, "weight")
    if np.ndim(mant) < 2:
        raise r.err(f"the weight must be (outputs, inputs) or (outputs, channels, kh, kw), got shape "
                    f"{tuple(np.shape(mant))}")
    mant, ex = np.asarray(mant, dtype=object), np.asarray(ex)
    cin, o = mant.shape[1], mant.shape[0]
    if len(A) not in (1, cin) or len(B) not in (1, cin):
        raise r.err(f"a per-channel scale of {len(A)} entries does not match the {cin} inputs")
    a_in = [a.p for a in (A if len(A) == cin else A * cin)]
    b_in = [b.p for b in (B if len(B) == cin else B * cin)]
    bshape = (1, cin) + (1,) * (mant.ndim - 2)
    if all(a.denominator & (a.denominator - 1) == 0 for a in a_in):
        # dyadic input scales (float scales are): integer arithmetic, one exponent per row
        an = np.array([a.numerator for a in a_in], dtype=object).reshape(bshape)
        ae = np.array([-(a.denominator.bit_length() - 1) for a in a_in], dtype=np.int64).reshape(bshape)
        pm = (mant * an).reshape(o, -1)
        pe = (ex + ae).reshape(o, -1)
        rows, g = [], []
        for j in range(o):
            nz = [k for k, v in enumerate(pm[j]) if v]
            if not nz:
                rows.append([0] * pm.shape[1])
                g.append(Fraction(1))
                continue
            e0 = int(min(pe[j][k] for k in nz))
            ints_j = [int(v) << int(e - e0) if v else 0 for v, e in zip(pm[j], pe[j])]
            G = math.gcd(*ints_j)
            rows.append([v // G for v in ints_j])
            g.append(Fraction(G) * Fraction(2) ** e0)
        ints = np.array(rows, dtype=object).reshape(mant.shape)
        W = None
    else:
        W = np.array([Fraction(int(m)) * Fraction(2) ** int(e) for m, e in zip(mant.ravel(), ex.ravel())],
                     dtype=object).reshape(mant.shape)
        P = W * np.array(a_in, dtype=object).reshape(bshape)
        prow = P.reshape(o, -1)
        g = [_rat_gcd(prow[j]) for j in range(o)]
        ints = np.array([[int(v / g[j]) for v in prow[j]] for j in range(o)], dtype=object).reshape(P.shape)
    if any(b != 0 for b in b_in):
        if W is None:
            W = np.array([Fraction(int(m)) * Fraction(2) ** int(e) for m, e in zip(mant.ravel(), ex.ravel())],
                         dtype=object).reshape(mant.shape)
        off = list((W * np.array(b_in, dtype=object).reshape(bshape)).reshape(o, -1).sum(axis=1))
    else:
        off = [Fraction(0)] * o
    if op == "conv2d" and any(attrs.get("pads", (0,) * 4)) and any(b != 0 for b in b_in):
        raise r.err("zero padding of an input with a zero point (a nonzero offset) is not the padding of its "
                    "codes; use a zero point of 0 or no padding")
    if bias is not None:
        if len(bias) != o:
            raise r.err(f"bias has {len(bias)} values for {o} outputs")
        off = [Fraction(a) + Fraction(b) for a, b in zip(off, bias)]
    lo, hi = int(min(ints.ravel(), default=0)), int(max(ints.ravel(), default=0))
    wt = FixedType.for_raw_range(min(lo, 0), max(hi, 0), 0, signed=True)
    raw = ints.astype(np.int64) if wt.width <= 62 else ints
    w = Const(raw, wt)
    acc_t = linear_acc(w, None, x.act.type)
    mid = fresh(r, (r.cur.name or out) + "/acc")
    node = r.emit(op, [x.act.name], mid, dict(attrs, out_type=acc_t), {"weight": w})
    r.set_act(node, mid)
    r.vals[out] = Real(r.vals[mid], [("affine", [Q2(v) for v in g], [Q2(Fraction(v)) for v in off])],
                       r.cur.name or out)


def _codes_type(q: Quantizer, width: int, signed: bool):
    """The IR type of the codes, and whether the quantizer's value IS that type (a power-of-two grid)."""
    A, B = q.value_affine(q.n_channels())
    if not q.bipolar and len(A) == 1 and all(b.sign() == 0 for b in B) and A[0].rational and A[0].p > 0:
        p = A[0].p
        if p.numerator == 1 and p.denominator & (p.denominator - 1) == 0:
            return FixedType(width, width - (p.denominator.bit_length() - 1), signed), True
        if p.denominator == 1 and p.numerator & (p.numerator - 1) == 0:
            return FixedType(width, width + (p.numerator.bit_length() - 1), signed), True
    return FixedType(width, width, signed), False


def real_quant(r, out, x: Real, q: Quantizer, width: int, signed: bool):
    """A quantizer on a Real: the input boundary, or the exact step function of the integer tensor."""
    shape = x.shape
    C = max(chain_channels(x.chain), q.n_channels())
    if C > 1 and C != shape[0]:
        raise r.err(f"{C} per-channel values do not match the {shape[0]} channels of the input")
    ct, direct = _codes_type(q, width, signed)
    name = r.cur.name or out
    if x.act.type is None:  # the input boundary: the hardware reads the codes, predict() computes them exactly
        codes = (-1, 1, 2) if q.bipolar else (ct.raw_min if q.qmin is None else q.qmin,
                                              ct.raw_max if q.qmax is None else q.qmax, 1)
        node = r.emit("quant", [x.act.name], fresh(r, out) if not direct else out,
                      {"out_type": ct, "input_map": InputMap(list(x.chain), q, C), "input_codes": codes})
        o = node.outputs[0]
        r.set_act(node, o)
        if not direct:
            A, B = q.value_affine(C)
            r.vals[out] = Real(r.vals[o], [("affine", A, B)], name)
        return
    tx = x.act.type
    F = tx.frac_bits
    unit = Fraction(1, 2 ** F) if F >= 0 else Fraction(2 ** -F)

    if not q.pre_round:  # affine segments between ReLUs, composed once per channel; the last one folded into
        segs, cur = [], []  # the quantizer's t = (y/scale + zeropt)/div: exact, a few Q2 operations per call
        for st in x.chain:
            if st[0] == "relu":
                segs.append(cur)
                cur = []
            else:
                cur.append(st)
        segs.append(cur)

        comp = [compose_affine(sg) if sg else ([ONE], [ZERO]) for sg in segs]

        def seg_ab(k, c):
            A_, B_ = comp[k]
            a, b = A_[c if len(A_) > 1 else 0], B_[c if len(B_) > 1 else 0]
            return (a * unit if k == 0 else a), b

        pre = [[seg_ab(k, c) for k in range(len(segs) - 1)] for c in range(C)]
        last = [q.t_affine(*seg_ab(len(segs) - 1, c), c) for c in range(C)]

        def fn(m, c):
            y = Q2(Fraction(int(m)))
            for a, b in pre[c]:
                y = a * y + b
                if y.sign() < 0:
                    y = ZERO
            P, Q_ = last[c]
            return q.code_of_t(P * y + Q_)
    else:
        def fn(m, c):
            return q.code(eval_chain(x.chain, c, Q2(Fraction(int(m)) * unit)), c)

    def fn_float(m, c):
        return q.code_float(eval_chain_float(x.chain, c, np.asarray(m, dtype=np.float64) * float(unit)), c)

    lo, hi = tx.raw_min, tx.raw_max
    steps = step_function(fn, fn_float, C, lo, hi)
    codes = [b for b in steps.base] + [b + s * len([t for t in th if t <= hi])
                                       for b, s, th in zip(steps.base, steps.step, steps.thresholds)]
    if q.qmin is None:  # Trunc without a clamp: the codes the interval reaches
        ct = FixedType.for_raw_range(min(codes + [0]), max(codes + [0]), ct.frac_bits, signed=True)
    if min(codes) < ct.raw_min or max(codes) > ct.raw_max:
        raise r.err(f"internal: codes {min(codes)}..{max(codes)} outside {ct}")
    K = max(len(t) for t in steps.thresholds)
    kind, fit = "multithreshold", None
    ab = compose_affine(x.chain)
    if ab is not None and not q.bipolar and not q.pre_round and K > 1:
        A, _ = ab
        slopes = []
        for c in range(C):
            a = A[c if len(A) > 1 else 0]
            s = q.scale[c if len(q.scale) > 1 else 0] * q.div
            slopes.append(a * unit / s)
        narrow = q.qmin is not None and signed and q.qmin == -q.qmax
        ot = ct.replace(rounding="AP_TRN", overflow="AP_SAT_SYM" if narrow else "AP_SAT")
        tmin = -ot.raw_max if narrow else ot.raw_min
        fit = fit_mul_shift(steps, slopes, tmin, ot.raw_max)
        if fit is not None:
            mbits = max(abs(m).bit_length() for m in fit[1]) + 1
            if tx.width * mbits // 2 + tx.width < K * tx.width:
                kind = "batchnorm"
    if kind == "batchnorm":
        sh, Ms, Bs = fit
        Fo = ct.frac_bits
        Ms = Ms * C if len(Ms) == 1 and C > 1 else Ms
        Bs = Bs * C if len(Bs) == 1 and C > 1 else Bs
        nch = shape[0]
        Ms = Ms * nch if len(Ms) == 1 else Ms
        Bs = Bs * nch if len(Bs) == 1 else Bs
        mt = FixedType.for_raw_range(min(Ms + [0]), max(Ms + [0]), sh - F + Fo, signed=True)
        bt = FixedType.for_raw_range(min(Bs + [0]), max(Bs + [0]), sh + Fo, signed=True)
        sc = Const(np.array(Ms, dtype=np.int64 if mt.width <= 62 else object), mt)
        sf = Const(np.array(Bs, dtype=np.int64 if bt.width <= 62 else object), bt)
        node = r.emit("batchnorm", [x.act.name], out if direct else fresh(r, out),
                      {"out_type": ct.replace(rounding="AP_TRN", overflow=ot.overflow)}, {"scale": sc, "shift": sf})
    else:
        K = max(K, 1)
        thr = [t + [hi + 1] * (K - len(t)) for t in steps.thresholds]
        flat = [v for t in thr for v in t]
        tt = FixedType.for_raw_range(min(flat + [lo]), max(flat + [hi]), F, signed=True)
        raw = np.array(thr, dtype=np.int64 if tt.width <= 62 else object).reshape(len(thr), K)
        node = r.emit("multithreshold", [x.act.name], out if direct else fresh(r, out),
                      {"out_type": ct, "base": tuple(int(b) for b in steps.base),
                       "step": tuple(int(s) for s in steps.step)}, {"thresholds": Const(raw, tt)})
    o = node.outputs[0]
    r.set_act(node, o)
    if not direct:
        A, B = q.value_affine(C)
        r.vals[out] = Real(r.vals[o], [("affine", A, B)], name)


def _dyadic_const(r, vals: list, what: str, where: str = "") -> Const:
    fr = []
    for v in vals:
        if not v.dyadic:
            raise r.err(f"the graph output{where} is a float expression whose exact value is not a fixed-point "
                        f"number ({what} is not a dyadic rational: a division or a float BatchNorm); end the graph "
                        f"with a Quant")
        fr.append(v.p)
    k = max((f.denominator.bit_length() - 1 for f in fr), default=0)
    raw = [int(f * 2 ** k) for f in fr]
    t = FixedType.for_raw_range(min(raw + [0]), max(raw + [0]), k, signed=True)
    return Const(np.array(raw, dtype=np.int64 if t.width <= 62 else object), t)


def real_output(r, x: Real, note: bool = True) -> Act:
    """The graph output of a Real: the exact value of its chain in a wide enough fixed-point type."""
    if x.act.type is None:
        raise r.err("the graph output is the float input with no quantizer; quantize it or give --input-type")
    act = real_to_act(r, x)
    if act is not None:
        if note:
            r.notes.append(f"output: the exact value of {x.onnx_name!r} (no quantizer in the file), type {act.type}")
        return act
    cur, pend = x.act, []

    def flush(cur, pend):
        if not pend:
            return cur
        A, B = compose_affine([("affine", a, b) for a, b in pend])
        nch = cur.shape[0]
        A = A * nch if len(A) == 1 else A
        B = B * nch if len(B) == 1 else B
        w = f" (from {x.onnx_name!r})"
        sc, sf = _dyadic_const(r, A, "a scale", w), _dyadic_const(r, B, "an offset", w)
        t = batchnorm_acc(sc, sf, cur.type)
        o = fresh(r, x.onnx_name + "/exact_out")
        r.set_act(r.emit("batchnorm", [cur.name], o, {"out_type": t}, {"scale": sc, "shift": sf},
                         name=x.onnx_name + "/exact_out"), o)
        return r.vals[o]

    for s in x.chain:
        if s[0] == "affine":
            pend.append((s[1], s[2]))
        else:
            cur = flush(cur, pend)
            pend = []
            o = fresh(r, x.onnx_name + "/relu")
            r.set_act(r.emit("relu", [cur.name], o, name=x.onnx_name + "/relu"), o)
            cur = r.vals[o]
    cur = flush(cur, pend)
    if note:
        r.notes.append(f"output: the exact value of the float result of {x.onnx_name!r} (no quantizer in the "
                       f"file), type {cur.type}")
    return cur


def channels_increasing(x: Real) -> bool:
    """Every channel's chain is non-decreasing (so max pooling commutes with it)."""
    n = chain_channels(x.chain)
    for c in range(n):
        sgn = 1
        for s in x.chain:
            if s[0] == "affine":
                sgn *= s[1][c if len(s[1]) > 1 else 0].sign()
        if sgn < 0:
            return False
    return True


def flatten_chain(x: Real, shape) -> list:
    """The chain of a (C, H, W) tensor re-indexed for its flattened (C*H*W,) features."""
    if len(shape) != 3:
        return list(x.chain)
    hw = shape[1] * shape[2]
    out = []
    for s in x.chain:
        if s[0] == "affine" and (len(s[1]) > 1 or len(s[2]) > 1):
            A = [a for a in (s[1] if len(s[1]) > 1 else s[1] * shape[0]) for _ in range(hw)]
            B = [b for b in (s[2] if len(s[2]) > 1 else s[2] * shape[0]) for _ in range(hw)]
            out.append(("affine", A, B))
        else:
            out.append(s)
    return out

