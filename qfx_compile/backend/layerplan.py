"""The typed plan of one layer: what the templates print for it, already made safe.

An op module (``ir/ops/<op>.py``) declares ``hls=`` in its :class:`OpDef`: a
function ``(ctx: LayerContext) -> LayerPlan`` that chooses the hls_lib kernel,
fills its config struct (typedefs, sizes, constants as integer mantissa
arrays) and describes its cost (:class:`~.estimate.LayerShape`, priced by
:mod:`.estimate`, the one place of the cost rules). Every type and constant
comes from the typed IR: the plan never sizes a type itself. Names from the
model reach a plan only through :mod:`.names` (``*_comment`` and ids).

:func:`.plan.build_plan` calls the op's function, then adds what only the
whole design knows (reuse from the estimator, streams, fan-outs) with
``dataclasses.replace``; rendering reads plans and never changes them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..fixed.types import FixedType, raw_range
from ..ir.graph import Const, Graph, Node
from . import estimate, names
from .estimate import LayerEstimate, LayerShape


class BackendError(ValueError):
    """The model or the options cannot be compiled (a user error: exit 2)."""


@dataclasses.dataclass(frozen=True)
class TensorPlan:
    """A stream's element type and size; ``hwc`` is the shape in stream order (for comments and the report)."""

    id: str
    comment: str
    typedef: str
    type: FixedType
    shape: tuple[int, ...]
    count: int

    @property
    def ctype(self) -> str:
        return self.type.cpp()

    @property
    def hwc(self) -> str:
        s = self.shape
        return "x".join(str(v) for v in ([s[1], s[2], s[0]] if len(s) == 3 else list(s)))


@dataclasses.dataclass(frozen=True)
class ConstArray:
    """A constant as a plain-integer mantissa array ``name[depth]`` of C type ``ctype`` (value = m * 2^-F)."""

    role: str
    name: str
    type: FixedType
    ctype: str
    values: tuple[int, ...]
    dims: str

    @property
    def depth(self) -> int:
        return len(self.values)

    @property
    def width(self) -> int:
        return self.type.width

    @property
    def min(self) -> int:
        return min(self.values) if self.values else 0

    @property
    def max(self) -> int:
        return max(self.values) if self.values else 0

    @property
    def lines(self) -> list[str]:
        flat = [str(v) for v in self.values]
        return [", ".join(flat[i:i + 24]) for i in range(0, len(flat), 24)]


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """Per-layer options (``--config``): FIFO depth of the output stream, INLINE, reuse (0 = the compiler's
    choice), multiplier binding (0 auto, 1 DSP, 2 LUTs), shift-add form of K-hot layers (0 auto: straight-line
    code where its adders fit, else the table kernel; 1 the table kernel, folded by ``reuse``), DSP packing of
    pairs of output rows (1: where the widths allow it, hls_lib/qfx_dsp_pack.h; the report says why not)."""

    stream_depth: int = 2
    inline: bool = False
    reuse: int = 0
    mul_impl: int = 0
    shiftadd: int = 0
    dsp_pack: int = 0


@dataclasses.dataclass(frozen=True)
class StraightCode:
    """A K-hot layer as generated straight-line shift-add C++ (``firmware/shiftadd/<id>.h``)."""

    name: str
    body: tuple[str, ...]
    terms: int
    adders: int
    depth: int
    x_dims: str
    n_out: int


@dataclasses.dataclass(frozen=True)
class TableFold:
    """A shift-add table kernel's folding: ``products`` term units' worth of work per output vector/pixel."""

    products: int
    k: int
    read: int
    outputs: int
    writes: int
    width: int
    natural: int


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One layer: one call of one hls_lib kernel (``callee``) with config struct ``cfg``."""

    id: str
    op: str
    name_comment: str
    inputs: tuple[TensorPlan, ...]
    output: TensorPlan
    kernel: str
    callee: str
    cost: LayerShape
    options: LayerOptions
    types: tuple[tuple[str, str], ...] = ()
    sizes: tuple[tuple[str, int], ...] = ()
    ints: tuple[tuple[str, int], ...] = ()
    longs: tuple[tuple[str, int], ...] = ()
    ulongs: tuple[tuple[str, int], ...] = ()
    arrays: tuple[ConstArray, ...] = ()
    acc: FixedType | None = None
    macs: int = 0
    n_params: int = 0
    params_bits: int = 0
    straight: StraightCode | None = None
    fold: TableFold | None = None  # a shift-add table kernel that folds with reuse
    has_reuse: bool = False  # the kernel's config has a ``reuse`` size
    has_mul_impl: bool = False  # the kernel's config has a ``mul_impl`` int
    # filled by build_plan once the whole design is known
    est: LayerEstimate | None = None
    in_streams: tuple[str, ...] = ()
    out_stream: str = ""
    fanouts: tuple = ()
    dsp_pack: str = ""  # a multiplier layer: whether it is DSP-packed and how, or why not

    @property
    def func(self) -> str:
        return f"layer_{self.id}"

    @property
    def cfg(self) -> str:
        return f"cfg_{self.id}"

    @property
    def opts(self) -> LayerOptions:
        return self.options


# ------------------------------------------------------------------ helpers
def raw_ctype(lo: int, hi: int) -> str:
    """The narrowest ``intN_t`` holding every mantissa in ``[lo, hi]``."""
    for bits in (8, 16, 32, 64):
        lo_c, hi_c = raw_range(bits, True)
        if lo_c <= lo and hi <= hi_c:
            return f"int{bits}_t"
    raise BackendError(f"a constant mantissa in [{lo}, {hi}] does not fit 64 bits")


def signed_bits(t: FixedType) -> int:
    """Operand width of a signed multiplier fed by ``t`` (the rule: ``estimate.signed_bits``)."""
    return estimate.signed_bits(t.width, t.signed)


@dataclasses.dataclass(frozen=True)
class LayerContext:
    """What an op's ``hls`` function sees: the IR node (lowered to stream order), its tensors, its options."""

    graph: Graph
    node: Node
    id: str
    inputs: tuple[TensorPlan, ...]
    output: TensorPlan
    options: LayerOptions

    @property
    def where(self) -> str:
        return f"layer {names.comment(self.node.name)!r} ({self.node.op})"

    @property
    def x(self) -> FixedType:
        return self.inputs[0].type

    @property
    def y(self) -> FixedType:
        return self.output.type

    def error(self, msg: str) -> BackendError:
        return BackendError(f"{self.where}: {msg}")

    def chw(self, t: TensorPlan | None = None) -> tuple[int, int, int]:
        """(C, H, W) of a tensor (a vector (N,) is (N, 1, 1))."""
        s = (t or self.inputs[0]).shape
        if len(s) == 3:
            return tuple(int(v) for v in s)
        if len(s) == 1:
            return int(s[0]), 1, 1
        raise self.error(f"unsupported tensor shape {s}")

    def acc_type(self) -> FixedType:
        """The accumulator type from ir.passes.accumulators: the backend never sizes one itself."""
        acc = self.node.attrs.get("acc_type")
        if acc is None:
            raise self.error("no accumulator type; run qfx_compile.ir.passes.run_default_passes "
                             "(type_accumulators) first")
        return acc

    def const(self, role: str, prefix: str, c: Const, dims: str) -> ConstArray:
        """A constant as a mantissa array; its binary point must be unified (ir.passes.unify_consts)."""
        if c.int_bits is not None:
            raise self.error(f"{role}: per-channel binary points reach the backend; run "
                             f"qfx_compile.ir.passes.run_default_passes (unify_consts) first")
        vals = tuple(int(v) for v in np.asarray(c.raw).reshape(-1).tolist())
        lo, hi = (min(vals), max(vals)) if vals else (0, 0)
        return ConstArray(role, f"{prefix}_{self.id}", c.type, raw_ctype(lo, hi), vals, dims)

    def int_array(self, role: str, prefix: str, values, dims: str) -> ConstArray:
        """A table of plain integers (K-hot signs and shifts) as an ``int8_t`` array."""
        vals = tuple(int(v) for v in np.asarray(values).reshape(-1).tolist())
        return ConstArray(role, f"{prefix}_{self.id}", FixedType(8, 8, True), "int8_t", vals, dims)

    def layer(self, kernel: str, cost: LayerShape, **fields) -> LayerPlan:
        """A plan calling ``qfx::<kernel><cfg>`` (``callee`` may be given instead)."""
        fields.setdefault("callee", f"qfx::{kernel}<cfg_{self.id}>")
        for k in ("types", "sizes", "ints", "longs", "ulongs", "arrays"):
            if k in fields:
                fields[k] = tuple(fields[k])
        return LayerPlan(id=self.id, op=self.node.op, name_comment=names.comment(self.node.name),
                         inputs=self.inputs, output=self.output, kernel=kernel, cost=cost, options=self.options,
                         **fields)


def stream_cost(cycles: int) -> LayerShape:
    """Cost of a streaming layer without multipliers: ``cycles`` per sample."""
    return LayerShape("stream", fixed_cycles=int(cycles))


__all__ = ["BackendError", "TensorPlan", "ConstArray", "LayerOptions", "StraightCode", "TableFold", "LayerPlan",
           "LayerContext", "raw_ctype", "signed_bits", "stream_cost"]
