"""``qfx.export_onnx``: a QFX model to the ONNX file of docs/semantics.md ("ONNX format").

The model is traced with ``torch.fx`` (QFX layers are leaves), shapes come from
running the example input, and every layer is written as standard double ops
plus ``qfx`` model-local functions (:mod:`.onnx_ops`). onnxruntime runs the
file as it is and returns exactly the model's eval-mode output (float64).

:func:`load_vectors` reads the test vectors that ``vectors=N`` stores.
"""
from __future__ import annotations

import base64
import io
import operator
import os
import tempfile
from fractions import Fraction
from typing import Any

import numpy as np
import onnx
import torch
import torch.fx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from . import khot
from . import onnx_ops as ops
from .quantize import quantize, to_raw
from ..fixed.types import FixedType

FORMAT_VERSION = "1"
VECTORS_KEY = "qfx.vectors"
FORMAT_KEY = "qfx.format"


class ExportError(ValueError):
    """The model cannot be written as a bit-exact qfx ONNX file (the message says why and where)."""


def _is_qfx(m: nn.Module) -> bool:
    return type(m).__module__.startswith("qfx_compile.qfx.nn")


# Modules without arithmetic that torch users write instead of the qfx versions.
_PASS_THROUGH = (nn.Identity, nn.Dropout)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_qfx(m) or super().is_leaf_module(m, qualname)


def _fixed_point_key(t: FixedType) -> tuple:
    return (t.width, t.signed, t.rounding, t.overflow)


class _Builder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.functions: dict[tuple, onnx.FunctionProto] = {}
        self.shapes: dict[str, tuple[list, int]] = {}  # tensor -> (dims, elem type)
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._count = 0

    def unique(self, name: str, pool: set[str] | None = None) -> str:
        pool = self._names if pool is None else pool
        base, i = name, 1
        while name in pool:
            i += 1
            name = f"{base}_{i}"
        pool.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], out: str, name: str, shape, domain: str = "",
             overload: str | None = None, elem=TensorProto.DOUBLE, **attrs) -> str:
        out = self.unique(out)
        n = helper.make_node(op_type, inputs, [out], name=self.unique(name, self._node_names), domain=domain,
                             **attrs)
        if overload is not None:
            n.overload = overload
        self.nodes.append(n)
        self.shapes[out] = (list(shape), elem)
        return out

    def init(self, name: str, arr: np.ndarray) -> str:
        name = self.unique(name)
        self.inits[name] = numpy_helper.from_array(np.array(arr, order="C", copy=True), name=name)
        return name

    def fixed_point(self, x: str, t: FixedType, int_bits, ib_shape, name: str, shape, **extra) -> str:
        """``qfx.FixedPoint(x, int_bits)`` with type ``t`` (``int_bits`` scalar or per channel)."""
        key = _fixed_point_key(t)
        if key not in self.functions:
            self.functions[key] = ops.fixed_point_function(*key)
        ib = np.asarray(int_bits, dtype=np.int64).reshape(ib_shape)
        ibn = self.init(f"{name}.int_bits", ib)
        return self.node("FixedPoint", [x, ibn], f"{name}.q", f"{name}/FixedPoint", shape, domain=ops.DOMAIN,
                         overload=ops.fixed_point_overload(*key), width=t.width, signed=int(t.signed),
                         rounding=t.rounding, overflow=t.overflow, **extra)

    def custom_function(self, f: onnx.FunctionProto) -> None:
        self.functions[("fn", f.name, f.overload)] = f


def _np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _act_type(layer: nn.Module, where: str) -> FixedType:
    q = layer.output_quantizer
    if q.per_channel:
        raise ExportError(f"{where}: activation quantizers have one binary point per tensor; "
                          f"a per-channel output quantizer cannot be exported")
    if q.k_hot is not None:
        raise ExportError(f"{where}: K-hot applies to weights only, not to an output quantizer")
    return q.fixed_type()


def _const_on_grid(values: np.ndarray, q, where: str, what: str, axis_shape) -> tuple[FixedType, np.ndarray]:
    """The constant's type and int_bits (shaped to broadcast); checks values are on the grid."""
    t = q.fixed_type()
    ib = q.int_bits_tensor().to(torch.int64)
    v = torch.from_numpy(values)
    if q.per_channel:
        if ib.dim() != 1 or ib.numel() != values.shape[0]:
            raise ExportError(f"{where}: {what} int_bits shape {tuple(ib.shape)} does not match "
                              f"{values.shape[0]} channels")
        back = quantize(v, t, int_bits=ib, axis=0)
        ib_arr = ib.numpy().reshape(axis_shape)
    else:
        back = quantize(v, t)
        ib_arr = np.asarray(int(ib.reshape(-1)[0]) if ib.numel() else t.int_bits, dtype=np.int64)
    if not torch.equal(back, v):
        raise ExportError(f"{where}: quantized {what} is not on its grid {t}; the layer's quantizer and its "
                          f"quantized_{what}() disagree")
    return t, ib_arr


def _max_mag(t: FixedType) -> Fraction:
    return max(abs(t.exact_min()), abs(t.exact_max()))


def _frac_of(values: np.ndarray) -> int:
    """Smallest F with every value a multiple of 2**-F (exact, from the float64 representation)."""
    f = -1075
    for v in np.unique(np.abs(values[values != 0])):
        fr = Fraction(float(v))
        d = fr.denominator.bit_length() - 1
        if d == 0:
            n = fr.numerator
            d = -((n & -n).bit_length() - 1)
        f = max(f, d)
    return f


def _check_accumulator(where: str, x_type: FixedType, w: np.ndarray, b: np.ndarray | None) -> None:
    """The exact sum for ANY input of ``x_type`` must fit 53 bits (double arithmetic in ONNX is then exact)."""
    xmax = _max_mag(x_type)
    rows = np.abs(w.reshape(w.shape[0], -1))
    per_out = max((sum((Fraction(float(a)) for a in r), Fraction(0)) for r in rows), default=Fraction(0))
    bmax = Fraction(float(np.abs(b).max())) if b is not None and b.size else Fraction(0)
    bound = xmax * per_out + bmax
    frac = x_type.frac_bits + _frac_of(w)
    if b is not None:
        frac = max(frac, _frac_of(b))
    if bound and bound * Fraction(2) ** frac >= 2 ** 53:
        raise ExportError(f"{where}: the exact accumulator could need more than 53 bits for inputs of type "
                          f"{x_type}; onnxruntime's double arithmetic would not be exact. Use narrower types.")


# --------------------------------------------------------------------------- per-layer export bodies
class ExportContext:
    """What a layer's ``onnx_export(ctx) -> (tensor name, FixedType)`` writes with (one graph node).

    ``ctx.inputs`` / ``ctx.types`` / ``ctx.in_shapes`` (without batch) describe the node's tensor
    inputs, ``ctx.shape`` its output (``["N", ...]``); ``ctx.name`` is the module's qualified name
    (the prefix of every tensor and node it writes), ``ctx.where`` names it in errors.
    """

    def __init__(self, b: "_Builder", module: nn.Module, name: str, inputs: list[str],
                 types: list[FixedType | None], in_shapes: list[list[int]], shape: list):
        self.b, self.module, self.name = b, module, name
        self.where = f"{name} ({type(module).__name__})"
        self.inputs, self.types, self.in_shapes, self.shape = inputs, types, in_shapes, shape

    @property
    def x(self) -> str:
        return self.inputs[0]

    @property
    def xt(self) -> FixedType | None:
        return self.types[0]

    def error(self, msg: str) -> ExportError:
        return ExportError(f"{self.where}: {msg}")

    def node(self, op_type: str, inputs: list[str], suffix: str, shape=None, **kw) -> str:
        """A node ``{name}/{op_type}`` writing ``{name}.{suffix}``."""
        return self.b.node(op_type, inputs, f"{self.name}.{suffix}", f"{self.name}/{op_type}",
                           self.shape if shape is None else shape, **kw)

    def act_type(self) -> FixedType:
        return _act_type(self.module, self.where)

    def cast_out(self, acc: str, suffix: str = "out") -> tuple[str, FixedType]:
        """``FixedPoint(acc)`` to the module's output quantizer type: the node's result."""
        t = self.act_type()
        return self.b.fixed_point(acc, t, t.int_bits, (), f"{self.name}.{suffix}", self.shape), t

    def overload(self, prefix: str) -> str:
        """A fresh overload name for a shape-specialized ``qfx`` function body."""
        return f"{prefix}{len([f for f in self.b.functions if f[0] == 'fn'])}"

    def const(self, suffix: str, values: np.ndarray, q, axis_shape, shape=None, **extra) -> str:
        """An initializer on ``q``'s grid through ``FixedPoint`` (``axis_shape``: per-channel int_bits shape)."""
        tv, ib = _const_on_grid(values, q, self.where, suffix, axis_shape)
        init = self.b.init(f"{self.name}.{suffix}", values)
        if shape is not None:
            self.b.shapes[init] = (list(values.shape), TensorProto.DOUBLE)
        return self.b.fixed_point(init, tv, ib, ib.shape, f"{self.name}.{suffix}",
                                  values.shape if shape is None else shape, **extra)

    def weighted_inputs(self, layer, wshape, weight_view=None) -> list[str]:
        """``[x, FixedPoint(w)(, FixedPoint(b))]`` of a Linear/Conv layer (K-hot and 53-bit checks);
        ``weight_view``: the shape the file holds the weight in (Conv1d: ``(O, C, K)``)."""
        wq, bq = layer.weight_quantizer, layer.bias_quantizer
        if wq.axis not in (0, -len(layer.weight.shape)):
            raise self.error("weight quantizer must be per output channel (axis 0)")
        w = _np64(layer.quantized_weight())
        if weight_view is not None:
            w = w.reshape(weight_view)
        bias = layer.quantized_bias()
        bias = None if bias is None else _np64(bias)
        _check_accumulator(self.where, self.xt, w, bias)
        wt, wib = _const_on_grid(w, wq, self.where, "weight", wshape)
        extra = {}
        if khot.has_khot_rows(wq.k_hot):  # per-row K: 0 is a plain fixed-point row (no digit constraint)
            k = wq.k_hot
            extra["k_hot"] = [int(k)] if isinstance(k, int) else [int(v) for v in k]
            extra["digits"] = str(wq.digits)
            ks = np.asarray(extra["k_hot"]).reshape((-1,) + (1,) * (w.ndim - 1))
            raw = np.round(w * np.exp2((wt.width - wib).astype(np.float64))).astype(np.int64)
            counts = khot.digit_count(raw, str(wq.digits), wt.width, wt.signed)
            if not np.all((counts <= ks) | (ks == 0)):
                raise self.error(f"quantized weights are not {k}-hot ({wq.digits})")
        winit = self.b.init(f"{self.name}.weight", w)
        self.b.shapes[winit] = (list(w.shape), TensorProto.DOUBLE)
        inputs = [self.x, self.b.fixed_point(winit, wt, wib, wib.shape, f"{self.name}.weight", w.shape, **extra)]
        if bias is not None:
            bt, bib = _const_on_grid(bias, bq, self.where, "bias", (-1,))
            binit = self.b.init(f"{self.name}.bias", bias)
            inputs.append(self.b.fixed_point(binit, bt, bib, bib.shape, f"{self.name}.bias", bias.shape))
        return inputs


#: Export bodies of the torch modules written as they are (no arithmetic, or one QFX twin's body):
#: ``type -> fn(module, ctx) -> (tensor, type)``; the first ``isinstance`` match in order wins.
TORCH_EXPORTS: dict[type, Any] = {}
#: torch modules whose input may be untyped (they change nothing)
_UNTYPED_OK: set[type] = set()


def torch_export(*classes: type, untyped_ok: bool = False):
    """Register ``fn(module, ctx)`` as the export body of the torch module ``classes``."""
    def deco(fn):
        for c in classes:
            TORCH_EXPORTS[c] = fn
            if untyped_ok:
                _UNTYPED_OK.add(c)
        return fn
    return deco


@torch_export(nn.ReLU)
def _torch_relu(m, ctx):
    return ctx.node("Relu", [ctx.x], "out"), ctx.xt


@torch_export(nn.Flatten)
def _torch_flatten(m, ctx):
    if m.start_dim != 1 or m.end_dim != -1:
        raise ctx.error("only Flatten(1, -1) is supported")
    return ctx.node("Flatten", [ctx.x], "out", axis=1), ctx.xt


@torch_export(nn.MaxPool2d)
def _torch_maxpool(m, ctx):
    if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
        raise ctx.error("only MaxPool2d without dilation, ceil_mode or return_indices is supported")
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    ph, pw = _pair(m.padding)
    return ctx.node("MaxPool", [ctx.x], "out", kernel_shape=list(k), strides=list(s),
                    pads=[ph, pw, ph, pw]), ctx.xt


@torch_export(*_PASS_THROUGH, untyped_ok=True)
def _torch_identity(m, ctx):
    return ctx.x, ctx.xt


def _export_body(m: nn.Module):
    """``(fn(module, ctx), untyped input allowed)`` for ``m``, or None if it cannot be exported."""
    if _is_qfx(m) and hasattr(m, "onnx_export"):
        return type(m).onnx_export, bool(getattr(m, "onnx_untyped_input", False))
    for cls, fn in TORCH_EXPORTS.items():
        if isinstance(m, cls):
            return fn, cls in _UNTYPED_OK
    return None


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    return v if len(v) == 2 else (v[0], v[0])


def _build(model: nn.Module, example_input: torch.Tensor) -> tuple[onnx.ModelProto, Any, Any]:
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # noqa: BLE001 - report any tracing failure the same way
        raise ExportError(f"cannot trace the model with torch.fx ({type(e).__name__}: {e}); "
                          f"build it from qfx.nn layers with a static forward") from e
    gm = torch.fx.GraphModule(tracer.root, graph)
    from torch.fx.passes.shape_prop import ShapeProp
    with torch.no_grad():
        ShapeProp(gm).propagate(example_input)

    b = _Builder()
    names: dict[torch.fx.Node, str] = {}
    types: dict[torch.fx.Node, FixedType | None] = {}
    input_quant: list = []
    output_name = output_type = None

    def shape_of(n: torch.fx.Node) -> list:
        meta = n.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise ExportError(f"node {n.name}: produces no single tensor (tuples are not supported)")
        return ["N"] + [int(d) for d in meta.shape[1:]]

    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ExportError(f"the model must take exactly one input tensor, its forward takes {len(placeholders)}")

    for n in graph.nodes:
        if n.op == "placeholder":
            dims = ["N"] + [int(d) for d in example_input.shape[1:]]
            b.shapes["input"] = (dims, TensorProto.FLOAT)
            b._names.add("input")
            names[n] = b.node("Cast", ["input"], "input.double", "input/Cast", dims, to=TensorProto.DOUBLE)
            types[n] = None
            continue
        if n.op == "output":
            arg = n.args[0]
            if not isinstance(arg, torch.fx.Node):
                raise ExportError("the model must return a single tensor")
            output_name, output_type = names[arg], types[arg]
            if output_type is None:
                raise ExportError("the model output has no fixed-point type (no QFX layer on the path)")
            continue
        if n.op == "get_attr":
            raise ExportError(f"{n.target}: tensors read from the model inside forward are not supported")

        args = [a for a in n.args if isinstance(a, torch.fx.Node)]
        shape = shape_of(n)

        if n.op in ("call_function", "call_method"):
            fn = n.target
            is_flatten = fn in (torch.flatten, "flatten")
            if is_flatten:
                start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0 if fn is torch.flatten else 0)
                end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
                if start != 1 or end != -1:
                    raise ExportError(f"{n.name}: only flatten(x, 1) is supported, got start={start}, end={end}")
                names[n] = b.node("Flatten", [names[args[0]]], f"{n.name}.out", f"{n.name}/Flatten", shape, axis=1)
                types[n] = types[args[0]]
                continue
            what = getattr(fn, "__name__", str(fn))
            hint = " (use qfx.nn.Add for residual additions: it casts the sum)" if fn in (operator.add, torch.add) \
                or fn in ("add", "__add__") else ""
            raise ExportError(f"{n.name}: unsupported operation {what!r} in forward{hint}; only QFX layers "
                              f"(qfx.nn), ReLU, MaxPool2d and flatten can be exported")

        # call_module: the layer's own export body (qfx.nn: its onnx_export method; torch: TORCH_EXPORTS)
        target = str(n.target)
        m = gm.get_submodule(target)
        where = f"{target} ({type(m).__name__})"
        body = _export_body(m)
        if body is None:
            raise ExportError(f"{where}: unsupported module; export supports the qfx.nn layers (QuantInput, "
                              f"Quant, Linear, Conv2d, BatchNorm2d, ReLU, Clip, Add, MaxPool2d, AvgPool2d, "
                              f"AdaptiveAvgPool2d, Flatten) and torch ReLU/MaxPool2d/Flatten/Identity/Dropout")
        fn, untyped_ok = body
        xt = types[args[0]] if args else None
        if xt is None and not untyped_ok:
            raise ExportError(f"{where}: its input has no fixed-point type; the model must start with "
                              f"qfx.nn.QuantInput (no default input type is assumed)")
        if getattr(m, "onnx_is_input", False):
            if xt is not None or args[0].op != "placeholder":
                raise ExportError(f"{where}: QuantInput must be applied to the model input")
            input_quant.append(m)
        in_shapes = [[int(d) for d in a.meta["tensor_meta"].shape[1:]] if "tensor_meta" in a.meta else []
                     for a in args]
        ctx = ExportContext(b, m, target, [names[a] for a in args], [types[a] for a in args], in_shapes, shape)
        names[n], types[n] = fn(m, ctx)

    if not input_quant:
        raise ExportError("the model has no qfx.nn.QuantInput: the input type must be given explicitly")
    if output_name is None:
        raise ExportError("the model has no output")

    # Graph output: name it "output" (an Identity if the tensor is also used elsewhere or is the input).
    out_dims = b.shapes[output_name][0]
    final = b.node("Identity", [output_name], "output", "output/Identity", out_dims)
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, b.shapes["input"][0])]
    outputs = [helper.make_tensor_value_info(final, TensorProto.DOUBLE, out_dims)]
    value_info = [helper.make_tensor_value_info(k, elem, dims) for k, (dims, elem) in b.shapes.items()
                  if k not in ("input", final) and k not in b.inits]
    g = helper.make_graph(b.nodes, "qfx_model", inputs, outputs, initializer=list(b.inits.values()),
                          value_info=value_info)
    model_proto = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", ops.OPSET), helper.make_opsetid(ops.DOMAIN, ops.DOMAIN_VERSION)],
        functions=list(b.functions.values()), ir_version=10, producer_name="qfx_compile")
    return model_proto, input_quant[0], output_type


def _vectors_blob(model, qin, out_type: FixedType, example_input, vectors: int, inputs) -> str:
    t_in = qin.output_quantizer.fixed_type()
    if inputs is None:
        g = torch.Generator().manual_seed(0)
        shape = (int(vectors),) + tuple(example_input.shape[1:])
        lo, hi = t_in.min, t_in.max
        x = (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(torch.float32)
    else:
        x = torch.as_tensor(inputs).to(torch.float32)
        if tuple(x.shape[1:]) != tuple(example_input.shape[1:]):
            raise ExportError(f"vector inputs have shape {tuple(x.shape)}, expected (N, "
                              f"{', '.join(map(str, example_input.shape[1:]))})")
        x = x[: int(vectors)]
    with torch.no_grad():
        xin = qin(x)
        y = model(x)
    in_raw = to_raw(xin.to(torch.float64), t_in).numpy()
    out_raw = to_raw(y.to(torch.float64), out_type).numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, input=x.numpy(), input_raw=in_raw.astype(np.int64), output_raw=out_raw.astype(np.int64))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def to_onnx_model(model: nn.Module, example_input: torch.Tensor, vectors: int = 0, inputs=None) -> onnx.ModelProto:
    """Build (and check) the ONNX model in memory; :func:`export_onnx` writes it."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"export_onnx expects a torch.nn.Module, got {type(model).__name__}")
    example_input = torch.as_tensor(example_input)
    if example_input.dim() < 2:
        raise ExportError(f"example_input must have a batch dimension, got shape {tuple(example_input.shape)}")
    example_input = example_input.to(torch.float32)
    was_training = model.training
    model.eval()
    try:
        proto, qin, out_type = _build(model, example_input)
        props = {FORMAT_KEY: FORMAT_VERSION}
        if vectors:
            if int(vectors) < 0:
                raise ExportError(f"vectors must be >= 0, got {vectors}")
            props[VECTORS_KEY] = _vectors_blob(model, qin, out_type, example_input, int(vectors), inputs)
    finally:
        model.train(was_training)
    helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"the exported model fails onnx.checker: {e}") from e
    return proto


def export_onnx(model: nn.Module, example_input: torch.Tensor, path, vectors: int = 0, inputs=None) -> str:
    """Write ``model`` (eval mode) as a qfx ONNX file at ``path`` (atomically) and return the path.

    ``vectors=N`` stores N inputs (``inputs`` if given, else uniform random in the
    input type's range) with the exact eval outputs as ``metadata_props["qfx.vectors"]``.
    """
    proto = to_onnx_model(model, example_input, vectors=vectors, inputs=inputs)
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".qfx-export-", suffix=".onnx.tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def load_vectors(model_proto) -> dict[str, np.ndarray]:
    """The test vectors of a qfx ONNX model (ModelProto or path): ``input``, ``input_raw``, ``output_raw``."""
    if not isinstance(model_proto, onnx.ModelProto):
        model_proto = onnx.load(os.fspath(model_proto))
    props = {p.key: p.value for p in model_proto.metadata_props}
    if props.get(FORMAT_KEY) != FORMAT_VERSION:
        raise ValueError(f"not a qfx ONNX file (metadata {FORMAT_KEY!r} is {props.get(FORMAT_KEY)!r}, "
                         f"expected {FORMAT_VERSION!r})")
    if VECTORS_KEY not in props:
        raise ValueError(f"the model stores no test vectors (metadata {VECTORS_KEY!r}); export with vectors=N")
    try:
        with np.load(io.BytesIO(base64.b64decode(props[VECTORS_KEY], validate=True)), allow_pickle=False) as z:
            out = {k: z[k] for k in ("input", "input_raw", "output_raw")}
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"malformed {VECTORS_KEY} metadata: {e}") from e
    if out["input"].dtype != np.float32 or out["input_raw"].dtype != np.int64 or out["output_raw"].dtype != np.int64:
        raise ValueError(f"malformed {VECTORS_KEY}: unexpected dtypes")
    return out
