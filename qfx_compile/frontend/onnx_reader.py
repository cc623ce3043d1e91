"""Read a qfx ONNX file (docs/semantics.md) or a QONNX file into the IR; every input check lives here.

``load_model(path) -> ir.Graph`` with shapes and types inferred. Anything the IR
cannot represent exactly, and every malformed file, raises :class:`ModelError`
naming the file, the node and what to do.
"""
from __future__ import annotations

import base64
import heapq
import io
import math
import os

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from ..ir.graph import Const, Graph, Node, Tensor, Vectors
from ..ir.ops import OpError
from ..ir.ops.avgpool import DEFAULT_RECIP_BITS
from ..ir.passes.shapes import infer_shapes
from ..fixed.digits import digit_count
from ..fixed.cast import float_to_raw
from ..fixed.cast import requantize_raw
from ..fixed.types import FixedType
from .errors import ModelError
from .untrusted import check_text_fields, load_vectors_npz
from .quantizers import describe_fixedpoint, describe_qonnx
from .values import Act, CFixed, CFloat, Pending

MAX_FILE_BYTES = 2 << 30
MAX_ELEMENTS = 1 << 26  # per tensor (without batch)
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")
STD = ("", "ai.onnx")
SUPPORTED = ("qfx.FixedPoint", "qfx.Conv", "qfx.AveragePool", "qfx.GlobalAveragePool", "Quant/IntQuant (QONNX)",
             "Gemm", "MatMul", "Conv", "Mul", "Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
             "Flatten", "Reshape", "Transpose (of a weight)", "Cast", "Identity", "Constant")
#: float element types a Cast may target: (mantissa bits, largest F = W - I, largest I) that stay exact
_MAX_INPUTS = {"qfx.FixedPoint": 2, "Quant": 4, "qfx.Conv": 3, "qfx.AveragePool": 1, "qfx.GlobalAveragePool": 1,
               "Gemm": 3, "MatMul": 2, "Conv": 3, "Mul": 2, "Add": 2, "Relu": 1, "Clip": 3, "MaxPool": 1,
               "AveragePool": 1, "GlobalAveragePool": 1, "Flatten": 1, "Reshape": 2, "Transpose": 1, "Cast": 1,
               "Identity": 1, "Constant": 0}
_VEC_FIX = "re-export with qfx.export_onnx(..., vectors=N) or delete the qfx.vectors metadata entry"
_CAST_TARGETS = {TensorProto.DOUBLE: (53, 1074, 1023), TensorProto.FLOAT: (24, 149, 127)}


class _Reader:
    def __init__(self, model: onnx.ModelProto, path: str):
        self.m, self.path, self.g = model, path, model.graph
        self.vals: dict[str, object] = {}
        self.nodes: list[Node] = []
        self.tensors: dict[str, Tensor] = {}
        self.node_names: set[str] = set()
        self.cur = None  # the ONNX node being read
        self.file_names = {o for n in self.g.node for o in n.output} | {t.name for t in self.g.initializer} | \
            {i.name for i in self.g.input}

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
                    got = AttributeProto.AttributeType.Name(a.type) \
                        if a.type in AttributeProto.AttributeType.values() else str(a.type)
                    raise self.err(f"attribute {key!r} has type {got}, expected "
                                   f"{AttributeProto.AttributeType.Name(kind)}; write it with that type "
                                   f"(see the operator's definition / docs/semantics.md)")
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
            raise self.err(f"missing attribute {key!r}; add it (see the operator's definition / docs/semantics.md)")
        return default

    # ------------------------------------------------------------- inputs
    def inp(self, i: int, optional=False):
        n = self.cur
        if i >= len(n.input) or n.input[i] == "":
            if optional:
                return None
            raise self.err(f"missing input {i} (the node has {len(n.input)} inputs); give the operator all "
                           f"its inputs")
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
        except ModelError:
            raise
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
        self.input_elem = tt.elem_type
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
        """The nodes in an order where every input is computed first (Kahn's algorithm, linear time)."""
        nodes = list(self.g.node)
        avail = set(self.vals)
        producer: dict[str, int] = {}
        for k, n in enumerate(nodes):
            for o in n.output:
                if not o:
                    continue
                if o in avail or o in producer:
                    self.cur = n
                    raise self.err(f"tensor {o!r} is written twice (by two nodes, or by a node and an initializer/"
                                   f"the graph input); give every tensor one producer")
                producer[o] = k
        waiting = [0] * len(nodes)
        users: dict[int, list[int]] = {}
        for k, n in enumerate(nodes):
            for i in dict.fromkeys(n.input):
                if not i or i in avail:
                    continue
                if i not in producer:
                    self.cur = n
                    raise self.err(f"input {i!r} is neither computed by a node nor an initializer (missing "
                                   f"initializer?): save the model with all its initializers")
                waiting[k] += 1
                users.setdefault(producer[i], []).append(k)
        ready = [k for k in range(len(nodes)) if waiting[k] == 0]  # a heap: file order where free
        order = []
        while ready:
            k = heapq.heappop(ready)
            order.append(nodes[k])
            for u in users.get(k, ()):
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(ready, u)
        if len(order) != len(nodes):
            done = {id(n) for n in order}
            stuck = [n for n in nodes if id(n) not in done]
            self.cur = stuck[0]
            raise self.err(f"the graph has a cycle through {len(stuck)} node(s) (a node depends on its own "
                           f"output); an ONNX graph must be acyclic: re-export the model")
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
        except ModelError:
            raise
        except (OpError, ValueError) as e:
            raise ModelError(str(e), path=self.path) from None
        g.vectors = self.vectors(g)
        return g

    def vectors(self, g: Graph) -> Vectors | None:
        props = {p.key: p.value for p in self.m.metadata_props}
        if "qfx.vectors" not in props:
            return None
        try:
            xi, yo = load_vectors_npz(props["qfx.vectors"], _VEC_FIX, self.path)  # bounded decompression
            xi, yo = np.asarray(xi), np.asarray(yo)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"metadata qfx.vectors is not a base64 .npz with input_raw and output_raw "
                             f"({type(e).__name__}: {e}); {_VEC_FIX}", path=self.path) from None
        ti, to = g.tensors[g.nodes[0].outputs[0]], g.tensors[g.outputs[0]]
        for what, a, t in (("input_raw", xi, ti), ("output_raw", yo, to)):
            if a.dtype.kind not in "iu" or tuple(a.shape[1:]) != tuple(t.shape) or a.ndim < 1:
                raise ModelError(f"qfx.vectors {what} must be integers shaped (N, "
                                 f"{', '.join(map(str, t.shape))}), got {a.dtype} {a.shape}; {_VEC_FIX}",
                                 path=self.path)
            if a.size and (a.min() < t.type.raw_min or a.max() > t.type.raw_max):
                raise ModelError(f"qfx.vectors {what} holds mantissas outside {t.type}; {_VEC_FIX}", path=self.path)
        if xi.shape[0] != yo.shape[0]:
            raise ModelError(f"qfx.vectors input_raw and output_raw have different counts ({xi.shape[0]} and "
                             f"{yo.shape[0]}); {_VEC_FIX}", path=self.path)
        return Vectors(xi.astype(np.int64), yo.astype(np.int64), "model")

    # ---------------------------------------------------------------- ops
    def read_node(self, n):
        dom, op = n.domain, n.op_type
        if len(n.output) < 1 or not n.output[0]:
            raise self.err("node has no output; every node must name its output tensor")
        out = n.output[0]
        key = op if dom in STD else ("Quant" if dom in QONNX_DOMAINS and op in ("Quant", "IntQuant") else
                                      f"{dom}.{op}")
        if key in _MAX_INPUTS and len(n.input) > _MAX_INPUTS[key]:
            raise self.err(f"{op} takes at most {_MAX_INPUTS[key]} inputs, got {len(n.input)}; remove the extra "
                           f"inputs")
        if key in _MAX_INPUTS and any(o for o in n.output[1 if op != "MaxPool" else 2:]):
            raise self.err(f"{op} has {len(n.output)} outputs; only the first is supported (remove the others)")
        if dom == "qfx" and op == "FixedPoint":
            return self.cast_fixedpoint(out)
        if dom in QONNX_DOMAINS and op in ("Quant", "IntQuant"):
            return self.cast_qonnx(out)
        if dom == "qfx" and op in ("Conv", "AveragePool", "GlobalAveragePool"):
            return getattr(self, "op_" + op)(out, qfx=True)
        if dom in STD and hasattr(self, "op_" + op):
            return getattr(self, "op_" + op)(out)
        if dom in STD and op == "BatchNormalization":
            raise self.err("a float BatchNormalization computes (x - mean) / sqrt(var + eps) * gamma + beta in "
                           "floating point, which rounds at every step: no fixed-point graph reproduces it exactly "
                           "(and sqrt(var + eps) is almost never a power of two). Fold the BatchNorm into the "
                           "preceding conv/linear before export (then quantize the folded weights), or use "
                           "qfx.nn.BatchNorm2d, whose scale and shift are fixed-point")
        raise self.err(f"unsupported operator {(dom + '.') if dom else ''}{op}; supported: {', '.join(SUPPORTED)}. "
                       f"Replace it with supported layers (docs/semantics.md) and re-export")

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
        except ModelError:
            raise
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
        except ModelError:
            raise
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
            except ModelError:
                raise
            except ValueError:
                raise self.err(f"the per-channel binary point (shape {np.shape(frac)}) does not broadcast to the "
                               f"constant's shape") from None
            raw = np.zeros(f.shape, dtype=object)
            try:
                for fv in np.unique(f):
                    t = FixedType(width, width - int(fv), signed, rounding, overflow)
                    sel = f == fv
                    if arr is not None and arr.dtype.kind in "iu":  # integers: exact, even beyond 2**53
                        raw[sel] = requantize_raw(np.broadcast_to(arr, f.shape)[sel], 0, t)
                    elif arr is not None:
                        raw[sel] = float_to_raw(np.broadcast_to(arr, f.shape)[sel], t)
                    else:
                        for sf in np.unique(arr_frac[sel]):
                            s2 = sel & (arr_frac == sf)
                            raw[s2] = requantize_raw(np.asarray(arr_raw)[s2], int(sf), t)
            except ModelError:
                raise
            except ValueError as e:
                raise self.err(str(e)) from None
            if width <= 62:
                raw = raw.astype(np.int64)
            if k_hot is not None:
                self.check_khot(raw, k_hot, digits, width)
            self.vals[out] = CFixed(raw, np.asarray(frac), width, signed, rounding, overflow, k_hot, digits)
            return
        if k_hot is not None or digits is not None:
            raise self.err("k_hot/digits describe weights; an activation cast must not carry them (remove the "
                           "attributes)")
        if np.asarray(frac).size != 1:
            raise self.err("a per-channel binary point is only supported for constants (weights), not activations")
        try:
            t = FixedType(width, width - int(np.asarray(frac).ravel()[0]), signed, rounding, overflow)
        except ModelError:
            raise
        except ValueError as e:
            raise self.err(str(e)) from None
        if isinstance(x, Pending):
            if x.relu_out is not None and overflow == "AP_WRAP":
                raise self.err("a ReLU before a wrapping cast cannot be moved after it exactly; cast with saturation")
            node = Node(self.node_name(x.node.name), x.node.op, list(x.node.inputs), [], dict(x.node.attrs),
                        dict(x.node.params))  # a copy: one exact result may feed several casts
            node.attrs["out_type"] = t
            mid = x.relu_out if x.relu_out is not None else out
            if mid in self.tensors:  # a second cast of the same ReLU'd result
                mid = out + "/pre_relu"
                while mid in self.tensors or mid in self.vals or mid in self.file_names:
                    mid += "_"
            node.outputs = [mid]
            self.nodes.append(node)
            self.tensors[mid] = Tensor(mid)
            self.set_act(node, mid)
            if x.relu_out is not None:
                self.set_act(self.emit("relu", [mid], out, name=x.onnx_name + "/relu"), out)
            return
        if not isinstance(x, Act):
            raise self.err("cannot cast this input")
        self.set_act(self.emit("quant", [x.name], out, {"out_type": t}), out)

    def check_khot(self, raw: np.ndarray, k_hot: np.ndarray, digits, width: int) -> None:
        """``k_hot``: one K or one per index of axis 0, each in 1..width, and the constant really is K-hot."""
        if digits not in ("binary", "csd"):
            raise self.err(f"k_hot needs digits 'binary' or 'csd', got {digits!r}; write both attributes")
        n = raw.shape[0] if raw.ndim else 1
        if k_hot.ndim != 1 or k_hot.size not in (1, n) or (k_hot < 1).any() or (k_hot > width).any():
            raise self.err(f"k_hot must be one K or one per output channel ({n}), each in 1..{width}; got "
                           f"{k_hot.tolist()}")
        rows = raw.reshape(n, -1)
        if rows.dtype == object:
            def count(m):
                m = abs(int(m))
                return bin(m).count("1") if digits == "binary" else bin((m >> 1) ^ (m + (m >> 1))).count("1")
            counts = np.vectorize(count, otypes=[np.int64])(rows) if rows.size else np.zeros(rows.shape, np.int64)
        else:
            counts = digit_count(rows, digits)
        per_row = counts.max(axis=1) if rows.size else np.zeros(n, np.int64)
        bad = np.nonzero(per_row > np.broadcast_to(k_hot, (n,)))[0]
        if bad.size:
            raise self.err(f"the constant is not {k_hot.tolist()}-hot ({digits}) as k_hot says (channel "
                           f"{int(bad[0])} has a mantissa with {int(per_row[bad[0]])} nonzero digits); project the "
                           f"weights onto K-hot values before export, or remove k_hot")

    # arithmetic ---------------------------------------------------------
    def pending(self, out, op, x: Act, attrs=None, params=None, stage="done"):
        from ..ir.ops import get
        node = Node(self.cur.name or f"{op}_{len(self.nodes)}", op, [x.name], ["?"], dict(attrs or {}),
                    dict(params or {}))
        node.attrs.setdefault("out_type", FixedType(1, 1))  # placeholder for the shape check only
        try:
            shape = tuple(get(op).shape(node, [x.shape]))
        except ModelError:
            raise
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
        except ModelError:
            raise
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
        a = self.inp(0)
        i_act, i_c = (0, 1) if isinstance(a, (Act, Pending)) else (1, 0)
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
            # relu(relu(s)) = relu(s); stage "done": a constant Add after the ReLU is no bias/shift of the
            # node (relu(s) + b != relu(s + b)), so it must not be merged into it
            self.vals[out] = Pending(v.node, v.shape, v.onnx_name, "done", v.relu_out or out)
            return
        x = self.typed_act(0)
        self.set_act(self.emit("relu", [x.name], out), out)

    def op_Clip(self, out):
        x = self.typed_act(0)
        t = x.type.replace(rounding="AP_RND_CONV", overflow="AP_SAT")
        bounds = []
        for i, default, side in ((1, x.type.raw_min, "min"), (2, x.type.raw_max, "max")):
            if i < len(self.cur.input) and self.cur.input[i]:
                v = self.inp(i)
                arr = v.arr if isinstance(v, CFloat) else None
                if arr is None or arr.size != 1:
                    raise self.err(f"Clip {side} must be a scalar constant (an initializer or Constant), not "
                                   f"{'an activation' if isinstance(v, (Act, Pending)) else 'a tensor of ' + str(np.shape(arr if arr is not None else v.raw)) + ' values'}")
                bounds.append(self.clip_bound(float(arr.reshape(-1)[0]), x.type, t, side))
            else:
                bounds.append(default)
        if bounds[0] > bounds[1]:
            raise self.err(f"Clip min is greater than max (as mantissas of {x.type}: {bounds[0]} > {bounds[1]}); "
                           f"give min <= max")
        self.set_act(self.emit("clip", [x.name], out, {"lo": bounds[0], "hi": bounds[1]}), out)

    def clip_bound(self, v: float, xt: FixedType, t: FixedType, side: str) -> int:
        """A Clip bound as a mantissa of the input type; exact or an error.

        ``min(max(x, lo), hi)`` stays on ``x``'s grid only if every bound that can win is a value of
        ``x``'s type; a bound beyond the type's range on its own side never wins (a no-op).
        """
        from fractions import Fraction
        fv, lo_v, hi_v = Fraction(v), xt.exact_min(), xt.exact_max()
        if (side == "min" and fv <= lo_v) or (side == "max" and fv >= hi_v):
            return xt.raw_min if side == "min" else xt.raw_max
        if fv < lo_v or fv > hi_v:
            raise self.err(f"Clip {side} {v!r} lies outside the range [{float(lo_v)!r}, {float(hi_v)!r}] of the "
                           f"input type {xt}: every output would be {v!r}, which that type cannot hold; use a bound "
                           f"inside the range")
        raw = int(float_to_raw(np.array([v], dtype=np.float64), t)[0])
        if Fraction(raw) * Fraction(2) ** -xt.frac_bits != fv:
            near = float(Fraction(raw) * Fraction(2) ** -xt.frac_bits)
            raise self.err(f"Clip {side} {v!r} is not on the grid of the input type {xt} (a multiple of "
                           f"2**-{xt.frac_bits}), so the clipped values would leave the grid; use a bound on the "
                           f"grid, e.g. {near!r} (qfx.export_onnx writes the bounds cast to the input type)")
        return raw

    def op_MaxPool(self, out):
        x = self.typed_act(0)
        if self.attr("storage_order", AttributeProto.INT, 0) != 0 or len(self.cur.output) > 1 and self.cur.output[1]:
            raise self.err("MaxPool indices output is not supported")
        k, s, p = self.window_attrs()
        if max(p[0], p[2]) >= k[0] or max(p[1], p[3]) >= k[1]:
            raise self.err(f"MaxPool pads {list(p)} must be smaller than the kernel {list(k)} (a window of padding "
                           f"only has no maximum); use smaller pads")
        self.set_act(self.emit("maxpool", [x.name], out, {"kernel": k, "stride": s, "pads": p}), out)

    def recip_bits(self, qfx, n):
        if qfx:
            r = self.attr("recip_bits", AttributeProto.INT, DEFAULT_RECIP_BITS)
            if not 1 <= r <= 62:  # the reciprocal's mantissa is a 64-bit integer in hls_lib (qfx_pool.h)
                raise self.err(f"recip_bits {r} outside the supported 1..62; export with recip_bits in that range")
            return r
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
        if shp is None or shp.ndim != 1 or len(shp) != 2 or shp[1] not in (n, -1) or shp[0] not in (1, -1, 0) \
                or (shp[0] == -1 and shp[1] == -1):
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
            raise self.err(f"only casts to FLOAT or DOUBLE are supported (to={to}); remove the Cast or export the "
                           f"model in floating point")
        bits, max_frac, max_int = _CAST_TARGETS[to]
        kind = "double" if to == TensorProto.DOUBLE else "float32"
        if isinstance(v, Pending):
            raise self.err(f"input is the exact result of {v.onnx_name!r}, which has no fixed-point type: put a "
                           f"FixedPoint/Quant before the Cast")
        if isinstance(v, (Act, CFixed)) and (v.type if isinstance(v, Act) else v) is not None:
            t = v.type if isinstance(v, Act) else v
            fr = np.asarray(t.frac_bits if isinstance(v, Act) else v.frac)
            if t.width > bits or int(fr.max()) > max_frac or int((t.width - fr).max()) > max_int:
                raise self.err(f"casting a {t.width}-bit fixed-point tensor (binary point {int(fr.max())}) to "
                               f"{kind} would round it; use a type of at most {bits} bits within {kind}'s "
                               f"exponent range, or drop the Cast")
        elif isinstance(v, Act) and to == TensorProto.FLOAT and self.input_elem == TensorProto.DOUBLE:
            raise self.err("casting the double graph input to float32 rounds it before its quantizer; quantize the "
                           "input first or give the graph a float32 input")
        elif isinstance(v, CFloat):
            with np.errstate(over="ignore"):
                arr = np.asarray(v.arr, dtype=np.float64)
                if to == TensorProto.FLOAT:
                    arr = arr.astype(np.float32).astype(np.float64)  # rounds as onnxruntime does
            if not np.isfinite(arr).all():
                raise self.err(f"the constant overflows {kind}; use values within {kind}'s range")
            v = CFloat(arr)
        self.vals[out] = v

    def op_Constant(self, out):
        for a in self.cur.attribute:
            if a.name == "value" and a.type == AttributeProto.TENSOR:
                self.vals[out] = CFloat(self.tensor_array(a.t, "Constant"))
                return
        raise self.err("only Constant with a tensor 'value' is supported")


def read_model_proto(model: onnx.ModelProto, path: str = "<model>") -> Graph:
    """The IR of an already parsed ModelProto."""
    check_text_fields(model, path)  # names, op types, domains: UTF-8 text only
    reader = _Reader(model, path)
    try:
        return reader.read()
    except ModelError:
        raise
    except RecursionError:
        raise ModelError("the model is too deeply nested; simplify the graph", path=path) from None
    except Exception as e:
        # A bug in the frontend, not in the user's model: errors caused by malformed input are mapped
        # to ModelError where they happen. Propagate it as it is (type and traceback kept; the CLI
        # reports an internal error), with a note saying where the reader was.
        n = reader.cur
        where = "the graph" if n is None else \
            f"node {(n.name or (n.output[0] if n.output else '?'))!r} ({(n.domain + '.') if n.domain else ''}{n.op_type})"
        e.add_note(f"qfx-compile internal error while reading {path}, at {where}: a frontend bug, please report it")
        raise


def load_model(path) -> Graph:
    """Read ``path`` (qfx ONNX or QONNX) into an IR graph with shapes and types inferred."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelError("is a directory, not a model file; give the path of the .onnx file", path=path)
    if not os.path.exists(path):
        raise ModelError("cannot read the file: it does not exist; check the path", path=path)
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ModelError(f"file is {size} bytes; at most {MAX_FILE_BYTES} are supported", path=path)
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"cannot read the file: {e.strerror or e}; check the path and its permissions",
                         path=path) from None
    if not data:
        raise ModelError("the file is empty (0 bytes), not an ONNX model; export the model again", path=path)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        raise ModelError("not an ONNX model (the protobuf cannot be parsed; truncated or corrupt file?); give a "
                         ".onnx file written by qfx.export_onnx or Brevitas export_qonnx", path=path) from None
    if not model.HasField("graph") or not len(model.graph.node):
        raise ModelError("not an ONNX model (no graph or no nodes); give a .onnx file written by "
                         "qfx.export_onnx or Brevitas export_qonnx", path=path)
    return read_model_proto(model, path)
