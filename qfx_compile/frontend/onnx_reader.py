"""Read a qfx ONNX file (docs/semantics.md) or a QONNX file into the IR; every input check lives here.

``load_model(path) -> ir.Graph`` with shapes and types inferred. Anything the IR
cannot represent exactly, and every malformed file, raises :class:`ModelError`
naming the file, the node and what to do.
"""
from __future__ import annotations

import base64
import io
import math
import os

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from ..ir.graph import Const, Graph, Node, Tensor, Vectors
from ..ir.interpret import float_to_raw
from ..ir.ops import OpError
from ..ir.ops.avgpool import DEFAULT_RECIP_BITS
from ..ir.passes.shapes import infer_shapes
from ..qfx.types import FixedType
from .errors import ModelError
from .quantizers import describe_fixedpoint, describe_qonnx
from .values import Act, CFixed, CFloat, Pending

MAX_FILE_BYTES = 2 << 30
MAX_ELEMENTS = 1 << 26  # per tensor (without batch)
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")
STD = ("", "ai.onnx")
SUPPORTED = ("qfx.FixedPoint", "qfx.Conv", "qfx.AveragePool", "qfx.GlobalAveragePool", "Quant/IntQuant (QONNX)",
             "Gemm", "MatMul", "Conv", "Mul", "Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
             "Flatten", "Reshape", "Transpose (of a weight)", "Cast", "Identity", "Constant")
_CAST_TARGETS = {TensorProto.DOUBLE: 53, TensorProto.FLOAT: 24}


class _Reader:
    def __init__(self, model: onnx.ModelProto, path: str):
        self.m, self.path, self.g = model, path, model.graph
        self.vals: dict[str, object] = {}
        self.nodes: list[Node] = []
        self.tensors: dict[str, Tensor] = {}
        self.node_names: set[str] = set()
        self.cur = None  # the ONNX node being read

    # ------------------------------------------------------------ errors
    def err(self, msg: str) -> ModelError:
        n = self.cur
        if n is None:
            return ModelError(msg, path=self.path)
        return ModelError(msg, path=self.path, node=n.name or (n.output[0] if n.output else "?"),
                          op=(f"{n.domain}." if n.domain else "") + n.op_type)

    # ---------------------------------------------------------- constants
    def tensor_array(self, t: TensorProto, what: str) -> np.ndarray:
        if t.data_location == TensorProto.EXTERNAL:
            raise self.err(f"{what} {t.name!r} keeps its data in an external file; save the model with all data inside")
        if any(d < 0 for d in t.dims) or math.prod(t.dims) > MAX_ELEMENTS:
            raise self.err(f"{what} {t.name!r} has an unsupported shape {list(t.dims)} (at most {MAX_ELEMENTS} elements)")
        if t.data_type not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.INT32,
                               TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8):
            raise self.err(f"{what} {t.name!r} has unsupported element type "
                           f"{TensorProto.DataType.Name(t.data_type) if t.data_type in TensorProto.DataType.values() else t.data_type}")
        try:
            a = numpy_helper.to_array(t)
        except Exception as e:  # malformed payload (wrong length, ...)
            raise self.err(f"{what} {t.name!r} is malformed: {e}") from None
        if tuple(a.shape) != tuple(t.dims):
            raise self.err(f"{what} {t.name!r} has {a.size} values for shape {list(t.dims)}")
        if a.dtype.kind == "f":
            if not np.isfinite(a).all():
                raise self.err(f"{what} {t.name!r} holds inf or NaN")
            a = a.astype(np.float64)
        else:
            a = a.astype(np.int64)
        return a

    def const(self, name: str, what: str) -> np.ndarray:
        v = self.vals.get(name)
        if not isinstance(v, CFloat):
            raise self.err(f"{what} {name!r} must be a constant (an initializer)")
        return v.arr

    # ---------------------------------------------------------- attributes
    def attr(self, key: str, kind: int, default=None, required=False):
        for a in self.cur.attribute:
            if a.name == key:
                if a.type != kind:
                    raise self.err(f"attribute {key!r} has type {AttributeProto.AttributeType.Name(a.type)}, "
                                   f"expected {AttributeProto.AttributeType.Name(kind)}")
                v = onnx.helper.get_attribute_value(a)
                if kind == AttributeProto.STRING:
                    try:
                        v = v.decode("utf-8")
                    except UnicodeDecodeError:
                        raise self.err(f"attribute {key!r} is not valid UTF-8") from None
                elif kind == AttributeProto.INTS:
                    v = [int(i) for i in v]
                return v
        if required:
            raise self.err(f"missing attribute {key!r}")
        return default

    # ------------------------------------------------------------- inputs
    def inp(self, i: int, optional=False):
        n = self.cur
        if i >= len(n.input) or n.input[i] == "":
            if optional:
                return None
            raise self.err(f"missing input {i}")
        name = n.input[i]
        if name not in self.vals:
            raise self.err(f"input {name!r} is not computed by any node nor an initializer")
        return self.vals[name]

    def typed_act(self, i: int) -> Act:
        v = self.inp(i)
        if isinstance(v, Pending):
            raise self.err(f"input {self.cur.input[i]!r} is the exact result of node {v.onnx_name!r}, which has "
                           f"no fixed-point type: put a FixedPoint/Quant right after {v.onnx_name!r}")
        if not isinstance(v, Act):
            raise self.err(f"input {self.cur.input[i]!r} must be an activation, got a constant")
        if v.type is None:
            raise self.err(f"input {self.cur.input[i]!r} has no fixed-point type (a float tensor): "
                           f"quantize it first (FixedPoint/Quant)")
        return v

    def fixed_const(self, i: int, what: str) -> CFixed:
        v = self.inp(i)
        if isinstance(v, CFloat):
            raise self.err(f"{what} {self.cur.input[i]!r} is a float constant without a fixed-point type: "
                           f"pass it through a FixedPoint/Quant node")
        if not isinstance(v, CFixed):
            raise self.err(f"{what} {self.cur.input[i]!r} must be a constant (initializer -> FixedPoint/Quant)")
        return v

    # -------------------------------------------------------------- output
    def node_name(self, base: str) -> str:
        name, k = base, 1
        while name in self.node_names:
            k += 1
            name = f"{base}_{k}"
        self.node_names.add(name)
        return name

    def emit(self, op: str, inputs, out: str, attrs=None, params=None, name=None) -> Node:
        n = Node(self.node_name(name or self.cur.name or f"{op}_{len(self.nodes)}"), op, list(inputs), [out],
                 dict(attrs or {}), dict(params or {}))
        self.nodes.append(n)
        self.tensors[out] = Tensor(out)
        return n

    def set_act(self, node: Node, out: str):
        """Infer the new node's shape/type at once (errors name the ONNX node)."""
        from ..ir.ops import get
        op = get(node.op)
        ins = [self.tensors[i] for i in node.inputs]
        try:
            shape = tuple(op.shape(node, [t.shape for t in ins]))
            typ = op.type(node, [t.type for t in ins])
        except (OpError, ValueError) as e:
            raise self.err(str(e)) from None
        if math.prod(shape) > MAX_ELEMENTS or any(d < 1 for d in shape):
            raise self.err(f"result shape {shape} is empty or too large")
        self.tensors[out].shape, self.tensors[out].type = shape, typ
        self.vals[out] = Act(out, shape, typ)

    # ------------------------------------------------------------ reading
    def read(self) -> Graph:
        g = self.g
        inits = {}
        for t in g.initializer:
            if not t.name:
                raise self.err("an initializer has no name")
            inits[t.name] = t
        if len(g.sparse_initializer):
            raise self.err("sparse initializers are not supported")
        ins = [i for i in g.input if i.name not in inits]
        if len(ins) != 1 or len(g.output) != 1:
            raise self.err(f"the graph must have exactly one input and one output, got {len(ins)} and {len(g.output)}")
        for name, t in inits.items():
            self.vals[name] = CFloat(self.tensor_array(t, "initializer"))
        gi = ins[0]
        tt = gi.type.tensor_type if gi.type.HasField("tensor_type") else None
        if tt is None or tt.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            raise self.err(f"graph input {gi.name!r} must be a float or double tensor")
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        if len(dims) not in (2, 4):
            raise self.err(f"graph input {gi.name!r} must have shape (N, F) or (N, C, H, W), got rank {len(dims)}")
        shape = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value < 1:
                raise self.err(f"graph input {gi.name!r} has a dynamic or unknown dimension ({d.dim_param or '?'}); "
                               f"export with a static shape")
            shape.append(int(d.dim_value))
        if math.prod(shape) > MAX_ELEMENTS:
            raise self.err(f"graph input {gi.name!r} shape {shape} is too large")
        self.input_name = gi.name
        self.tensors[gi.name] = Tensor(gi.name, tuple(shape), None)
        self.vals[gi.name] = Act(gi.name, tuple(shape), None)
        for node in self.topo_order():
            self.cur = node
            self.read_node(node)
        self.cur = None
        out = g.output[0].name
        v = self.vals.get(out)
        if isinstance(v, Pending):
            raise self.err(f"the graph output {out!r} (from {v.onnx_name!r}) has no fixed-point type: end the graph "
                           f"with a FixedPoint/Quant")
        if not isinstance(v, Act) or v.type is None:
            raise self.err(f"the graph output {out!r} must be a fixed-point activation")
        return self.build(v.name)

    def topo_order(self):
        nodes = list(self.g.node)
        avail = set(self.vals)
        produced = {o for n in nodes for o in n.output if o}
        for n in nodes:
            for i in n.input:
                if i and i not in avail and i not in produced:
                    self.cur = n
                    raise self.err(f"input {i!r} is neither computed by a node nor an initializer "
                                   f"(missing initializer?)")
        order, done = [], [False] * len(nodes)
        progress = True
        while progress:
            progress = False
            for k, n in enumerate(nodes):
                if not done[k] and all((not i) or i in avail for i in n.input):
                    done[k] = progress = True
                    order.append(n)
                    for o in n.output:
                        if o in avail:
                            self.cur = n
                            raise self.err(f"tensor {o!r} is written twice")
                        avail.add(o)
        if len(order) != len(nodes):
            stuck = [n for k, n in enumerate(nodes) if not done[k]]
            self.cur = stuck[0]
            raise self.err(f"the graph has a cycle through {len(stuck)} node(s)")
        return order

    def build(self, out: str) -> Graph:
        # keep only nodes the output depends on
        need, keep = {out}, []
        for n in reversed(self.nodes):
            if n.outputs[0] in need:
                keep.append(n)
                need.update(n.inputs)
        keep.reverse()
        used = {self.input_name} | {o for n in keep for o in n.outputs}
        tensors = {k: v for k, v in self.tensors.items() if k in used}
        g = Graph(self.g.name or os.path.basename(self.path), [self.input_name], [out], keep, tensors,
                  metadata={p.key: p.value for p in self.m.metadata_props if p.key != "qfx.vectors"})
        if not keep or keep[0].op != "quant" or keep[0].inputs != [self.input_name] or \
                len([n for n in keep if self.input_name in n.inputs]) != 1:
            raise ModelError(f"the graph input {self.input_name!r} must feed exactly one quantizer "
                             f"(FixedPoint/Quant) and nothing else", path=self.path)
        try:
            g = infer_shapes(g)
        except (OpError, ValueError) as e:
            raise ModelError(str(e), path=self.path) from None
        g.vectors = self.vectors(g)
        return g

    def vectors(self, g: Graph) -> Vectors | None:
        props = {p.key: p.value for p in self.m.metadata_props}
        if "qfx.vectors" not in props:
            return None
        try:
            data = np.load(io.BytesIO(base64.b64decode(props["qfx.vectors"], validate=True)), allow_pickle=False)
            xi, yo = np.asarray(data["input_raw"]), np.asarray(data["output_raw"])
        except Exception as e:
            raise ModelError(f"metadata qfx.vectors is not a base64 .npz with input_raw and output_raw: {e}",
                             path=self.path) from None
        ti, to = g.tensors[g.nodes[0].outputs[0]], g.tensors[g.outputs[0]]
        for what, a, t in (("input_raw", xi, ti), ("output_raw", yo, to)):
            if a.dtype.kind not in "iu" or tuple(a.shape[1:]) != tuple(t.shape) or a.ndim < 1:
                raise ModelError(f"qfx.vectors {what} must be integers shaped (N, {t.shape}), got {a.dtype} "
                                 f"{a.shape}", path=self.path)
            if a.size and (a.min() < t.type.raw_min or a.max() > t.type.raw_max):
                raise ModelError(f"qfx.vectors {what} holds mantissas outside {t.type}", path=self.path)
        if xi.shape[0] != yo.shape[0]:
            raise ModelError("qfx.vectors input_raw and output_raw have different counts", path=self.path)
        return Vectors(xi.astype(np.int64), yo.astype(np.int64), "model")

    # ---------------------------------------------------------------- ops
    def read_node(self, n):
        dom, op = n.domain, n.op_type
        if len(n.output) < 1 or not n.output[0]:
            raise self.err("node has no output")
        out = n.output[0]
        if dom == "qfx" and op == "FixedPoint":
            return self.cast_fixedpoint(out)
        if dom in QONNX_DOMAINS and op in ("Quant", "IntQuant"):
            return self.cast_qonnx(out)
        if dom == "qfx" and op in ("Conv", "AveragePool", "GlobalAveragePool"):
            return getattr(self, "op_" + op)(out, qfx=True)
        if dom in STD and hasattr(self, "op_" + op):
            return getattr(self, "op_" + op)(out)
        raise self.err(f"unsupported operator {(dom + '.') if dom else ''}{op}; supported: {', '.join(SUPPORTED)}")

    # casts --------------------------------------------------------------
    def cast_fixedpoint(self, out):
        if len(self.cur.input) != 2:
            raise self.err("FixedPoint needs inputs (X, int_bits)")
        ib = self.const(self.cur.input[1], "int_bits")
        try:
            desc = describe_fixedpoint(self.attr("width", AttributeProto.INT, required=True),
                                       self.attr("signed", AttributeProto.INT, required=True),
                                       self.attr("rounding", AttributeProto.STRING, required=True),
                                       self.attr("overflow", AttributeProto.STRING, required=True), ib)
        except ValueError as e:
            raise self.err(str(e)) from None
        k_hot = self.attr("k_hot", AttributeProto.INTS)
        digits = self.attr("digits", AttributeProto.STRING)
        if digits is not None and digits not in ("binary", "csd"):
            raise self.err(f"digits must be 'binary' or 'csd', got {digits!r}")
        self.cast(out, desc, None if k_hot is None else np.asarray(k_hot, dtype=np.int64), digits)

    def cast_qonnx(self, out):
        if len(self.cur.input) != 4:
            raise self.err("Quant needs inputs (X, scale, zeropt, bitwidth)")
        try:
            desc = describe_qonnx(self.const(self.cur.input[1], "scale"), self.const(self.cur.input[2], "zeropt"),
                                  self.const(self.cur.input[3], "bitwidth"),
                                  self.attr("signed", AttributeProto.INT, 1), self.attr("narrow", AttributeProto.INT, 0),
                                  self.attr("rounding_mode", AttributeProto.STRING, "ROUND"))
        except ValueError as e:
            raise self.err(f"cannot be fixed-point: {e}") from None
        self.cast(out, desc)

    def cast(self, out, desc, k_hot=None, digits=None):
        width, signed, rounding, overflow, frac = desc
        x = self.inp(0)
        if isinstance(x, (CFloat, CFixed)):
            arr = x.arr if isinstance(x, CFloat) else None
            if arr is None:  # re-cast of a fixed constant: exact values first
                f = np.broadcast_to(x.frac, x.raw.shape)
                arr_raw, arr_frac = x.raw, f
            try:
                f = np.broadcast_to(frac, (arr if arr is not None else arr_raw).shape)
            except ValueError:
                raise self.err(f"the per-channel binary point (shape {np.shape(frac)}) does not broadcast to the "
                               f"constant's shape") from None
            raw = np.zeros(f.shape, dtype=object)
            try:
                for fv in np.unique(f):
                    t = FixedType(width, width - int(fv), signed, rounding, overflow)
                    sel = f == fv
                    if arr is not None:
                        raw[sel] = float_to_raw(np.broadcast_to(arr, f.shape)[sel], t)
                    else:
                        from ..qfx.quantize import requantize_raw
                        for sf in np.unique(arr_frac[sel]):
                            s2 = sel & (arr_frac == sf)
                            raw[s2] = requantize_raw(np.asarray(arr_raw)[s2], int(sf), t)
            except ValueError as e:
                raise self.err(str(e)) from None
            if width <= 62:
                raw = raw.astype(np.int64)
            self.vals[out] = CFixed(raw, np.asarray(frac), width, signed, rounding, overflow, k_hot, digits)
            return
        if np.asarray(frac).size != 1:
            raise self.err("a per-channel binary point is only supported for constants (weights), not activations")
        try:
            t = FixedType(width, width - int(np.asarray(frac).ravel()[0]), signed, rounding, overflow)
        except ValueError as e:
            raise self.err(str(e)) from None
        if isinstance(x, Pending):
            if x.relu_out is not None and overflow == "AP_WRAP":
                raise self.err("a ReLU before a wrapping cast cannot be moved after it exactly; cast with saturation")
            x.node.attrs["out_type"] = t
            mid = x.relu_out if x.relu_out is not None else out
            x.node.outputs = [mid]
            x.node.name = self.node_name(x.node.name)
            self.nodes.append(x.node)
            self.tensors[mid] = Tensor(mid)
            self.set_act(x.node, mid)
            if x.relu_out is not None:
                self.set_act(self.emit("relu", [mid], out, name=x.onnx_name + "/relu"), out)
            return
        if not isinstance(x, Act):
            raise self.err("cannot cast this input")
        self.set_act(self.emit("quant", [x.name], out, {"out_type": t}), out)

    # arithmetic ---------------------------------------------------------
    def pending(self, out, op, x: Act, attrs=None, params=None, stage="done"):
        from ..ir.ops import get
        node = Node(self.cur.name or f"{op}_{len(self.nodes)}", op, [x.name], ["?"], dict(attrs or {}),
                    dict(params or {}))
        node.attrs.setdefault("out_type", FixedType(1, 1))  # placeholder for the shape check only
        try:
            shape = tuple(get(op).shape(node, [x.shape]))
        except (OpError, ValueError) as e:
            raise self.err(str(e)) from None
        del node.attrs["out_type"]
        if math.prod(shape) > MAX_ELEMENTS:
            raise self.err(f"result shape {shape} is too large")
        self.vals[out] = Pending(node, shape, self.cur.name or out, stage)

    def to_const(self, c: CFixed, what: str, shape=None) -> Const:
        try:
            if shape is not None:
                c = c.reshaped(shape)
            return c.to_const(what)
        except ValueError as e:
            raise self.err(f"{what}: {e}") from None

    def op_Gemm(self, out):
        x = self.typed_act(0)
        w = self.fixed_const(1, "weight")
        b = self.inp(2, optional=True)
        if self.attr("transA", AttributeProto.INT, 0) != 0:
            raise self.err("transA must be 0")
        if self.attr("alpha", AttributeProto.FLOAT, 1.0) != 1.0 or self.attr("beta", AttributeProto.FLOAT, 1.0) != 1.0:
            raise self.err("alpha and beta must be 1")
        if w.raw.ndim != 2:
            raise self.err(f"weight must be 2-D, got shape {w.raw.shape}")
        if self.attr("transB", AttributeProto.INT, 0) == 0:
            w = w.transposed()
        params = {"weight": self.to_const(w, "weight")}
        if b is not None:
            bc = self.fixed_const(2, "bias")
            if bc.raw.size != w.raw.shape[0]:
                raise self.err(f"bias has {bc.raw.size} values for {w.raw.shape[0]} outputs")
            params["bias"] = self.to_const(bc, "bias", (w.raw.shape[0],))
        self.pending(out, "dense", x, {}, params, "needs_bias" if b is None else "done")

    def op_MatMul(self, out):
        x = self.typed_act(0)
        w = self.fixed_const(1, "weight")
        if w.raw.ndim != 2:
            raise self.err(f"weight must be 2-D, got shape {w.raw.shape}")
        self.pending(out, "dense", x, {}, {"weight": self.to_const(w.transposed(), "weight")}, "needs_bias")

    def window_attrs(self, conv=False):
        k = self.attr("kernel_shape", AttributeProto.INTS, required=not conv)
        s = self.attr("strides", AttributeProto.INTS, None)
        p = self.attr("pads", AttributeProto.INTS, None)
        d = self.attr("dilations", AttributeProto.INTS, None)
        if self.attr("auto_pad", AttributeProto.STRING, "NOTSET") != "NOTSET":
            raise self.err("auto_pad is not supported; give explicit pads")
        if self.attr("ceil_mode", AttributeProto.INT, 0) != 0:
            raise self.err("ceil_mode=1 is not supported")
        if d is not None and list(d) != [1, 1]:
            raise self.err(f"dilations {d} are not supported (only 1)")
        if k is not None and len(k) != 2 or s is not None and len(s) != 2 or p is not None and len(p) != 4:
            raise self.err("kernel_shape/strides must have 2 entries and pads 4 (2-D only)")
        s = tuple(s) if s is not None else (1, 1)
        p = (p[0], p[1], p[2], p[3]) if p is not None else (0, 0, 0, 0)
        if any(v < 0 for v in p) or any(v < 1 for v in s) or (k is not None and any(v < 1 for v in k)):
            raise self.err("kernel and strides must be >= 1 and pads >= 0")
        return (tuple(k) if k is not None else None), s, p

    def op_Conv(self, out, qfx=False):
        x = self.typed_act(0)
        w = self.fixed_const(1, "weight")
        b = self.inp(2, optional=True)
        if self.attr("group", AttributeProto.INT, 1) != 1:
            raise self.err("grouped convolution is not supported (group must be 1)")
        k, s, p = self.window_attrs(conv=True)
        if w.raw.ndim != 4:
            raise self.err(f"weight must be (O, C, KH, KW), got shape {w.raw.shape}")
        if k is not None and tuple(k) != tuple(w.raw.shape[2:]):
            raise self.err(f"kernel_shape {k} does not match the weight shape {w.raw.shape}")
        params = {"weight": self.to_const(w, "weight")}
        o = w.raw.shape[0]
        if b is not None:
            bc = self.fixed_const(2, "bias")
            if bc.raw.size != o:
                raise self.err(f"bias has {bc.raw.size} values for {o} output channels")
            params["bias"] = self.to_const(bc, "bias", (o,))
        self.pending(out, "conv2d", x, {"kernel": tuple(w.raw.shape[2:]), "stride": s, "pads": p}, params,
                     "needs_bias" if b is None else "done")

    def channel_const(self, c: CFixed, shape, what) -> Const:
        ch = shape[0]
        ok = {(ch,), (1, ch)} if len(shape) == 1 else {(ch, 1, 1), (1, ch, 1, 1)}
        if c.raw.size == 1:
            f = np.broadcast_to(c.frac, c.raw.shape).reshape(1)
            c = CFixed(np.repeat(c.raw.reshape(1), ch), np.repeat(f, ch), c.width, c.signed, c.rounding,
                       c.overflow)
        elif tuple(c.raw.shape) not in ok:
            raise self.err(f"{what} of shape {c.raw.shape} does not act per channel on an activation of shape "
                           f"{shape} (expected one of {sorted(ok)})")
        return self.to_const(c, what, (ch,))

    def op_Mul(self, out):
        a, b = self.inp(0), self.inp(1)
        i_act, i_c = (0, 1) if isinstance(a, Act) or isinstance(a, Pending) else (1, 0)
        x = self.typed_act(i_act)
        c = self.fixed_const(i_c, "scale")
        zero = Const(np.zeros(x.shape[0], dtype=np.int64), FixedType(1, 1, False))  # until an Add gives the shift
        self.pending(out, "batchnorm", x, {}, {"scale": self.channel_const(c, x.shape, "scale"), "shift": zero},
                     "needs_shift")

    def op_Add(self, out):
        a, b = self.inp(0), self.inp(1)
        if isinstance(b, Pending) or isinstance(a, (CFixed, CFloat)):
            a, b = b, a
            order = (1, 0)
        else:
            order = (0, 1)
        if isinstance(a, Pending) and a.stage in ("needs_bias", "needs_shift") and isinstance(b, (CFixed, CFloat)):
            c = self.fixed_const(order[1], "bias" if a.stage == "needs_bias" else "shift")
            node = a.node
            if a.stage == "needs_bias":
                o = a.shape[0]
                ok = {(o,), (1, o)} if node.op == "dense" else {(o,), (o, 1, 1), (1, o, 1, 1)}
                if tuple(c.raw.shape) not in ok:
                    raise self.err(f"bias of shape {c.raw.shape} does not match {o} output channels")
                params = dict(node.params, bias=self.to_const(c, "bias", (o,)))
            else:
                params = dict(node.params, shift=self.channel_const(c, a.shape, "shift"))
            new = Node(node.name, node.op, list(node.inputs), ["?"], dict(node.attrs), params)
            self.vals[out] = Pending(new, a.shape, a.onnx_name, "done")
            return
        if isinstance(a, Act) and isinstance(b, (CFixed, CFloat)):
            x = self.typed_act(order[0])
            c = self.fixed_const(order[1], "shift")
            one = Const(np.ones(x.shape[0], dtype=np.int64), FixedType(1, 1, False))
            self.pending(out, "batchnorm", x, {}, {"scale": one, "shift": self.channel_const(c, x.shape, "shift")})
            return
        xa, xb = self.typed_act(0), self.typed_act(1)
        from ..ir.ops import get
        node = Node(self.cur.name or f"add_{len(self.nodes)}", "add", [xa.name, xb.name], ["?"], {})
        try:
            shape = get("add").shape(node, [xa.shape, xb.shape])
        except OpError as e:
            raise self.err(str(e)) from None
        self.vals[out] = Pending(node, tuple(shape), self.cur.name or out)

    def op_Relu(self, out):
        v = self.inp(0)
        if isinstance(v, Pending):
            if v.stage == "needs_shift" or v.relu_out is not None:
                pass
            self.vals[out] = Pending(v.node, v.shape, v.onnx_name, v.stage, v.relu_out or out)
            return
        x = self.typed_act(0)
        self.set_act(self.emit("relu", [x.name], out), out)

    def op_Clip(self, out):
        x = self.typed_act(0)
        t = x.type.replace(rounding="AP_RND_CONV", overflow="AP_SAT")
        bounds = []
        for i, default in ((1, x.type.raw_min), (2, x.type.raw_max)):
            if i < len(self.cur.input) and self.cur.input[i]:
                v = self.inp(i)
                arr = v.arr if isinstance(v, CFloat) else None
                if arr is None or arr.size != 1:
                    raise self.err("Clip bounds must be scalar constants")
                bounds.append(int(float_to_raw(arr.reshape(1).astype(np.float64), t)[0]))
            else:
                bounds.append(default)
        if bounds[0] > bounds[1]:
            raise self.err("Clip min is greater than max")
        self.set_act(self.emit("clip", [x.name], out, {"lo": bounds[0], "hi": bounds[1]}), out)

    def op_MaxPool(self, out):
        x = self.typed_act(0)
        if self.attr("storage_order", AttributeProto.INT, 0) != 0 or len(self.cur.output) > 1 and self.cur.output[1]:
            raise self.err("MaxPool indices output is not supported")
        k, s, p = self.window_attrs()
        self.set_act(self.emit("maxpool", [x.name], out, {"kernel": k, "stride": s, "pads": p}), out)

    def recip_bits(self, qfx, n):
        if qfx:
            return self.attr("recip_bits", AttributeProto.INT, DEFAULT_RECIP_BITS)
        if n & (n - 1):
            raise self.err(f"a float average over {n} elements divides by a non-power of two, which no fixed-point "
                           f"type computes exactly; use qfx.AveragePool (with recip_bits) or a power-of-two window")
        return DEFAULT_RECIP_BITS

    def op_AveragePool(self, out, qfx=False):
        x = self.typed_act(0)
        k, s, p = self.window_attrs()
        if any(p):
            raise self.err("average pooling with padding is not supported")
        self.pending(out, "avgpool", x, {"kernel": k, "stride": s, "pads": p,
                                         "recip_bits": self.recip_bits(qfx, k[0] * k[1])})

    def op_GlobalAveragePool(self, out, qfx=False):
        x = self.typed_act(0)
        if len(x.shape) != 3:
            raise self.err(f"needs a (C, H, W) input, got {x.shape}")
        self.pending(out, "global_avgpool", x, {"recip_bits": self.recip_bits(qfx, x.shape[1] * x.shape[2])})

    def op_Flatten(self, out):
        x = self.typed_act(0)
        if self.attr("axis", AttributeProto.INT, 1) != 1:
            raise self.err("only Flatten(axis=1) is supported")
        self.set_act(self.emit("flatten", [x.name], out), out)

    def op_Reshape(self, out):
        x = self.typed_act(0)
        shp = self.const(self.cur.input[1], "shape") if len(self.cur.input) > 1 else None
        n = math.prod(x.shape)
        if shp is None or shp.ndim != 1 or len(shp) != 2 or shp[1] not in (n, -1) or shp[0] not in (1, -1, 0):
            raise self.err(f"only a Reshape to (N, {n}) (a flatten) is supported, got {None if shp is None else shp.tolist()}")
        self.set_act(self.emit("flatten", [x.name], out), out)

    def op_Transpose(self, out):
        v = self.inp(0)
        perm = self.attr("perm", AttributeProto.INTS, None)
        if not isinstance(v, (CFloat, CFixed)) or np.ndim(v.arr if isinstance(v, CFloat) else v.raw) != 2 \
                or perm not in (None, [1, 0]):
            raise self.err("only the transpose of a 2-D constant (a weight) is supported")
        self.vals[out] = CFloat(v.arr.T.copy()) if isinstance(v, CFloat) else v.transposed()

    def op_Identity(self, out):
        self.vals[out] = self.inp(0)

    def op_Cast(self, out):
        to = self.attr("to", AttributeProto.INT, required=True)
        v = self.inp(0)
        if to not in _CAST_TARGETS:
            raise self.err("only casts to float or double are supported")
        if isinstance(v, Act) and v.type is not None and v.type.width > _CAST_TARGETS[to]:
            raise self.err(f"casting a {v.type} tensor to a {_CAST_TARGETS[to]}-bit float would round")
        if isinstance(v, Pending):
            raise self.err(f"input is the exact result of {v.onnx_name!r}, which has no fixed-point type")
        self.vals[out] = v

    def op_Constant(self, out):
        for a in self.cur.attribute:
            if a.name == "value" and a.type == AttributeProto.TENSOR:
                self.vals[out] = CFloat(self.tensor_array(a.t, "Constant"))
                return
        raise self.err("only Constant with a tensor 'value' is supported")


def read_model_proto(model: onnx.ModelProto, path: str = "<model>") -> Graph:
    """The IR of an already parsed ModelProto."""
    try:
        return _Reader(model, path).read()
    except ModelError:
        raise
    except RecursionError:
        raise ModelError("the model is too deeply nested", path=path) from None


def load_model(path) -> Graph:
    """Read ``path`` (qfx ONNX or QONNX) into an IR graph with shapes and types inferred."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ModelError(f"file is {size} bytes; at most {MAX_FILE_BYTES} are supported", path=path)
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"cannot read the file: {e.strerror or e}", path=path) from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        raise ModelError("not an ONNX model (the protobuf cannot be parsed; truncated or corrupt file?)",
                         path=path) from None
    if not model.HasField("graph"):
        raise ModelError("not an ONNX model (no graph)", path=path)
    return read_model_proto(model, path)
