"""Read a qfx ONNX file (docs/semantics.md) or a QONNX file into the IR; every input check lives here.

``load_model(path, input_type=None) -> ir.Graph`` with shapes and types inferred.
Each ONNX node is read by the importer registered for its ``(domain, op_type)`` in
the one table ``ir.ops.onnx_table.IMPORTERS`` (IR-op importers sit in their
``ir/ops/<op>.py``; structural ones in ``frontend/structural.py``, casts in
``frontend/casts.py``, float arithmetic in ``frontend/arith.py``). Anything the IR
cannot represent exactly, and every malformed file, raises :class:`ModelError`
naming the file, the node and what to do; the nodes that cannot be compiled are
all reported at once.
"""
from __future__ import annotations

import heapq
import math
import os

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from ..ir.graph import Const, Graph, Node, Tensor, Vectors
from ..ir.ops import OpError
from ..ir.ops.avgpool import DEFAULT_RECIP_BITS
from ..ir.ops.onnx_table import IMPORTERS, QONNX, STD, supported
from ..ir.passes.shapes import infer_shapes
from ..fixed.digits import DIGIT_FLAVOURS, SP2_MAX_K, digit_count
from ..fixed.cast import float_to_raw
from ..fixed.cast import requantize_raw
from ..fixed.types import FixedType
from .errors import ModelError
from .untrusted import check_text_fields, load_vectors_npz
from .values import Act, Broken, CFixed, CFloat, Pending, Real

MAX_FILE_BYTES = 2 << 30
MAX_ELEMENTS = 1 << 26  # per tensor (without batch)
QONNX_DOMAINS = QONNX
_VEC_FIX = "re-export with qfx.export_onnx(..., vectors=N) or delete the qfx.vectors metadata entry"
#: FINN/QONNX ``finn_datatype`` annotations of the graph input -> the input type
_FINN_INT = {"BIPOLAR": None, "BINARY": FixedType(1, 1, False)}


def finn_type(name: str) -> FixedType | None:
    """The fixed-point type of a FINN datatype name (INT8, UINT4, FIXED<8,3>, BINARY); None if not one."""
    import re
    n = name.strip().upper()
    if n in _FINN_INT:
        return _FINN_INT[n]
    m = re.fullmatch(r"(U?)INT(\d+)", n)
    if m and 1 <= int(m.group(2)) <= 64:
        w = int(m.group(2))
        return FixedType(w, w, not m.group(1))
    m = re.fullmatch(r"(U?)FIXED<\s*(\d+)\s*,\s*(-?\d+)\s*>", n)
    if m and 1 <= int(m.group(2)) <= 64:
        return FixedType(int(m.group(2)), int(m.group(3)), not m.group(1))
    return None


class _Reader:
    def __init__(self, model: onnx.ModelProto, path: str, input_type: FixedType | None = None,
                 softmax: str | None = None):
        self.m, self.path, self.g = model, path, model.graph
        self.input_type, self.softmax = input_type, softmax
        self.blockers: list[ModelError] = []
        self.notes: list[str] = []
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
        if isinstance(v, Real):
            from .real import real_to_act
            a = real_to_act(self, v)
            if a is not None:
                return a
            raise self.err(f"input {self.cur.input[i]!r} is an exact real-valued result of node {v.onnx_name!r} "
                           f"(a float scale, BatchNorm or bias) that this operator cannot take: put a Quant right "
                           f"after {v.onnx_name!r}")
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
            self.vals[name] = CFloat(self.tensor_array(t, "initializer"), t.data_type)
        gi = ins[0]
        tt = gi.type.tensor_type if gi.type.HasField("tensor_type") else None
        if tt is None or tt.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            raise self.err(f"graph input {gi.name!r} must be a float or double tensor")
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        if len(dims) not in (2, 3, 4):
            raise self.err(f"graph input {gi.name!r} must have shape (N, F), (N, C, L) or (N, C, H, W), got rank "
                           f"{len(dims)}")
        shape = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value < 1:
                raise self.err(f"graph input {gi.name!r} has a dynamic or unknown dimension ({d.dim_param or '?'}); "
                               f"export with a static shape")
            shape.append(int(d.dim_value))
        if math.prod(shape) > MAX_ELEMENTS:
            raise self.err(f"graph input {gi.name!r} shape {shape} is too large")
        if len(shape) == 2:  # a 1-D map (C, L) is the 2-D map (C, 1, L) of the IR
            shape = [shape[0], 1, shape[1]]
        self.input_name = gi.name
        self.input_elem = tt.elem_type
        in_t = self.input_type if self.input_type is not None else self.annotated_input_type(gi.name)
        self.tensors[gi.name] = Tensor(gi.name, tuple(shape), in_t)
        self.vals[gi.name] = Act(gi.name, tuple(shape), in_t)
        self.final_softmax = self.find_final_softmax()
        for node in self.topo_order():
            self.cur = node
            bad = [self.vals[i] for i in node.input if isinstance(self.vals.get(i), Broken)]
            if bad:  # a consumer of a node that could not be read: that node's blocker says it all
                self.break_outputs(node)
                continue
            try:
                self.read_node(node)
            except ModelError as e:
                self.blockers.append(e)
                self.break_outputs(node)
        self.cur = None
        out = g.output[0].name
        v = self.vals.get(out)
        if not self.blockers and not isinstance(v, Broken):
            try:
                v = self.finish_output(out, v)
            except ModelError as e:
                self.blockers.append(e)
        self.raise_blockers()
        return self.build(v.name)

    def break_outputs(self, node):
        for o in node.output:
            if o:
                self.vals[o] = Broken(node.name or o)

    def raise_blockers(self):
        """One ModelError for every node that cannot be compiled (the file named once)."""
        if not self.blockers:
            return
        if len(self.blockers) == 1:
            raise self.blockers[0]
        lines, sup = [], False
        for e in self.blockers:
            reason = e.reason
            if "; supported: " in reason:  # the list of supported operators is given once, below
                head, _, rest = reason.partition("; supported: ")
                reason = head + rest[rest.find(". ") if ". " in rest else len(rest):]
                sup = True
            where = f"node {e.node!r} ({e.op})" if e.node is not None else "the graph"
            lines.append(f"  - {where}: {reason}")
        msg = f"{len(self.blockers)} problems, every one of which must be fixed before the model compiles:\n" + \
            "\n".join(lines)
        if sup:
            msg += f"\nsupported operators: {', '.join(supported())}"
        raise ModelError(msg, path=self.path)

    def annotated_input_type(self, name: str) -> FixedType | None:
        """The graph input's type from a FINN ``finn_datatype`` annotation (graph.quantization_annotation)."""
        for a in self.g.quantization_annotation:
            if a.tensor_name != name:
                continue
            for kv in a.quant_parameter_tensor_names:
                if kv.key == "finn_datatype":
                    dt = kv.value
                    if dt.strip().upper() in ("FLOAT32", "FLOAT16", "BFLOAT16"):
                        return None
                    if dt.strip().upper() == "BIPOLAR":  # values -1 and +1: a 2-bit type, codes recorded
                        self.input_codes = (-1, 1, 2)
                        return FixedType(2, 2, True)
                    t = finn_type(dt)
                    if t is None:
                        raise self.err(f"the graph input {name!r} is annotated finn_datatype "
                                       f"{dt[:40]!r}, which is not a fixed-point type here; give the input type "
                                       f"with --input-type (e.g. ap_fixed<8,3>) or remove the annotation")
                    return t
        return None

    def find_final_softmax(self):
        """The Softmax (or LogSoftmax) node that computes the graph output, if any."""
        out = self.g.output[0].name
        for n in self.g.node:
            if out in n.output and n.domain in STD and n.op_type in ("Softmax", "LogSoftmax"):
                return n
        return None

    def finish_output(self, out: str, v) -> Act:
        """The graph output as an IR activation: an exact result with no cast gets its exact type."""
        from .real import as_real, real_output
        if isinstance(v, (Pending, Real)):
            r = v if isinstance(v, Real) else as_real(self, v)
            return real_output(self, r)
        if not isinstance(v, Act) or v.type is None:
            raise self.err(f"the graph output {out!r} must be computed from the input (it is a constant or the "
                           f"untyped float input)")
        return v

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
        typed = self.tensors[self.input_name].type is not None
        if not typed and (not keep or keep[0].op != "quant" or keep[0].inputs != [self.input_name] or
                          len([n for n in keep if self.input_name in n.inputs]) != 1):
            raise ModelError(f"the graph input {self.input_name!r} must feed exactly one quantizer "
                             f"(FixedPoint/Quant) and nothing else, or have a type: give it with --input-type "
                             f"(e.g. ap_fixed<16,6>) or a finn_datatype annotation", path=self.path)
        if self.notes:
            g.metadata["qfx.notes"] = "\n".join(self.notes)
        if typed and getattr(self, "input_codes", None):
            g.metadata["qfx.input_codes"] = ",".join(map(str, self.input_codes))
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
        ti = g.tensors[g.inputs[0]] if g.tensors[g.inputs[0]].type is not None else g.tensors[g.nodes[0].outputs[0]]
        to = g.tensors[g.outputs[0]]
        if xi.ndim == 3 and len(ti.shape) == 3 and xi.shape[1:] == (ti.shape[0], ti.shape[2]) and ti.shape[1] == 1:
            xi = xi.reshape((xi.shape[0],) + tuple(ti.shape))  # 1-D maps (N, C, L) are (N, C, 1, L) in the IR
        if yo.ndim == 3 and len(to.shape) == 3 and yo.shape[1:] == (to.shape[0], to.shape[2]) and to.shape[1] == 1:
            yo = yo.reshape((yo.shape[0],) + tuple(to.shape))
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
        """Dispatch through the one importer table (ir.ops.onnx_table.IMPORTERS)."""
        dom, op = n.domain, n.op_type
        if len(n.output) < 1 or not n.output[0]:
            raise self.err("node has no output; every node must name its output tensor")
        out = n.output[0]
        imp = IMPORTERS.get((dom, op))
        if imp is not None and imp.max_inputs is not None and len(n.input) > imp.max_inputs:
            raise self.err(f"{op} takes at most {imp.max_inputs} inputs, got {len(n.input)}; remove the extra "
                           f"inputs")
        if imp is not None and any(o for o in n.output[imp.outputs:]):
            raise self.err(f"{op} has {len(n.output)} outputs; only the first is supported (remove the others)")
        if dom in STD and n.input and all(isinstance(self.vals.get(i), CFloat) for i in n.input if i) \
                and op not in ("Constant",) and (imp is None or getattr(imp.fn, "foldable", True)):
            return self.fold_constant(n)
        if imp is None:
            if dom in STD and op == "Shape":
                return self.fold_shape(n)
            raise self.err(f"unsupported operator {(dom + '.') if dom else ''}{op}; supported: "
                           f"{', '.join(supported())}. Replace it with supported layers (docs/semantics.md) and "
                           f"re-export")
        return imp.fn(self, out)

    def fold_shape(self, n):
        """``Shape`` of an activation: its static shape with batch 1 (the input shape is static)."""
        v = self.inp(0)
        if not isinstance(v, (Act, Real, Pending)):
            raise self.err("Shape of this input is not known statically")
        shp = np.asarray([1, *v.shape], dtype=np.int64)
        start, end = self.attr("start", AttributeProto.INT, 0), self.attr("end", AttributeProto.INT, None)
        self.vals[n.output[0]] = CFloat(shp[start:end], TensorProto.INT64)

    def fold_constant(self, n):
        """A standard node whose inputs are all constants: computed by onnxruntime in the file's own element
        types (as the QONNX reference executor does), so the constant is what the file means."""
        import onnxruntime as ort
        from onnx import helper
        ins, feeds = [], {}
        for k, name in enumerate(n.input):
            if not name:
                ins.append("")
                continue
            c = self.vals[name]
            elem = c.elem or (TensorProto.INT64 if c.arr.dtype.kind in "iu" else TensorProto.DOUBLE)
            arr = np.asarray(c.arr).astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
            nm = f"i{k}"
            ins.append(nm)
            feeds[nm] = arr
        outs = [f"o{k}" if o else "" for k, o in enumerate(n.output)]
        node = helper.make_node(n.op_type, ins, outs, domain=n.domain)
        node.attribute.extend(n.attribute)
        g = helper.make_graph([node], "fold", [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(
            v.dtype), v.shape) for k, v in feeds.items()], [onnx.ValueInfoProto(name=o) for o in outs if o])
        opset = [o for o in self.m.opset_import if o.domain in STD] or [helper.make_opsetid("", 17)]
        m = helper.make_model(g, opset_imports=opset, ir_version=min(self.m.ir_version or 8, 10))
        try:
            res = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        except Exception as e:
            if os.environ.get("QFX_DEBUG"):
                raise
            raise self.err(f"this constant expression cannot be evaluated ({type(e).__name__}); simplify the "
                           f"graph (e.g. onnx-simplifier) or re-export") from None
        k = 0
        for o in n.output:
            if o:
                a = np.asarray(res[k])
                k += 1
                elem = helper.np_dtype_to_tensor_dtype(a.dtype)
                if a.dtype.kind == "f":
                    if not np.isfinite(a).all():
                        raise self.err("a constant expression gives inf or NaN")
                    a = a.astype(np.float64)
                elif a.dtype.kind in "iub":
                    a = a.astype(np.int64)
                else:
                    raise self.err(f"a constant expression gives {a.dtype} values")
                self.vals[o] = CFloat(a, elem)

    # casts --------------------------------------------------------------
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
                self.check_khot(raw, k_hot, digits, width, signed)
                if not k_hot.any():  # every row fixed-point (K = 0): a plain constant
                    k_hot, digits = None, None
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

    def check_khot(self, raw: np.ndarray, k_hot: np.ndarray, digits, width: int, signed: bool = True) -> None:
        """``k_hot``: one K or one per index of axis 0, each in 0..width (0: a plain fixed-point row, Mix and
        Match), and every row with K > 0 really is K-hot (``sp2``: K <= 2 and every mantissa in the width's SP2
        code, fixed.digits.sp2_table); rows with K = 0 are not checked."""
        if digits not in DIGIT_FLAVOURS:
            raise self.err(f"k_hot needs digits {' or '.join(repr(d) for d in DIGIT_FLAVOURS)}, got {digits!r}; "
                           f"write both attributes")
        if digits == "sp2" and k_hot.size and (k_hot > SP2_MAX_K).any():
            raise self.err(f"k_hot with digits 'sp2' must be 1 or 2 (a sum of at most two powers of two); got "
                           f"{k_hot.tolist()}")
        n = raw.shape[0] if raw.ndim else 1
        if k_hot.ndim != 1 or k_hot.size not in (1, n) or (k_hot < 0).any() or (k_hot > width).any():
            raise self.err(f"k_hot must be one K or one per output channel ({n}), each in 0..{width} (0: a "
                           f"fixed-point row); got {k_hot.tolist()}")
        khot_rows = np.broadcast_to(k_hot, (n,)) > 0
        rows = raw.reshape(n, -1)[khot_rows]
        if digits == "sp2":  # the code is a table on the grid (int64 mantissas)
            if width > 62:
                raise self.err(f"k_hot with digits 'sp2' supports weight widths up to 62, got {width}")
            counts = digit_count(rows.astype(np.int64), digits, width, signed) if rows.size else \
                np.zeros(rows.shape, np.int64)
        elif rows.dtype == object:
            def count(m):
                m = abs(int(m))
                return bin(m).count("1") if digits == "binary" else bin((m >> 1) ^ (m + (m >> 1))).count("1")
            counts = np.vectorize(count, otypes=[np.int64])(rows) if rows.size else np.zeros(rows.shape, np.int64)
        else:
            counts = digit_count(rows, digits)
        per_row = counts.max(axis=1) if rows.size else np.zeros(len(rows), np.int64)
        channel = np.nonzero(khot_rows)[0]
        bad = np.nonzero(per_row > np.broadcast_to(k_hot, (n,))[khot_rows])[0]
        if bad.size:
            raise self.err(f"the constant is not {k_hot.tolist()}-hot ({digits}) as k_hot says (channel "
                           f"{int(channel[bad[0]])} has a mantissa with {int(per_row[bad[0]])} nonzero digits); "
                           f"project the weights onto K-hot values before export, or remove k_hot")

    # helpers ------------------------------------------------------------
    # exact real results (frontend/real.py), for importers in ir/ops
    def wants_real(self, x, *consts) -> bool:
        """True when a linear layer must take the exact real path: its input is an exact real result or the
        float graph input, or a constant is a float (not a fixed-point grid)."""
        return isinstance(x, Real) or (isinstance(x, Act) and x.type is None) or \
            any(isinstance(c, CFloat) for c in consts)

    def real_linear(self, out, x, W, bias, op, attrs):
        from .real import exact_values, real_linear
        bv = None if bias is None else list(exact_values(self, bias, "bias").reshape(-1))
        return real_linear(self, out, x, W, bv, op, attrs)

    def lazy_relu(self, out) -> bool:
        """A ReLU of input 0 that is not computed yet: on a pending result (moved after its cast: exact for a
        saturating cast) or in an exact real's chain. False: input 0 is a plain activation."""
        v = self.inp(0)
        if isinstance(v, Pending):
            # relu(relu(s)) = relu(s); stage "done": a constant Add after the ReLU is no bias/shift of the
            # node (relu(s) + b != relu(s + b)), so it must not be merged into it
            self.vals[out] = Pending(v.node, v.shape, v.onnx_name, "done", v.relu_out or out)
            return True
        if isinstance(v, Real) or (isinstance(v, Act) and v.type is None):
            base = v if isinstance(v, Real) else Real(v, [], v.name)
            self.vals[out] = Real(base.act, base.chain + [("relu",)], self.cur.name or out)
            return True
        return False

    def flatten(self, out):
        from .structural import flatten_to
        flatten_to(self, out)

    def argmax(self, out):
        """The index of the first largest feature of input 0 (its exact value, whatever it is)."""
        from ..ir.ops.argmax import index_type
        from .real import as_real, real_output
        v = self.inp(0)
        if isinstance(v, (Pending, Real)):
            v = real_output(self, v if isinstance(v, Real) else as_real(self, v), note=False)
        x = v if isinstance(v, Act) and v.type is not None else self.typed_act(0)
        if len(x.shape) != 1:
            raise self.err(f"an argmax needs an (N, F) input, got a map of shape {tuple(x.shape)}")
        self.set_act(self.emit("argmax", [x.name], out, {"out_type": index_type(x.shape[0])}), out)

    def real_input(self, i: int):
        """Input ``i`` when it is an exact real result of a typed tensor, else None."""
        v = self.inp(i)
        return v if isinstance(v, Real) and v.act.type is not None else None

    def real_map(self, out, x, op, attrs, increasing_only=True):
        """An op that commutes with a non-decreasing per-channel chain (max pooling): on the codes."""
        from .real import channels_increasing
        if increasing_only and not channels_increasing(x):
            raise self.err(f"{op} of {x.onnx_name!r}, whose values decrease with their codes (a negative scale), "
                           f"is not supported; put a Quant with a positive scale before it")
        o = out + "/codes"
        while o in self.tensors or o in self.vals or o in self.file_names:
            o += "_"
        self.set_act(self.emit(op, [x.act.name], o, attrs), o)
        self.vals[out] = Real(self.vals[o], list(x.chain), x.onnx_name)

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

    def window_attrs(self, conv=False):
        k = self.attr("kernel_shape", AttributeProto.INTS, required=not conv)
        s = self.attr("strides", AttributeProto.INTS, None)
        p = self.attr("pads", AttributeProto.INTS, None)
        d = self.attr("dilations", AttributeProto.INTS, None)
        if self.attr("auto_pad", AttributeProto.STRING, "NOTSET") != "NOTSET":
            raise self.err("auto_pad is not supported; give explicit pads")
        if self.attr("ceil_mode", AttributeProto.INT, 0) != 0:
            raise self.err("ceil_mode=1 is not supported")
        if (k is not None and len(k) == 1) or (s is not None and len(s) == 1) or (d is not None and len(d) == 1) \
                or (p is not None and len(p) == 2):  # a 1-D window over (C, L): the IR's (1, k) over (C, 1, L)
            k, s, d = [None if v is None else [1, *v] for v in (k, s, d)]
            p = None if p is None or len(p) != 2 else [0, p[0], 0, p[1]]
        if d is not None and list(d) != [1, 1]:
            raise self.err(f"dilations {d} are not supported (only 1)")
        if k is not None and len(k) != 2 or s is not None and len(s) != 2 or p is not None and len(p) != 4:
            raise self.err("kernel_shape/strides must have 1 or 2 entries and pads 2 or 4 (1-D or 2-D)")
        s = tuple(s) if s is not None else (1, 1)
        p = (p[0], p[1], p[2], p[3]) if p is not None else (0, 0, 0, 0)
        if any(v < 0 for v in p) or any(v < 1 for v in s) or (k is not None and any(v < 1 for v in k)):
            raise self.err("kernel and strides must be >= 1 and pads >= 0")
        return (tuple(k) if k is not None else None), s, p

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



def _input_type(t) -> FixedType | None:
    if t is None or isinstance(t, FixedType):
        return t
    try:
        return FixedType.parse(t)
    except ValueError as e:
        raise ModelError(f"input type: {e}") from None


def read_model_proto(model: onnx.ModelProto, path: str = "<model>", input_type=None, softmax: str | None = None) \
        -> Graph:
    """The IR of an already parsed ModelProto (``input_type``: a FixedType or its C++ spelling)."""
    check_text_fields(model, path)  # names, op types, domains: UTF-8 text only
    if softmax not in (None, "argmax"):
        raise ModelError(f"softmax must be None or 'argmax', got {softmax!r}")
    reader = _Reader(model, path, _input_type(input_type), softmax)
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


def load_model(path, input_type=None, softmax: str | None = None) -> Graph:
    """Read ``path`` (qfx ONNX or QONNX) into an IR graph with shapes and types inferred.

    ``input_type`` (a FixedType or e.g. ``"ap_fixed<16,6>"``) is the type of the graph input the
    hardware receives; without it, a FINN ``finn_datatype`` annotation, else the input's first
    quantizer. ``softmax="argmax"`` drops a final Softmax (the design outputs its input; the argmax
    decision is the same).
    """
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
    return read_model_proto(model, path, input_type, softmax)
