"""ONNX importers of structural ops that produce no arithmetic: ``Identity``, ``Cast``, ``Constant``,
``Reshape`` (a flatten), ``Transpose`` (of a weight), and a final ``Softmax``.

Every standard node whose inputs are all constants (``Shape`` of a static tensor, ``Gather``,
``Unsqueeze``, ``Concat``, ``Pow``, ...) is folded by the reader before dispatch
(``_Reader.fold_constant``), so a dynamic flatten ``Shape -> Gather -> Unsqueeze -> Concat ->
Reshape`` reaches ``Reshape`` with a constant shape.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from ..ir.ops.onnx_table import INT, INTS, TENSOR, onnx_import
from .real import flatten_chain
from .values import Act, CFixed, CFloat, Pending, Real

#: float element types a Cast may target: (mantissa bits, largest F = W - I, largest I) that stay exact
_CAST_TARGETS = {TensorProto.DOUBLE: (53, 1074, 1023), TensorProto.FLOAT: (24, 149, 127)}


@onnx_import("Identity", max_inputs=1)
def import_identity(r, out):
    r.vals[out] = r.inp(0)


@onnx_import("Constant", max_inputs=0)
def import_constant(r, out):
    for a in r.cur.attribute:
        if a.name == "value" and a.type == TENSOR:
            r.vals[out] = CFloat(r.tensor_array(a.t, "Constant"), a.t.data_type)
            return
    raise r.err("only Constant with a tensor 'value' is supported")


@onnx_import("Cast", max_inputs=1)
def import_cast(r, out):
    to = r.attr("to", INT, required=True)
    v = r.inp(0)
    if to not in _CAST_TARGETS:
        raise r.err(f"only casts to FLOAT or DOUBLE are supported (to={to}); remove the Cast or export the "
                    f"model in floating point")
    bits, max_frac, max_int = _CAST_TARGETS[to]
    kind = "double" if to == TensorProto.DOUBLE else "float32"
    if isinstance(v, Pending):
        raise r.err(f"input is the exact result of {v.onnx_name!r}, which has no fixed-point type: put a "
                    f"FixedPoint/Quant before the Cast")
    if isinstance(v, Real):
        r.vals[out] = v  # the exact value (the file's float rounding is not computed: see docs/semantics.md)
        return
    if isinstance(v, (Act, CFixed)) and (v.type if isinstance(v, Act) else v) is not None:
        t = v.type if isinstance(v, Act) else v
        fr = np.asarray(t.frac_bits if isinstance(v, Act) else v.frac)
        if t.width > bits or int(fr.max()) > max_frac or int((t.width - fr).max()) > max_int:
            raise r.err(f"casting a {t.width}-bit fixed-point tensor (binary point {int(fr.max())}) to "
                        f"{kind} would round it; use a type of at most {bits} bits within {kind}'s "
                        f"exponent range, or drop the Cast")
    elif isinstance(v, Act) and to == TensorProto.FLOAT and r.input_elem == TensorProto.DOUBLE:
        raise r.err("casting the double graph input to float32 rounds it before its quantizer; quantize the "
                    "input first or give the graph a float32 input")
    elif isinstance(v, CFloat):
        with np.errstate(over="ignore"):
            arr = np.asarray(v.arr, dtype=np.float64)
            if to == TensorProto.FLOAT:
                arr = arr.astype(np.float32).astype(np.float64)  # rounds as onnxruntime does
        if not np.isfinite(arr).all():
            raise r.err(f"the constant overflows {kind}; use values within {kind}'s range")
        v = CFloat(arr, to)
    r.vals[out] = v


def flatten_to(r, out):
    """Flatten the activation input 0 (a typed tensor or an exact real result) to (N, features)."""
    v = r.inp(0)
    if isinstance(v, Real) and v.act.type is not None:
        o = out + "/codes"
        while o in r.tensors or o in r.vals or o in r.file_names:
            o += "_"
        r.set_act(r.emit("flatten", [v.act.name], o), o)
        r.vals[out] = Real(r.vals[o], flatten_chain(v, v.shape), v.onnx_name)
        return
    x = r.typed_act(0)
    r.set_act(r.emit("flatten", [x.name], out), out)


@onnx_import("Unsqueeze", "Squeeze", max_inputs=2)
def import_unsqueeze(r, out):
    """``Unsqueeze``/``Squeeze`` of axis 2 of a 1-D map: (N, C, L) <-> (N, C, 1, L) are both the IR's (C, 1, L)."""
    v = r.inp(0)
    shape = getattr(v, "shape", None)
    axes = r.const(r.cur.input[1], "axes") if len(r.cur.input) > 1 and r.cur.input[1] else None
    rank = None if shape is None else len(shape) + 1  # the (N, C, 1, L) side
    ax = None if axes is None else [int(a) + (rank if int(a) < 0 else 0) for a in np.asarray(axes).reshape(-1)]
    if shape is None or len(shape) != 3 or shape[1] != 1 or ax != [2]:
        raise r.err(f"only the {r.cur.op_type} of axis 2 of a 1-D map (N, C, L) <-> (N, C, 1, L) is supported, "
                    f"got axes {None if ax is None else ax} of shape {shape}")
    r.vals[out] = v


@onnx_import("Reshape", max_inputs=2)
def import_reshape(r, out):
    v = r.inp(0)
    shape = getattr(v, "shape", None)
    if shape is None:
        raise r.err("Reshape of a constant that is not folded; re-export the model")
    shp = r.const(r.cur.input[1], "shape") if len(r.cur.input) > 1 else None
    n = math.prod(shape)
    if shp is not None and shp.ndim == 1 and tuple(int(d) for d in shp[1:]) == tuple(shape) and shp[0] in (1, -1, 0):
        r.vals[out] = v  # the same shape
        return
    if shp is None or shp.ndim != 1 or len(shp) != 2 or shp[1] not in (n, -1) or shp[0] not in (1, -1, 0) \
            or (shp[0] == -1 and shp[1] == -1):
        raise r.err(f"only a Reshape to (N, {n}) (a flatten) is supported, got "
                    f"{None if shp is None else [int(d) for d in shp.tolist()]}")
    flatten_to(r, out)


def channels_last_flatten(r, chw) -> bool:
    """Transpose(perm=[0, 2, 3, 1]) -> flatten -> ... -> MatMul/Gemm: permute the weight (every value of it read
    so far, and the initializer) so that the channels-first flatten gives the same products."""
    from .rewrite import flatten_weight, permute_rows
    g = r.g
    if not hasattr(r, "_maps"):
        cons, prod = {}, {}
        for n in g.node:
            for i in n.input:
                cons.setdefault(i, []).append(n)
            for o in n.output:
                prod[o] = n
        r._maps = cons, prod, {t.name: t for t in g.initializer}
    cons, prod, inits = r._maps
    found = flatten_weight(g, r.cur, cons, prod, inits)
    if found is None:
        return False
    names, trans_b = found
    for nm in names:
        v = r.vals.get(nm)
        if isinstance(v, CFloat):
            r.vals[nm] = CFloat(permute_rows(np.asarray(v.arr), chw, trans_b), v.elem)
        elif isinstance(v, CFixed):
            fr = np.broadcast_to(v.frac, np.shape(v.raw))
            r.vals[nm] = CFixed(permute_rows(np.asarray(v.raw), chw, trans_b), permute_rows(np.asarray(fr), chw,
                                                                                           trans_b),
                                v.width, v.signed, v.rounding, v.overflow, v.k_hot, v.digits)
    r.notes.append(f"channels-last flatten at {r.cur.name!r}: the next layer's weight rows are permuted instead")
    return True


@onnx_import("Transpose", max_inputs=1)
def import_transpose(r, out):
    v = r.inp(0)
    perm = r.attr("perm", INTS, None)
    if isinstance(v, (Act, Pending, Real)):
        if len(getattr(v, "shape", ())) == 3 and channels_last_flatten(r, v.shape):
            r.vals[out] = v  # the next layer's weight rows now follow the channels-first flatten
            return
        raise r.err(f"a Transpose of an activation (perm {perm}) reorders the data the hardware streams; only a "
                    f"channels-last flatten (perm [0, 2, 3, 1], a flatten, per-tensor elementwise ops, then a "
                    f"MatMul/Gemm with a constant weight) is supported: export channels-first (NCHW)")
    if not isinstance(v, (CFloat, CFixed)) or np.ndim(v.arr if isinstance(v, CFloat) else v.raw) != 2 \
            or perm not in (None, [1, 0]):
        raise r.err("only the transpose of a 2-D constant (a weight) is supported")
    r.vals[out] = CFloat(v.arr.T.copy(), v.elem) if isinstance(v, CFloat) else v.transposed()


@onnx_import("Softmax", "LogSoftmax", max_inputs=1)
def import_softmax(r, out):
    op = r.cur.op_type
    if r.cur is not r.final_softmax:
        raise r.err(f"a {op} inside the graph is not supported (only a final one, with --softmax argmax)")
    if r.softmax != "argmax":
        raise r.err(f"a final {op} has no exact fixed-point form here; compile with --softmax argmax "
                    f"(softmax='argmax'): the design then outputs the index of the largest {op} input, the "
                    f"model's decision exactly")
    axis = r.attr("axis", INT, -1)
    v = r.inp(0)
    shape = getattr(v, "shape", None)
    if shape is None or len(shape) != 1 or axis not in (-1, 1):
        raise r.err(f"--softmax argmax needs a {op} over the features of an (N, F) tensor")
    r.argmax(out)
    r.notes.append(f"softmax: the final {op} is replaced by ArgMax: the design outputs the index of the first "
                   f"largest logit, which is the model's decision ({op} is strictly increasing)")
