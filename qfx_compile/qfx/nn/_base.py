"""Shared machinery of the QFX layers: the eval/training switch and the float64 exactness guard.

Eval mode computes in float64. A sum of products is exact in float64 when every
partial sum is a multiple of the common lsb ``2**-F`` and smaller than ``2**53``
lsbs; :func:`check_exact` enforces this from the actual operands' grids and
magnitudes (any input with the same grid and max magnitude is then exact,
whatever the summation order) and raises ``ValueError`` naming the layer otherwise.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...fixed.types import FixedType
from .. import heap

_LIMIT = 2.0 ** 53 * (1 - 2.0 ** -40)  # margin for the float64 rounding of the bound itself


class QFXModule(nn.Module):
    """Base of every QFX layer. ``qfx_name`` (set by ``quantize_model``) names it in errors."""

    qfx_name: str | None = None

    @property
    def layer_name(self) -> str:
        return f"{self.qfx_name or '<unnamed>'} ({type(self).__name__})"

    #: Set by ``qfx.calibrate``: run the float path with observing (pass-through) quantizers.
    calibrating: bool = False

    def _calibrating(self) -> bool:
        return self.calibrating

    def _float_path(self) -> bool:
        """True in training and calibration: float32 with straight-through casts (the first such forward sets
        glibc's heap thresholds for the process: :func:`..heap.keep_freed_memory`)."""
        if self.training or self._calibrating():
            if heap.status is None:
                heap.keep_freed_memory()
            return True
        return False

    #: Set by ``quantize_model`` on a BatchNorm or Add whose every call feeds one ReLU and nothing else:
    #: in training it applies that ReLU in its output cast's pass (:func:`relu_applied` marks the tensor, and
    #: the ReLU passes it through). Values and gradients are those of the separate ReLU.
    fuse_relu: bool = False

    def output_type(self, input_types: list[FixedType]) -> FixedType:
        oq = getattr(self, "output_quantizer", None)
        if oq is None:
            if not input_types:
                raise ValueError(f"{self.layer_name}: output_type needs the input type")
            return input_types[0]
        return oq.fixed_type()


_RELU_MARK = "_qfx_relu_applied"


def relu_applied(t: torch.Tensor) -> torch.Tensor:
    """Mark ``t`` as a ReLU's output already (the next QFX ReLU returns it as it is)."""
    setattr(t, _RELU_MARK, True)
    return t


def is_relu_applied(t: torch.Tensor) -> bool:
    """Whether ``t`` carries :func:`relu_applied`'s mark."""
    return getattr(t, _RELU_MARK, False)


_CAST_OF = "_qfx_cast_of"


def mark_cast_of(x: torch.Tensor, y: torch.Tensor, quantizer, t, keep: list | None = None) -> torch.Tensor:
    """Mark ``x`` as ``quantizer``'s training cast of ``y`` to the type ``t`` (its ``fused_type`` at the cast; see
    ``Conv2d.fuse_cast_into_bn``); ``keep``: the list in which the node that made ``x`` holds what the cast's own
    backward needs (:func:`release_cast`)."""
    setattr(x, _CAST_OF, (y, quantizer, t, x._version, keep))
    return x


def release_cast(x: torch.Tensor) -> None:
    """Empty the ``keep`` list of :func:`mark_cast_of`'s mark on ``x``: its consumer runs the cast's backward
    itself (its node keeps y and x), so the node that made ``x`` need not hold them to its own backward."""
    mark = getattr(x, _CAST_OF, None)
    if mark is not None and mark[4] is not None:
        mark[4].clear()


_GRID_SUMS = "_qfx_grid_sums"


def mark_grid_sums(x: torch.Tensor, sums: torch.Tensor | None, frac: int) -> torch.Tensor:
    """Mark ``x`` (N, C, ...) as a training cast's values on the grid ``2**-frac`` (``Quantizer.train_grid``),
    with ``sums`` = float64 (2, C) the per-channel sums of its mantissas ``m`` and of ``m * m``
    (``quantize.channel_sums``) where the cast's pass computed them, else None: a BatchNorm fed by ``x`` takes
    its batch statistics from these exact sums."""
    setattr(x, _GRID_SUMS, (sums, frac, x._version))
    return x


def grid_sums_of(x: torch.Tensor):
    """``(sums, frac)`` where ``x`` carries :func:`mark_grid_sums`'s mark and has not been changed in place since,
    else None."""
    mark = getattr(x, _GRID_SUMS, None)
    return None if mark is None or mark[2] != x._version else mark[:2]


def cast_of(x: torch.Tensor):
    """``(y, quantizer, t)`` where ``x`` carries :func:`mark_cast_of`'s mark and has not been changed in place
    since, else None."""
    mark = getattr(x, _CAST_OF, None)
    return None if mark is None or mark[3] != x._version else mark[:3]


def frac_bits_of(x: torch.Tensor) -> int:
    """Smallest F such that every element of float64 ``x`` is a multiple of ``2**-F`` (-1075 if all zero)."""
    x = x.detach()
    if x.dtype != torch.float64:
        x = x.double()
    nz = x[x != 0]
    if nz.numel() == 0:
        return -1075
    if not bool(torch.isfinite(nz).all()):
        raise ValueError("non-finite values cannot be computed exactly")
    mant, exp = torch.frexp(nz)
    m = (mant.abs() * 2.0 ** 53).to(torch.int64)
    low = m & -m
    tz = torch.log2(low.double()).to(torch.int64)
    return int((53 - exp.to(torch.int64) - tz).max())


def check_exact(layer: QFXModule, bound: float, frac: int, what: str = "accumulator") -> None:
    """Raise ValueError if values up to ``bound`` on a ``2**-frac`` grid need more than 53 bits."""
    if bound == 0:
        return
    if not math.isfinite(bound) or bound * 2.0 ** frac >= _LIMIT:
        bits = math.inf if not math.isfinite(bound) else math.ceil(math.log2(bound)) + frac + 1
        raise ValueError(
            f"{layer.layer_name}: the exact {what} could need {bits} bits, more than the 53 bits float64 "
            f"holds exactly; use narrower types (fewer fractional bits) for its inputs or weights")


def amax(x: torch.Tensor | None) -> float:
    return 0.0 if x is None or x.numel() == 0 else float(x.detach().abs().max())


def exact_ok(bound: float, frac: int) -> bool:
    """Whether :func:`check_exact` would pass (no exception)."""
    return bound == 0 or (math.isfinite(bound) and bound * 2.0 ** frac < _LIMIT)


def input_grids(layer: QFXModule, xs) -> list[tuple[int, float] | None]:
    """``(F, max |x|)`` per input from the static input types, or None where unknown.

    ``quantize_model``'s graph sets ``layer.static_input_types`` for the duration of one
    eval-mode forward of the whole model (every input of a QFX node is then on the grid
    of its producer's output type, inside its range); a layer called on its own has none.
    """
    types = getattr(layer, "static_input_types", None)
    out = []
    for i in range(len(xs)):
        t = types[i] if types is not None and i < len(types) else None
        out.append(None if t is None else (t.frac_bits, float(max(abs(t.min), abs(t.max)))))
    return out


def guard(layer: QFXModule, xs, rule, what: str = "accumulator") -> None:
    """The float64 exactness guard of an eval-mode layer.

    ``rule(grids) -> (bound, frac)`` maps one ``(F, max |x|)`` per input to the
    layer's largest intermediate magnitude and its grid. It is evaluated first on the
    static input types (no pass over the data); where a static type is unknown or its
    bound does not prove exactness, on the actual inputs (``frac_bits_of``, ``amax``),
    which raises ``ValueError`` if the computation could be inexact.
    """
    grids = input_grids(layer, xs)
    if all(g is not None for g in grids):
        bound, frac = rule(grids)
        if exact_ok(bound, frac):
            return
    bound, frac = rule([(frac_bits_of(x), amax(x)) for x in xs])
    check_exact(layer, bound, frac, what)


class TensorsKey:
    """A cache key on tensors' identity (storage kept alive) and in-place version counters, plus plain values."""

    def __init__(self, tensors, values=()):
        self.refs = [None if t is None else t.detach() for t in tensors]
        self.state = [None if t is None else (t.data_ptr(), t._version, t.dtype, tuple(t.shape), t.stride())
                      for t in tensors]
        self.values = tuple(values)

    def __deepcopy__(self, memo):
        return _NeverMatches()

    def __reduce__(self):
        return (_NeverMatches, ())

    def matches(self, tensors, values=()) -> bool:
        if self.state is None or len(tensors) != len(self.state) or tuple(values) != self.values:
            return False
        for t, s in zip(tensors, self.state):
            if (t is None) != (s is None):
                return False
            if t is not None and (t.data_ptr(), t._version, t.dtype, tuple(t.shape), t.stride()) != s:
                return False
        return True


class _NeverMatches(TensorsKey):
    """What a copied or unpickled cache key becomes: the copy's tensors live elsewhere, so recompute."""

    def __init__(self):
        self.refs, self.state, self.values = [], None, ()


def quantizer_state(q) -> tuple[list, tuple]:
    """The tensors and values an eval-mode cast by Quantizer ``q`` depends on (for TensorsKey)."""
    if q is None:
        return [None], (None,)
    k = tuple(q.k_hot) if isinstance(q.k_hot, list) else q.k_hot
    return [q.int_bits_param], (q.base_type, k, q.digits, q.axis, q.channels)
