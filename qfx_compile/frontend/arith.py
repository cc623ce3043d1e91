"""ONNX importers of elementwise arithmetic with constants: ``Mul``, ``Add``, ``Sub``, ``Div``, ``BatchNormalization``.

Fixed-point constants (``qfx.FixedPoint``/power-of-two ``Quant``) on a fixed-point
tensor keep the qfx reading: a pending ``batchnorm`` (``Mul`` then ``Add``), a bias of
the pending dense/conv, or a residual ``add`` of two activations. A float constant,
a float BatchNorm, or an operand that is already an exact real result extends that
operand's exact chain (``frontend/real.py``): nothing is rounded until a quantizer.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..fixed.types import FixedType
from ..ir.exact_real import Q2
from ..ir.graph import Const, Node
from ..ir.ops import OpError
from ..ir.ops.onnx_table import FLOAT, INT, onnx_import
from .real import affine, as_real, chan_vals
from .values import Act, CFixed, CFloat, Pending, Real

_ACT = (Act, Pending, Real)


def _sides(r):
    """(activation index, constant index) of a binary node, or None when both are activations."""
    a, b = r.inp(0), r.inp(1)
    if isinstance(a, _ACT) and isinstance(b, (CFloat, CFixed)):
        return 0, 1
    if isinstance(b, _ACT) and isinstance(a, (CFloat, CFixed)):
        return 1, 0
    return None


def _real_wanted(x, c) -> bool:
    return isinstance(x, Real) or isinstance(c, CFloat) or (isinstance(x, Act) and x.type is None)


@onnx_import("Mul", max_inputs=2)
def import_mul(r, out):
    s = _sides(r)
    if s is None:
        raise r.err("a product of two activations is not supported (only an activation times a constant)")
    x, c = r.inp(s[0]), r.inp(s[1])
    if _real_wanted(x, c):
        x = as_real(r, x)
        return affine(r, out, x, A=chan_vals(r, c, x.shape, "the factor"))
    x = r.typed_act(s[0])
    c = r.fixed_const(s[1], "scale")
    zero = Const(np.zeros(x.shape[0], dtype=np.int64), FixedType(1, 1, False))  # until an Add gives the shift
    r.pending(out, "batchnorm", x, {}, {"scale": r.channel_const(c, x.shape, "scale"), "shift": zero},
              "needs_shift")


@onnx_import("Add", max_inputs=2)
def import_add(r, out):
    a, b = r.inp(0), r.inp(1)
    s = _sides(r)
    if s is not None and _real_wanted(r.inp(s[0]), r.inp(s[1])):
        x = as_real(r, r.inp(s[0]))
        return affine(r, out, x, B=chan_vals(r, r.inp(s[1]), x.shape, "the addend"))
    if isinstance(a, Real) or isinstance(b, Real):
        xa, xb = r.typed_act(0), r.typed_act(1)  # exact results only when they are plain activations
        a, b = xa, xb
    if isinstance(b, Pending) or isinstance(a, (CFixed, CFloat)):
        a, b = b, a
        order = (1, 0)
    else:
        order = (0, 1)
    if isinstance(a, Pending) and a.stage in ("needs_bias", "needs_shift") and isinstance(b, (CFixed, CFloat)):
        c = r.fixed_const(order[1], "bias" if a.stage == "needs_bias" else "shift")
        node = a.node
        if a.stage == "needs_bias":
            o = a.shape[0]
            ok = {(o,), (1, o)} if node.op == "dense" else {(o,), (o, 1, 1), (1, o, 1, 1)}
            if tuple(c.raw.shape) not in ok:
                raise r.err(f"bias of shape {tuple(c.raw.shape)} does not match {o} output channels")
            params = dict(node.params, bias=r.to_const(c, "bias", (o,)))
        else:
            params = dict(node.params, shift=r.channel_const(c, a.shape, "shift"))
        new = Node(node.name, node.op, list(node.inputs), ["?"], dict(node.attrs), params)
        r.vals[out] = Pending(new, a.shape, a.onnx_name, "done")
        return
    if isinstance(a, Act) and isinstance(b, (CFixed, CFloat)):
        x = r.typed_act(order[0])
        c = r.fixed_const(order[1], "shift")
        one = Const(np.ones(x.shape[0], dtype=np.int64), FixedType(1, 1, False))
        r.pending(out, "batchnorm", x, {}, {"scale": one, "shift": r.channel_const(c, x.shape, "shift")})
        return
    xa, xb = r.typed_act(0), r.typed_act(1)
    from ..ir.ops import get
    node = Node(r.cur.name or f"add_{len(r.nodes)}", "add", [xa.name, xb.name], ["?"], {})
    try:
        shape = get("add").shape(node, [xa.shape, xb.shape])
    except OpError as e:
        raise r.err(str(e)) from None
    r.vals[out] = Pending(node, tuple(shape), r.cur.name or out)


@onnx_import("Sub", max_inputs=2)
def import_sub(r, out):
    s = _sides(r)
    if s is None:
        raise r.err("a difference of two activations is not supported (only an activation minus a constant)")
    x = as_real(r, r.inp(s[0]))
    c = chan_vals(r, r.inp(s[1]), x.shape, "the subtrahend" if s[0] == 0 else "the minuend")
    if s[0] == 0:  # x - c
        return affine(r, out, x, B=[-v for v in c])
    affine(r, out, x, A=[Q2(Fraction(-1))], B=c)  # c - x


@onnx_import("Div", max_inputs=2)
def import_div(r, out):
    s = _sides(r)
    if s != (0, 1):
        raise r.err("only an activation divided by a constant is supported (c / x is not affine)")
    x = as_real(r, r.inp(0))
    c = chan_vals(r, r.inp(1), x.shape, "the divisor")
    if any(v.sign() == 0 for v in c):
        raise r.err("division by zero: the divisor has a 0")
    affine(r, out, x, A=[v.inverse() for v in c])


@onnx_import("BatchNormalization", max_inputs=5)
def import_batchnorm(r, out):
    if len(r.cur.input) != 5:
        raise r.err("BatchNormalization needs inputs (X, scale, B, mean, var)")
    if r.attr("training_mode", INT, 0):
        raise r.err("training_mode=1 is not an inference graph; export the model in eval mode")
    x = r.inp(0)
    if not isinstance(x, _ACT):
        raise r.err("BatchNormalization of a constant is not supported")
    x = as_real(r, x)
    eps = Fraction(float(r.attr("epsilon", FLOAT, 1e-5)))
    vals = []
    for i, what in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")):
        v = r.inp(i)
        if not isinstance(v, (CFloat, CFixed)):
            raise r.err(f"BatchNormalization {what} must be a constant")
        vals.append(chan_vals(r, v, x.shape, what, vector=True))
    n = max(len(v) for v in vals)
    g, b, m, var = ([v[c if len(v) > 1 else 0] for c in range(n)] for v in vals)
    A, B = [], []
    for c in range(n):
        den = var[c] + eps
        if den.sign() <= 0:
            raise r.err(f"var + epsilon is not positive in channel {c}; the BatchNorm divides by its square root")
        a = g[c] / Q2.sqrt(den.p)
        A.append(a)
        B.append(b[c] - m[c] * a)
    affine(r, out, x, A=A, B=B)
