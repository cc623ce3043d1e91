"""The exact model in Python: ``m = qfx_compile.load("model.onnx")``; ``m.predict(x)`` is the C simulation.

``load`` runs the compiler's frontend and passes (the typed IR the backend
renders), so ``predict`` computes what the generated hardware computes, bit
for bit: the float input goes through the model's input cast (the hardware
reads its mantissas), every layer as docs/semantics.md states. Torch-free.

Speed without giving up exactness: each node gets a plan once, at load
(constants rescaled and converted, bounds proven); a batch then runs as a few
numpy operations per node, no loop per sample:
- ``dense``/``conv2d``: GEMM in float32 when every product and partial sum is
  an integer of magnitude < 2**24, in float64 when < 2**53 (the bound is
  ``max|x| * max_j sum_i |w_ji|``, which bounds every partial sum in any order,
  so every float operation, FMA included, is exact); int64/Python ints otherwise;
- casts: one integer add and one arithmetic shift per element (the rounding
  mode becomes an added constant), then a clip or a mask, in int64 where the
  plan proved the bound; anything else runs the IR interpreter's op (ir/ops/*).
``tests/test_api.py`` holds this equal to the interpreter on random models
and every rounding and overflow mode.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np

from .fixed.cast import float_to_raw, requantize_raw
from .fixed.types import FixedType, sat_sym_raw_min
from .fixed.window import out_size
from .ir import interpret
from .ir.graph import Graph, Node
from .ir.ops import get as get_op
from .ir.ops.base import as_wide, const_common, max_abs_raw

_I64 = 62  # magnitudes below 2**62 stay exact through one more add/shift in int64
#: GEMMs smaller than this (multiply-adds) run on one BLAS thread: waking OpenBLAS threads costs
#: more than the work (measured 1000x on a loaded 2-core machine for a 1000x16x64 product).
_SMALL_GEMM = 1 << 22
_BLAS = []  # [threadpoolctl controller or None], made on first use


def _one_blas_thread():
    """A context that limits BLAS to one thread (threadpoolctl, when installed), else a no-op."""
    import contextlib

    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        except Exception:  # not installed or unusable: leave BLAS as it is
            _BLAS.append(None)
    return _BLAS[0].limit(limits=1, user_api="blas") if _BLAS[0] is not None else contextlib.nullcontext()
#: im2col working set per chunk of the batch (elements); bounds memory, not a per-sample loop.
_CHUNK_ELEMS = 1 << 23


def _ftype(bound: int):
    """Float dtype whose integers are exact up to ``bound`` (every operand and partial sum), else None."""
    if bound < (1 << 24):
        return np.float32
    if bound < (1 << 53):
        return np.float64
    return None


class _Cast:
    """``requantize_raw(m, src_frac, t)`` for int64 ``m`` with ``|m| <= bound``, in a few array passes.

    Rounding as an added constant then a floor shift (``s`` dropped bits, ``h = 2**(s-1)``):
    TRN +0, RND +h, RND_MIN_INF +h-1, TRN_ZERO +(2**s-1 if m<0), RND_ZERO +h-1+(m<0),
    RND_INF +h-(m<0), RND_CONV +h-1+(bit s of m). ``ok`` is False where int64 is not proven safe.
    """

    def __init__(self, src_frac: int, t: FixedType, bound: int):
        self.t, self.s, self.src_frac = t, src_frac - t.frac_bits, src_frac
        s = self.s
        self.ok = (t.width <= _I64 and bound.bit_length() + max(0, -s) <= _I64 and s <= _I64)
        self.lo, self.hi = t.raw_min, t.raw_max
        if t.overflow == "AP_SAT_SYM":
            self.lo = sat_sym_raw_min(t.width, t.signed)

    def __call__(self, m: np.ndarray) -> np.ndarray:
        if not self.ok or m.dtype == object:
            return requantize_raw(m, self.src_frac, self.t)
        s, t = self.s, self.t
        m = m.astype(np.int64, copy=False)
        if s <= 0:
            q = m << -s if s else m
        else:
            h = 1 << (s - 1)
            r = t.rounding
            if r == "AP_TRN":
                q = m >> s
            elif r == "AP_RND":
                q = (m + h) >> s
            elif r == "AP_RND_MIN_INF":
                q = (m + (h - 1)) >> s
            elif r == "AP_TRN_ZERO":
                q = (m + np.where(m < 0, (1 << s) - 1, 0)) >> s
            elif r == "AP_RND_ZERO":
                q = (m + (h - 1) + (m < 0)) >> s
            elif r == "AP_RND_INF":
                q = (m + h - (m < 0)) >> s
            else:  # AP_RND_CONV: ties go up exactly when the kept LSB is odd
                q = (m + (h - 1) + ((m >> s) & 1)) >> s
        o = t.overflow
        if o == "AP_WRAP":
            return ((q - self.lo) & ((1 << t.width) - 1)) + self.lo
        if o == "AP_SAT_ZERO":
            return np.where((q < self.lo) | (q > self.hi), 0, q)
        if q is m:
            q = q.copy()
        np.maximum(q, self.lo, out=q)
        return np.minimum(q, self.hi, out=q)


def _wsum(w2: np.ndarray) -> int:
    """max_j sum_i |w_ji| of mantissas (exact Python ints)."""
    if not w2.size:
        return 0
    if w2.dtype != object and int(np.abs(w2).max()).bit_length() + max(1, w2.shape[1]).bit_length() < 62:
        return int(np.abs(w2).sum(axis=1).max())
    return int(np.abs(as_wide(w2)).sum(axis=1).max())


class _Linear:
    """dense / conv2d: ``cast(W @ x + b)`` with a float GEMM proven exact, else the interpreter."""

    def __init__(self, node: Node, tx: FixedType):
        w, fw = const_common(node.params["weight"])
        w = np.asarray(w)
        self.conv = node.op == "conv2d"
        if self.conv:
            self.kernel, self.stride = tuple(node.attrs["kernel"]), tuple(node.attrs.get("stride", (1, 1)))
            self.pads = tuple(node.attrs.get("pads", (0, 0, 0, 0)))
        w2 = w.reshape(w.shape[0], -1)
        bound = max_abs_raw(tx) * _wsum(w2)
        f = tx.frac_bits + fw
        self.shift, braw, top = 0, None, bound
        b = node.params.get("bias")
        if b is not None:
            braw, fb = const_common(b)
            braw = as_wide(np.asarray(braw))
            big = max(f, fb)
            self.shift = big - f
            braw = np.array([int(v) << (big - fb) for v in braw.ravel()], dtype=object)
            top = (bound << self.shift) + (int(np.abs(braw).max()) if braw.size else 0)
            f = big
        self.dt = _ftype(bound) if w2.dtype != object else None
        self.fast = self.dt is not None and top.bit_length() <= _I64 and node.attrs.get("groups", 1) == 1
        self.macs = int(np.prod(w.shape))  # per output position
        if self.fast:
            self.w = np.ascontiguousarray(w.astype(self.dt))  # (O, C, KH, KW) or (O, I)
            self.bias = None if braw is None else braw.astype(np.int64).reshape(1, -1)
        self.cast = _Cast(f, node.attrs["out_type"], top)

    def __call__(self, node, x):
        if not self.fast or x.dtype == object:
            return None
        xf = x.astype(self.dt)
        if not self.conv:
            acc = xf @ self.w.T
        else:
            acc = _conv_gemm(xf, self.w, self.kernel, self.stride, self.pads)
        acc = acc.astype(np.int64)
        if self.shift:
            acc <<= self.shift
        if self.bias is not None:
            acc += self.bias.reshape((1, -1) + (1,) * (acc.ndim - 2))
        return self.cast(acc)


def _conv_gemm(x: np.ndarray, w: np.ndarray, kernel, stride, pads) -> np.ndarray:
    """(N, C, H, W) float x, (O, C, KH, KW) float w -> (N, O, H', W') sums (zero padding).

    im2col as KH*KW strided slice copies into (C, KH, KW, N, H', W'), then ONE GEMM
    (O, C*KH*KW) @ (C*KH*KW, N*H'*W'); the result is returned as an (N, O, H', W') view."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, pads
    n, c, h, wd = x.shape
    ho, wo = out_size(h, kh, sh, (pt, pb)), out_size(wd, kw, sw, (pl, pr))
    if any(pads):
        xp = np.zeros((n, c, h + pt + pb, wd + pl + pr), dtype=x.dtype)
        xp[:, :, pt:pt + h, pl:pl + wd] = x
        x = xp
    xc = x.transpose(1, 0, 2, 3)  # (C, N, H, W) view
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, ky, kx] = xc[:, :, ky:ky + sh * (ho - 1) + 1:sh, kx:kx + sw * (wo - 1) + 1:sw]
    y = w.reshape(w.shape[0], -1) @ cols.reshape(c * kh * kw, n * ho * wo)  # (O, N*H'*W')
    return y.reshape(w.shape[0], n, ho, wo).transpose(1, 0, 2, 3)


class _BatchNorm:
    """``cast(x * a_c + b_c)`` in int64 where proven, else the interpreter."""

    def __init__(self, node: Node, tx: FixedType):
        a, fa = const_common(node.params["scale"])
        b, fb = const_common(node.params["shift"])
        a, b = as_wide(np.asarray(a)).ravel(), as_wide(np.asarray(b)).ravel()
        f1 = tx.frac_bits + fa
        big = max(f1, fb)
        amax = max((abs(int(v)) for v in a), default=0)
        bmax = max((abs(int(v)) for v in b), default=0)
        top = ((max_abs_raw(tx) * amax) << (big - f1)) + (bmax << (big - fb))
        self.fast = top.bit_length() <= _I64
        if self.fast:
            self.a = np.array([int(v) << (big - f1) for v in a], dtype=np.int64)
            self.b = np.array([int(v) << (big - fb) for v in b], dtype=np.int64)
        self.cast = _Cast(big, node.attrs["out_type"], top)

    def __call__(self, node, x):
        if not self.fast or x.dtype == object:
            return None
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return self.cast(x.astype(np.int64) * self.a.reshape(shape) + self.b.reshape(shape))


class _MaxPool:
    """Max over windows as a running maximum of strided slices (no padding), else the interpreter."""

    def __init__(self, node: Node, tx: FixedType):
        self.k = tuple(node.attrs["kernel"])
        self.s = tuple(node.attrs.get("stride", self.k))
        self.fast = not any(node.attrs.get("pads", (0, 0, 0, 0)))

    def __call__(self, node, x):
        if not self.fast:
            return None
        (kh, kw), (sh, sw) = self.k, self.s
        ho, wo = out_size(x.shape[2], kh, sh), out_size(x.shape[3], kw, sw)
        out = None
        for ky in range(kh):
            for kx in range(kw):
                v = x[:, :, ky:ky + sh * (ho - 1) + 1:sh, kx:kx + sw * (wo - 1) + 1:sw]
                out = v.copy() if out is None else np.maximum(out, v, out=out)
        return out


class _Add:
    """``cast(a + b)``: both inputs shifted onto the finer grid in int64 where proven, else the interpreter."""

    def __init__(self, node: Node, ta: FixedType, tb: FixedType):
        f = max(ta.frac_bits, tb.frac_bits)
        self.sa, self.sb = f - ta.frac_bits, f - tb.frac_bits
        top = (max_abs_raw(ta) << self.sa) + (max_abs_raw(tb) << self.sb)
        self.fast = top.bit_length() <= _I64
        self.cast = _Cast(f, node.attrs["out_type"], top)

    def __call__(self, node, a, b):
        if not self.fast or a.dtype == object or b.dtype == object:
            return None
        return self.cast((a.astype(np.int64) << self.sa) + (b.astype(np.int64) << self.sb))


class _Relu:
    def __init__(self, node, tx):
        pass

    def __call__(self, node, x):
        return np.maximum(x, 0) if x.dtype != object else None


class _Quant:
    def __init__(self, node, tx):
        self.cast = _Cast(tx.frac_bits, node.attrs["out_type"], max_abs_raw(tx))

    def __call__(self, node, x):
        return self.cast(x)


_PLANS = {"dense": _Linear, "conv2d": _Linear, "add": _Add, "batchnorm": _BatchNorm, "maxpool": _MaxPool, "relu": _Relu,
          "quant": _Quant}


class ExactModel:
    """A compiled model run exactly in Python. Build it with :func:`load`.

    ``input_type`` / ``output_type``: the FixedTypes whose mantissas the
    hardware reads and writes; ``input_shape`` / ``output_shape`` exclude the batch
    axis (PyTorch order, e.g. ``(C, H, W)``).
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.input_type: FixedType = interpret.input_type(graph)
        self.output_type: FixedType = interpret.output_type(graph)
        self.input_shape = tuple(graph.tensors[graph.inputs[0]].shape)
        self.output_shape = tuple(graph.tensors[graph.outputs[0]].shape)
        q = interpret.input_quant(graph)
        self._nodes = [n for n in graph.nodes if n is not q]
        self._first = graph.inputs[0] if q is None else q.outputs[0]
        self._types = {name: t.type for name, t in graph.tensors.items()}
        self._plans = []
        for n in self._nodes:
            make = _PLANS.get(n.op)
            self._plans.append(make(n, *[self._types[i] for i in n.inputs]) if make else None)
        per_sample = max([math.prod(t.shape) * 9 for t in graph.tensors.values() if t.shape] + [1])
        self._macs = max([p.macs * math.prod(graph.tensors[n.outputs[0]].shape[1:] or (1,))
                          for n, p in zip(self._nodes, self._plans) if isinstance(p, _Linear)] + [0])
        self._chunk = max(1, _CHUNK_ELEMS // per_sample)

    def __repr__(self) -> str:
        return (f"ExactModel({self.graph.name!r}, input {self.input_type} {self.input_shape}, "
                f"output {self.output_type} {self.output_shape})")

    def predict_raw(self, x_raw) -> np.ndarray:
        """Output mantissas of ``output_type`` for a batch of input mantissas of ``input_type``."""
        raw = interpret.as_input_shape(x_raw, self.input_shape)  # 1-D maps: (N, C, L) -> (N, C, 1, L)
        if raw.dtype != object and raw.dtype.kind not in "iu":
            raise ValueError(f"x_raw must hold integer mantissas of {self.input_type}, got dtype {raw.dtype}")
        if tuple(raw.shape[1:]) != self.input_shape:
            raise ValueError(f"x_raw has shape {raw.shape}; expected (N, {', '.join(map(str, self.input_shape))})")
        t = self.input_type
        if raw.size and (raw.min() < t.raw_min or raw.max() > t.raw_max):
            raise ValueError(f"x_raw holds mantissas outside {t}")
        if raw.dtype != object:
            raw = raw.astype(np.int64) if t.width <= 62 else as_wide(raw)
        import contextlib

        small = self._macs * min(len(raw), self._chunk) < _SMALL_GEMM
        with _one_blas_thread() if small else contextlib.nullcontext():
            if len(raw) <= self._chunk:
                return self._run(raw)
            return np.concatenate([self._run(raw[i:i + self._chunk]) for i in range(0, len(raw), self._chunk)])

    def predict(self, x) -> np.ndarray:
        """Exact outputs as float64 (values of ``output_type``) for a float batch ``x`` (N, *input_shape).

        ``x`` is cast to ``input_type`` first, as the model's input boundary does (the
        input quantizer, or a QONNX file's float pre-processing and scaled quantizer;
        values already on the input grid pass unchanged). Raises ValueError when
        an output value is not exactly representable in float64.
        """
        x = interpret.as_input_shape(x, self.input_shape)
        if x.dtype.kind not in "fiu":
            raise ValueError(f"x must be a float array, got dtype {x.dtype}")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"x has shape {x.shape}; expected (N, {', '.join(map(str, self.input_shape))})")
        q = interpret.input_quant(self.graph)
        if q is not None and q.attrs.get("input_map") is not None:  # a QONNX boundary: float scale, pre-processing
            raw = interpret.float_input_raw(self.graph, x)
        else:
            raw = _float_to_raw(x, self.input_type)
        return self.to_float(self.predict_raw(raw))

    def to_float(self, raw) -> np.ndarray:
        """Mantissas of ``output_type`` as float64 values; raises when one is not exact in float64."""
        t = self.output_type
        raw = np.asarray(raw)
        if raw.dtype != object and t.width <= 53 and abs(t.frac_bits) < 960:
            return np.ldexp(raw.astype(np.float64), -t.frac_bits)
        return interpret.to_float64(raw, t)

    def _run(self, raw: np.ndarray) -> np.ndarray:
        env = {self._first: raw}
        for node, plan in zip(self._nodes, self._plans):
            ins = [env[i] for i in node.inputs]
            out = None
            if plan is not None:
                out = plan(node, *ins)
            if out is None:
                out = get_op(node.op).run(node, [(v, self._types[i]) for v, i in zip(ins, node.inputs)])
            env[node.outputs[0]] = out
        return env[self.graph.outputs[0]]


def _float_to_raw(x: np.ndarray, t: FixedType) -> np.ndarray:
    """``cast(x, t)`` for floats: exact via ``x * 2**F`` in float64 where that scaling is exact, else the
    general :func:`float_to_raw` (the floats' own mantissas)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("input values must be finite")
    f = t.frac_bits
    if t.width > 52 or abs(f) > 900:
        return float_to_raw(x, t)
    v = np.ldexp(x, f)
    if not (np.ldexp(v, -f) == x).all() or (x.size and np.abs(v).max() >= 2.0 ** 58):
        return float_to_raw(x, t)  # scaling lost bits (sub-normals) or too large for int64
    fl = np.floor(v)
    frac = v - fl  # exact: the fraction bits of v
    m = fl.astype(np.int64)
    # m * 2**1 + (frac bits): feed the integer cast with one extra bit and a sticky bit
    # -> 2 fractional bits carry "above/at/below half" exactly: 0, 1 (< half), 2 (= half), 3 (> half)
    code = np.where(frac == 0, 0, np.where(frac < 0.5, 1, np.where(frac == 0.5, 2, 3)))
    return _Cast(f + 2, t, (int(np.abs(m).max()) if m.size else 0) * 4 + 3)((m << 2) + code)


def load(path, input_type=None, softmax: str | None = None) -> ExactModel:
    """Read ``path`` (qfx ONNX or QONNX) through the frontend and the passes; the exact model.

    ``input_type`` (``"ap_fixed<16,6>"`` or a FixedType) is the input type for a model
    whose file does not give one; it is passed to the frontend when it supports it.
    ``softmax`` is the CLI's ``--softmax`` (e.g. ``"argmax"``), passed on likewise.
    Raises :class:`qfx_compile.frontend.ModelError` (a ValueError) for a model the
    compiler refuses, with the message the CLI prints.
    """
    from .frontend import ModelError, load_model
    from .ir.ops.base import OpError
    from .ir.passes import run_default_passes

    kwargs = {}
    if input_type is not None:
        if isinstance(input_type, str):
            try:
                input_type = FixedType.parse(input_type)
            except ValueError as e:
                raise ValueError(f"input_type: {e}") from None
        if not isinstance(input_type, FixedType):
            raise ValueError(f"input_type must be a FixedType or a string such as 'ap_fixed<16,6>', "
                             f"got {input_type!r}")
        if "input_type" not in inspect.signature(load_model).parameters:
            raise ValueError("input_type is not supported by this version's frontend: the model file must "
                             "give its input type (a quantizer on the input)")
        kwargs["input_type"] = input_type
    if softmax is not None:
        if "softmax" not in inspect.signature(load_model).parameters:
            raise ValueError("softmax is not supported by this version's frontend")
        kwargs["softmax"] = softmax
    p = str(Path(path))
    try:
        graph = run_default_passes(load_model(p, **kwargs))
    except OpError as e:
        raise ModelError(str(e), path=p) from None
    return ExactModel(graph)


__all__ = ["ExactModel", "load"]
