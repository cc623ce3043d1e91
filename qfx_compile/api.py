"""The exact model in Python: ``m = qfx_compile.load("model.onnx")``; ``m.predict(x)`` is the C simulation.

``load`` runs the compiler's frontend and passes (the typed IR the backend
renders), so ``predict`` computes what the generated hardware computes, bit
for bit: the float input goes through the model's input cast (the hardware
reads its mantissas), every layer as docs/semantics.md states. Torch-free.

Speed without giving up exactness: each node gets a plan once, at load
(constants rescaled and converted, bounds proven); a batch then runs as a few
numpy operations per node, no loop per sample. Between planned nodes the
mantissas stay in a float array (:class:`_Fl`; 4-D maps channel-major,
``(C, N, H, W)``, so a convolution's GEMM writes its output in place):
- float32 where every value a node computes is ``k * 2**-s`` with an integer
  ``|k| < 2**23`` (``s``: the bits its cast drops), float64 where ``|k| < 2**52``:
  then every product, partial sum (any order, FMA included), scaling by a power
  of two and rounding step is exact. For ``dense``/``conv2d`` the bound is
  ``max|x| * max_j sum_i |w_ji|`` (plus the bias), which bounds every partial sum;
- a layer's cast is folded into it: weights, scales and biases are pre-scaled
  by ``2**-s`` and the rounding constant is added with the bias, so the node
  ends with one rounding function (floor, ceil, trunc or rint) and a clip,
  skipped where the bound proves no overflow;
- otherwise int64 (adds, BatchNorm, casts: an integer add and an arithmetic
  shift, :class:`_Cast`) where the plan proved the bound, else the IR
  interpreter's op (ir/ops/*) on Python ints.
``tests/test_api.py`` holds this equal to the interpreter on random models
and every rounding and overflow mode, at and beyond the float bounds.
"""
from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

import numpy as np

from .fixed.cast import float_to_raw, requantize_int64, requantize_raw
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
#: working set per chunk of the batch (elements, 9x the largest tensor): bounds memory and keeps a
#: chunk's im2col in cache; chunks run one per core, not a per-sample loop.
_CHUNK_ELEMS = 1 << 21


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
#: significand bits of the float dtypes the plans compute in
_FLOATS = ((np.float32, 24), (np.float64, 53))
#: largest |exponent| of a pre-scaling 2**e: no subnormal and no overflow in float32 for |k| < 2**23
_MAX_EXP = 100


def _float_dtype(top: int, s: int, t: FixedType, e: int = 0):
    """The float dtype in which a node computes ``cast(m * 2**-f, t)`` exactly, else None.

    ``top`` bounds every |integer| the node forms on its source grid (``2**-f``), ``s = f - F_t`` the
    bits the cast drops, ``e`` the extra power of two its constants carry. Exact when, with ``p``
    significand bits: ``top * 2**max(0, -s) < 2**(p-1)`` and ``s <= p - 1`` (so every partial sum,
    and ``m`` plus the rounding constant ``2**(s-1)``, is an integer below ``2**p``, times a power of
    two), ``W_t <= p - 1`` (the cast's result and the wrap's ``q - lo``), and no exponent leaves
    ``[-_MAX_EXP, _MAX_EXP]`` (no subnormal, no overflow)."""
    if abs(s) > _MAX_EXP or abs(e - s) > _MAX_EXP or top.bit_length() + max(0, -s) > _MAX_EXP:
        return None
    for dt, p in _FLOATS:
        if top.bit_length() + max(0, -s) <= p - 1 and s <= p - 1 and t.width <= p - 1:
            return dt
    return None


class _Fl:
    """Mantissas held in a float array ``a`` (exact integers): ``(C, N, H, W)`` for maps, else ``(N, ...)``."""

    __slots__ = ("a",)

    def __init__(self, a: np.ndarray):
        self.a = a


def _as_int(v) -> np.ndarray:
    """The interpreter's form: int64 mantissas, batch first (an int array passes unchanged)."""
    if not isinstance(v, _Fl):
        return v
    a = v.a.transpose(1, 0, 2, 3) if v.a.ndim == 4 else v.a
    return a.astype(np.int64)


def _as_float(v, dt) -> np.ndarray | None:
    """The float form of ``v`` in ``dt`` (None for Python ints); int values must be exact in ``dt``."""
    if isinstance(v, _Fl):
        return v.a if v.a.dtype == dt else v.a.astype(dt)
    if v.dtype == object:
        return None
    if v.ndim != 4:
        return v.astype(dt)
    out = np.empty((v.shape[1], v.shape[0]) + v.shape[2:], dtype=dt)
    out[...] = v.transpose(1, 0, 2, 3)
    return out


def _chan(a: np.ndarray, ndim: int) -> np.ndarray:
    """Per-channel constants shaped to broadcast over a float-form value of ``ndim`` axes."""
    return a.reshape((-1, 1, 1, 1) if ndim == 4 else (1, -1) + (1,) * (ndim - 2))


class _FCast:
    """``cast(u * 2**s, t)`` for floats ``u = m * 2**-s`` (the value on t's grid, exact), in place.

    A node adds :attr:`pre` (0, 1/2 or -1/2) with its constants; :meth:`finish` then rounds
    (TRN floor, RND floor(u + 1/2), RND_MIN_INF ceil(u - 1/2), TRN_ZERO trunc, RND_CONV rint (ties
    to even), RND_ZERO / RND_INF: |u| -/+ 1/2, ceil / floor, sign back) and applies the overflow mode,
    not at all where ``top`` (the bound of |m|) proves the result in range.
    """

    def __init__(self, s: int, t: FixedType, top: int):
        self.s, self.t = s, t
        r = t.rounding if s > 0 else "exact"
        self.r = r
        self.pre = {"AP_RND": 0.5, "AP_RND_MIN_INF": -0.5}.get(r, 0.0)
        self.lo, self.hi = t.raw_min, t.raw_max
        if t.overflow == "AP_SAT_SYM":
            self.lo = sat_sym_raw_min(t.width, t.signed)
        qb = ((top >> s) + 1) if s > 0 else top << -s  # bounds |rounded value|
        self.ovf = None if (-qb >= self.lo and qb <= self.hi) else t.overflow

    def finish(self, u: np.ndarray) -> np.ndarray:
        r = self.r
        if r in ("AP_TRN", "AP_RND"):
            np.floor(u, out=u)
        elif r == "AP_RND_MIN_INF":
            np.ceil(u, out=u)
        elif r == "AP_TRN_ZERO":
            np.trunc(u, out=u)
        elif r == "AP_RND_CONV":
            np.rint(u, out=u)
        elif r in ("AP_RND_ZERO", "AP_RND_INF"):
            a = np.abs(u)
            if r == "AP_RND_ZERO":
                a -= 0.5
                np.ceil(a, out=a)
            else:
                a += 0.5
                np.floor(a, out=a)
            u = np.copysign(a, u, out=a)
        o, lo, hi = self.ovf, self.lo, self.hi
        if o is None:
            return u
        if o == "AP_WRAP":
            d = u - lo
            k = d * (2.0 ** -self.t.width)
            np.floor(k, out=k)
            k *= 2.0 ** self.t.width
            d -= k
            d += lo
            return d
        if o == "AP_SAT_ZERO":
            u[(u < lo) | (u > hi)] = 0
            return u
        return np.clip(u, lo, hi, out=u)


class _Cast:
    """``requantize_raw(m, src_frac, t)`` for int64 ``m`` with ``|m| <= bound``: ``fixed.cast.requantize_int64``
    where int64 is proven safe once (``ok``), no per-call range pass; else ``requantize_raw``."""

    def __init__(self, src_frac: int, t: FixedType, bound: int):
        self.t, self.s, self.src_frac = t, src_frac - t.frac_bits, src_frac
        s = self.s
        self.ok = (t.width <= _I64 and bound.bit_length() + max(0, -s) <= _I64 and s <= _I64)

    def __call__(self, m: np.ndarray) -> np.ndarray:
        if not self.ok or m.dtype == object:
            return requantize_raw(m, self.src_frac, self.t)
        return requantize_int64(m.astype(np.int64, copy=False), self.s, self.t)


def _wsum(w2: np.ndarray) -> int:
    """max_j sum_i |w_ji| of mantissas (exact Python ints)."""
    if not w2.size:
        return 0
    if w2.dtype != object and int(np.abs(w2).max()).bit_length() + max(1, w2.shape[1]).bit_length() < 62:
        return int(np.abs(w2).sum(axis=1).max())
    return int(np.abs(as_wide(w2)).sum(axis=1).max())


def _scaled(raw, e: int, dt, pre: float = 0.0) -> np.ndarray:
    """``raw * 2**e + pre`` as ``dt`` (exact where the plan proved it: ``raw`` integers below 2**(p-2))."""
    return (np.ldexp(np.asarray(raw, dtype=np.float64), e) + pre).astype(dt)


class _Linear:
    """dense / conv2d: ``cast(W @ x + b)`` as one float GEMM on weights pre-scaled by the cast, else the interpreter."""

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
        shift, braw, top = 0, None, bound
        b = node.params.get("bias")
        if b is not None:
            braw, fb = const_common(b)
            braw = as_wide(np.asarray(braw))
            big = max(f, fb)
            shift = big - f
            braw = np.array([int(v) << (big - fb) for v in braw.ravel()], dtype=object)
            top = (bound << shift) + (int(np.abs(braw).max()) if braw.size else 0)
            f = big
        t = node.attrs["out_type"]
        s = f - t.frac_bits
        top = max(top, max_abs_raw(tx))  # the input itself is held in the same dtype
        self.dt = None
        if w2.dtype != object and node.attrs.get("groups", 1) == 1:
            self.dt = _float_dtype(top, s, t, shift)
        self.fast = self.dt is not None
        self.macs = int(np.prod(w.shape))  # per output position
        if self.fast:
            self.cast = _FCast(s, t, top)
            self.w = np.ascontiguousarray(_scaled(w, shift - s, self.dt))  # (O, C, KH, KW) or (O, I)
            self.w2 = self.w.reshape(self.w.shape[0], -1)
            self.add = None
            if braw is not None or self.cast.pre:
                self.add = _scaled(np.zeros(w.shape[0], dtype=object) if braw is None else braw, -s, self.dt,
                                   self.cast.pre)

    def __call__(self, node, v):
        if not self.fast:
            return None
        x = _as_float(v, self.dt)
        if x is None:
            return None
        if not self.conv:
            if x.ndim != 2:
                return None
            u = x @ self.w2.T  # (N, O)
        else:
            u = _conv_gemm(x, self.w, self.kernel, self.stride, self.pads)  # (O, N, H', W')
        if self.add is not None:
            u += _chan(self.add, u.ndim)
        return _Fl(self.cast.finish(u))


def _conv_gemm(x: np.ndarray, w: np.ndarray, kernel, stride, pads) -> np.ndarray:
    """(C, N, H, W) float x, (O, C, KH, KW) float w -> (O, N, H', W') sums (zero padding).

    im2col as one copy of a strided window view into (C, KH, KW, N, H', W') (none for a 1x1 kernel
    of stride 1), then ONE GEMM (O, C*KH*KW) @ (C*KH*KW, N*H'*W') that writes the output in place."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, pads
    c, n, h, wd = x.shape
    ho, wo = out_size(h, kh, sh, (pt, pb)), out_size(wd, kw, sw, (pl, pr))
    o = w.shape[0]
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(pads):
        return (w.reshape(o, c) @ x.reshape(c, -1)).reshape(o, n, ho, wo)
    if any(pads):
        xp = np.zeros((c, n, h + pt + pb, wd + pl + pr), dtype=x.dtype)
        xp[:, :, pt:pt + h, pl:pl + wd] = x
        x = xp
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # (C, N, H'', W'', KH, KW)
    win = win[:, :, :sh * (ho - 1) + 1:sh, :sw * (wo - 1) + 1:sw]
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    cols[...] = win.transpose(0, 4, 5, 1, 2, 3)
    return (w.reshape(o, -1) @ cols.reshape(c * kh * kw, n * ho * wo)).reshape(o, n, ho, wo)


class _BatchNorm:
    """``cast(x * a_c + b_c)``: in float with the cast folded into ``a``, ``b``; else int64 where proven."""

    def __init__(self, node: Node, tx: FixedType):
        a, fa = const_common(node.params["scale"])
        b, fb = const_common(node.params["shift"])
        a, b = as_wide(np.asarray(a)).ravel(), as_wide(np.asarray(b)).ravel()
        f1 = tx.frac_bits + fa
        big = max(f1, fb)
        amax = max((abs(int(v)) for v in a), default=0)
        bmax = max((abs(int(v)) for v in b), default=0)
        top = ((max_abs_raw(tx) * amax) << (big - f1)) + (bmax << (big - fb))
        t = node.attrs["out_type"]
        s = big - t.frac_bits
        self.dt = _float_dtype(max(top, max_abs_raw(tx)), s, t, big - f1)
        if self.dt is not None:
            self.fcast = _FCast(s, t, top)
            self.fa = _scaled(a, big - f1 - s, self.dt)
            self.fb = _scaled(b, big - fb - s, self.dt, self.fcast.pre)
        self.fast = top.bit_length() <= _I64
        if self.fast:
            self.a = np.array([int(v) << (big - f1) for v in a], dtype=np.int64)
            self.b = np.array([int(v) << (big - fb) for v in b], dtype=np.int64)
        self.cast = _Cast(big, t, top)

    def __call__(self, node, v):
        if self.dt is not None:
            x = _as_float(v, self.dt)
            if x is not None:
                u = x * _chan(self.fa, x.ndim)
                u += _chan(self.fb, x.ndim)
                return _Fl(self.fcast.finish(u))
        x = _as_int(v)
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

    def __call__(self, node, v):
        if not self.fast:
            return None
        x = v.a if isinstance(v, _Fl) else v  # H, W are axes 2, 3 in both forms
        (kh, kw), (sh, sw) = self.k, self.s
        ho, wo = out_size(x.shape[2], kh, sh), out_size(x.shape[3], kw, sw)
        out = None
        for ky in range(kh):
            for kx in range(kw):
                y = x[:, :, ky:ky + sh * (ho - 1) + 1:sh, kx:kx + sw * (wo - 1) + 1:sw]
                out = y.copy() if out is None else np.maximum(out, y, out=out)
        return _Fl(out) if isinstance(v, _Fl) else out


class _Add:
    """``cast(a + b)``: in float with the cast folded in, else both inputs shifted onto the finer grid in
    int64 where proven, else the interpreter."""

    def __init__(self, node: Node, ta: FixedType, tb: FixedType):
        f = max(ta.frac_bits, tb.frac_bits)
        self.sa, self.sb = f - ta.frac_bits, f - tb.frac_bits
        top = (max_abs_raw(ta) << self.sa) + (max_abs_raw(tb) << self.sb)
        t = node.attrs["out_type"]
        s = f - t.frac_bits
        self.dt = _float_dtype(top, s, t, max(self.sa, self.sb))
        if self.dt is not None:
            self.fcast = _FCast(s, t, top)
            self.ka, self.kb = 2.0 ** (self.sa - s), 2.0 ** (self.sb - s)
        self.fast = top.bit_length() <= _I64
        self.cast = _Cast(f, t, top)

    def __call__(self, node, a, b):
        if self.dt is not None:
            fa, fb = _as_float(a, self.dt), _as_float(b, self.dt)
            if fa is not None and fb is not None and fa.shape == fb.shape:
                u = fa * self.ka if self.ka != 1 else fa.copy()
                u += fb * self.kb if self.kb != 1 else fb
                if self.fcast.pre:
                    u += self.fcast.pre
                return _Fl(self.fcast.finish(u))
        a, b = _as_int(a), _as_int(b)
        if not self.fast or a.dtype == object or b.dtype == object:
            return None
        return self.cast((a.astype(np.int64) << self.sa) + (b.astype(np.int64) << self.sb))


class _Relu:
    def __init__(self, node, tx):
        pass

    def __call__(self, node, v):
        if isinstance(v, _Fl):
            return _Fl(np.maximum(v.a, 0))
        return np.maximum(v, 0) if v.dtype != object else None


class _Quant:
    def __init__(self, node, tx):
        t = node.attrs["out_type"]
        s = tx.frac_bits - t.frac_bits
        self.dt = _float_dtype(max_abs_raw(tx), s, t)
        if self.dt is not None:
            self.fcast = _FCast(s, t, max_abs_raw(tx))
        self.cast = _Cast(tx.frac_bits, t, max_abs_raw(tx))

    def __call__(self, node, v):
        if self.dt is not None:
            x = _as_float(v, self.dt)
            if x is not None:
                u = x * (2.0 ** -self.fcast.s)
                if self.fcast.pre:
                    u += self.fcast.pre
                return _Fl(self.fcast.finish(u))
        return self.cast(_as_int(v))


class _Flatten:
    def __init__(self, node, tx):
        pass

    def __call__(self, node, v):
        if isinstance(v, _Fl) and v.a.ndim == 4:
            return _Fl(v.a.transpose(1, 0, 2, 3).reshape(v.a.shape[1], -1))
        return None


_PLANS = {"dense": _Linear, "conv2d": _Linear, "add": _Add, "batchnorm": _BatchNorm, "maxpool": _MaxPool, "relu": _Relu,
          "quant": _Quant, "flatten": _Flatten}

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

        chunks = [raw[i:i + self._chunk] for i in range(0, len(raw), self._chunk)] or [raw]
        workers = min(len(chunks), _cpus())
        small = self._macs * min(len(raw), self._chunk) < _SMALL_GEMM
        # several chunks: one per core at a time, each on one BLAS thread (numpy releases the GIL)
        with _one_blas_thread() if small or workers > 1 else contextlib.nullcontext():
            if workers == 1:
                outs = [self._run(c) for c in chunks]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(workers) as ex:
                    outs = list(ex.map(self._run, chunks))
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

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
        env = {self._first: raw}  # int arrays (the interpreter's form) or _Fl
        for node, plan in zip(self._nodes, self._plans):
            ins = [env[i] for i in node.inputs]
            out = None
            if plan is not None:
                out = plan(node, *ins)
            if out is None:
                out = get_op(node.op).run(node, [(_as_int(v), self._types[i]) for v, i in zip(ins, node.inputs)])
            env[node.outputs[0]] = out
        return _as_int(env[self.graph.outputs[0]])


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
