"""QFX table-based activations: Sigmoid, Tanh, Hardsigmoid, Hardswish, LeakyReLU, and Softmax.

Eval mode (= the hardware, docs/semantics.md "Table layers"):

* ``Sigmoid`` / ``Tanh`` / ``Hardsigmoid`` / ``Hardswish`` / ``LeakyReLU``: ``y = T[m - raw_min]``,
  ``m`` the input mantissa, ``T[j] = cast(f(x_j), out_type)`` the exact cast of the exact function
  value at every code of the input type (``qfx_compile.fixed.tables``: exact rationals, or a proven
  interval for sigmoid/tanh). LeakyReLU's slope is first cast to ``slope_type``
  (``a = cast(negative_slope, slope_type)``), then ``f(x) = x`` for ``x >= 0``, ``x * a`` otherwise
  (the exact product, then the one cast of the table). An input wider than 16 bits (no table) computes
  the same sentence directly: ``cast(x * a)`` in float64 (exact), exported as ``LeakyRelu`` + ``FixedPoint``.
* ``Softmax(dim=-1)``: ``d_i = m_i - max m``, ``e_i = E[d_i + span]``,
  ``E[k] = cast(exp((k - span) * 2**-F_in), exp_type)``, ``S = sum e_i`` exact,
  ``y_i = cast(e_i / S, out_type)`` (exact quotient, one cast).

Eval needs the input type: ``quantize_model`` sets it for every forward (and ``.input_type``,
as for ``Clip``); a model built by hand sets ``.input_type``. Training (and calibration) is
the differentiable float surrogate ``output_quantizer(f(x))`` (straight-through cast).

``quantize_model`` gives Sigmoid, Tanh, Hardsigmoid and Softmax a fixed output type (their range is
known: ``ap_ufixed<W,0>``, ``ap_fixed<W,1>``, ``ap_ufixed<W,1>``, ``ap_ufixed<W,0>``, saturating, with
``QFXConfig.activation``'s width and rounding); Hardswish and LeakyReLU use ``activation`` with a
calibrated binary point.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..quantize import quantize, to_raw
from ..quantizer import Quantizer, as_fixed_type
from ...fixed.cast import float_to_raw
from ...fixed.tables import (MAX_TABLE_BITS, check_exp_type, div_shift, exp_table_raw, table_raw)
from ...fixed.types import FixedType
from ._base import QFXModule


class _NeedsInputType(QFXModule):
    """A layer whose eval mode is a function of its input type's codes."""

    needs_input_type = True  # quantize_model's infer_types sets .input_type

    def __init__(self):
        super().__init__()
        self.input_type: FixedType | None = None

    def eval_input_type(self) -> FixedType:
        st = getattr(self, "static_input_types", None)
        t = st[0] if st else None
        t = t if t is not None else self.input_type
        if t is None:
            raise ValueError(f"{self.layer_name}: eval mode needs the input type (set .input_type, or build the "
                             f"model with qfx.quantize_model, which infers it)")
        if t.width > MAX_TABLE_BITS:
            raise ValueError(f"{self.layer_name}: the input type {t} has {t.width} bits; a table layer takes at "
                             f"most {MAX_TABLE_BITS} (2**W entries): quantize its input to fewer bits")
        return t

    def export_input_type(self, ctx) -> FixedType:
        if self.input_type is not None and self.input_type != ctx.xt:
            raise ctx.error(f"the layer's input_type {self.input_type} differs from the type {ctx.xt} its input "
                            f"has in the graph; eval mode and the export would disagree")
        if ctx.xt.width > MAX_TABLE_BITS:
            raise ctx.error(f"the input type {ctx.xt} is wider than {MAX_TABLE_BITS} bits (a table of 2**W entries)")
        return ctx.xt


class TableActivation(_NeedsInputType):
    """``y = T[code(x)]`` in eval mode, ``output_quantizer(f(x))`` in training (see module doc)."""

    fn = ""  # the fixed.tables function name

    def __init__(self, output_type="ap_fixed<8,2,AP_RND_CONV,AP_SAT>", *, learnable: bool = True):
        super().__init__()
        self.output_quantizer = Quantizer(output_type, learnable=learnable, name="output")
        self._cache = None

    def float_fn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def slope(self) -> Fraction | None:
        return None

    def table(self, in_t: FixedType, out_t: FixedType) -> np.ndarray:
        """The output mantissas, one per code of ``in_t`` (``fixed.tables.table_raw``)."""
        return table_raw(self.fn, in_t, out_t, self.slope())

    def _values(self, in_t: FixedType, out_t: FixedType, device) -> torch.Tensor:
        key = (in_t, out_t, self.slope(), device)
        if self._cache is None or self._cache[0] != key:
            raw = torch.from_numpy(self.table(in_t, out_t))
            self._cache = (key, raw.to(torch.float64).mul(2.0 ** -out_t.frac_bits).to(device))
        return self._cache[1]

    def forward(self, x):
        if self._float_path():
            return self.output_quantizer(self.float_fn(x))
        in_t, out_t = self.eval_input_type(), self.output_quantizer.fixed_type()
        m = to_raw(x.to(torch.float64), in_t)  # refuses values off in_t's grid
        return self._values(in_t, out_t, x.device)[m - in_t.raw_min]

    def onnx_export(self, ctx):
        """ONNX body: ``qfx.Table(x, FixedPoint(T))``: a Gather of the table by the input mantissa."""
        from .. import onnx_ops
        in_t = self.export_input_type(ctx)
        out_t = ctx.act_type()
        values = self.table(in_t, out_t).astype(np.float64) * 2.0 ** -out_t.frac_bits  # exact (<= 53 bits)
        init = ctx.b.init(f"{ctx.name}.table", values)
        tq = ctx.b.fixed_point(init, out_t, out_t.int_bits, (), f"{ctx.name}.table", values.shape)
        overload = ctx.overload("table")
        ctx.b.custom_function(onnx_ops.table_function(overload, in_t.frac_bits, in_t.raw_min))
        y = ctx.node("Table", [ctx.x, tq], "out", domain=onnx_ops.DOMAIN, overload=overload, function=self.fn)
        return y, out_t


class Sigmoid(TableActivation):
    """``cast(1 / (1 + exp(-x)), out_type)`` per input code."""

    fn = "sigmoid"

    def __init__(self, output_type="ap_ufixed<8,0,AP_RND_CONV,AP_SAT>", *, learnable: bool = True):
        super().__init__(output_type, learnable=learnable)

    def float_fn(self, x):
        return torch.sigmoid(x)


class Tanh(TableActivation):
    """``cast(tanh(x), out_type)`` per input code."""

    fn = "tanh"

    def __init__(self, output_type="ap_fixed<8,1,AP_RND_CONV,AP_SAT>", *, learnable: bool = True):
        super().__init__(output_type, learnable=learnable)

    def float_fn(self, x):
        return torch.tanh(x)


class Hardsigmoid(TableActivation):
    """``cast(relu6(x + 3) / 6, out_type)`` per input code (exact rational, ties included)."""

    fn = "hardsigmoid"

    def __init__(self, output_type="ap_ufixed<8,1,AP_RND_CONV,AP_SAT>", *, learnable: bool = True):
        super().__init__(output_type, learnable=learnable)

    def float_fn(self, x):
        return F.hardsigmoid(x)


class Hardswish(TableActivation):
    """``cast(x * relu6(x + 3) / 6, out_type)`` per input code (exact rational, ties included)."""

    fn = "hardswish"

    def float_fn(self, x):
        return F.hardswish(x)


class LeakyReLU(TableActivation):
    """``cast(x if x >= 0 else x * a, out_type)`` per input code, ``a = cast(negative_slope, slope_type)``."""

    fn = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", *,
                 slope_type="ap_fixed<16,1,AP_RND_CONV,AP_SAT>", learnable: bool = True):
        super().__init__(output_type, learnable=learnable)
        self.negative_slope = float(negative_slope)
        self.slope_type = as_fixed_type(slope_type, "slope_type")
        t = self.slope_type
        if not (t.min <= self.negative_slope <= t.max):
            raise ValueError(f"LeakyReLU slope {negative_slope} lies outside the range [{t.min}, {t.max}] of "
                             f"slope_type {t}; give a wider slope_type")
        self._slope = Fraction(int(float_to_raw(np.array([self.negative_slope]), t)[0])) * Fraction(2) ** -t.frac_bits

    def slope(self) -> Fraction:
        """``a = cast(negative_slope, slope_type)``, exact."""
        return self._slope

    def float_fn(self, x):
        return F.leaky_relu(x, float(self._slope))

    def eval_input_type(self) -> FixedType:
        st = getattr(self, "static_input_types", None)
        t = (st[0] if st else None) or self.input_type
        return t if t is not None and t.width > MAX_TABLE_BITS else super().eval_input_type()

    def forward(self, x):
        if self._float_path():
            return super().forward(x)
        in_t = self.eval_input_type()
        if in_t.width <= MAX_TABLE_BITS:
            return super().forward(x)
        # a wide input: the exact product x * a in float64, then the one cast (no table)
        if in_t.width + self.slope_type.width + 1 > 53:
            raise ValueError(f"{self.layer_name}: x * a needs {in_t.width + self.slope_type.width} bits, more than "
                             f"float64 holds exactly; use a narrower input or slope_type")
        x = x.to(torch.float64)
        to_raw(x, in_t)  # refuses values off the input grid
        return self.output_quantizer(torch.where(x < 0, x * float(self._slope), x))

    def onnx_export(self, ctx):
        """Narrow input: ``qfx.Table``; wide input: ``LeakyRelu(alpha=a)`` (exact in double) then the cast."""
        in_t = self.export_input_type(ctx) if ctx.xt.width <= MAX_TABLE_BITS else ctx.xt
        if in_t.width <= MAX_TABLE_BITS:
            return super().onnx_export(ctx)
        if self.input_type is not None and self.input_type != ctx.xt:
            raise ctx.error(f"the layer's input_type {self.input_type} differs from the type {ctx.xt} of its input")
        a = float(self._slope)
        if float(np.float32(a)) != a or in_t.width + self.slope_type.width + 1 > 53:
            raise ctx.error(f"the slope {a!r} is not a float32 value or x * a exceeds 53 bits; use a narrower "
                            f"slope_type (at most 24 bits)")
        return ctx.cast_out(ctx.node("LeakyRelu", [ctx.x], "acc", alpha=a))

    def extra_repr(self):
        return f"negative_slope={self.negative_slope} (a = {float(self._slope)!r}), slope_type={self.slope_type}"


class Softmax(_NeedsInputType):
    """Softmax over the last axis: exp table, exact sum, exact division, one cast (see module doc)."""

    def __init__(self, dim: int = -1, output_type="ap_ufixed<8,0,AP_RND_CONV,AP_SAT>", *,
                 exp_type="ap_ufixed<16,1,AP_RND_CONV,AP_SAT>", learnable: bool = False):
        super().__init__()
        if dim not in (-1, 1):
            raise ValueError(f"Softmax supports the last axis of a (N, K) tensor only (dim=-1), got dim={dim}")
        self.dim = -1
        self.exp_type = as_fixed_type(exp_type, "exp_type")
        check_exp_type(self.exp_type)
        self.output_quantizer = Quantizer(output_type, learnable=learnable, name="output")
        self._cache = None

    def exp_table(self, in_t: FixedType) -> np.ndarray:
        return exp_table_raw(in_t, self.exp_type)

    def _check_widths(self, out_t: FixedType) -> int:
        k = div_shift(out_t)
        if self.exp_type.width + k + 1 > 53:
            raise ValueError(f"{self.layer_name}: e * 2**{k} / S needs {self.exp_type.width + k + 1} bits; at most "
                             f"53 are exact in the exported ONNX: use fewer bits in exp_type or the output type")
        return k

    def forward(self, x):
        if self._float_path():
            return self.output_quantizer(torch.softmax(x, dim=-1))
        if x.dim() != 2:
            raise ValueError(f"{self.layer_name}: expects a (N, K) input, got shape {tuple(x.shape)}")
        in_t, out_t = self.eval_input_type(), self.output_quantizer.fixed_type()
        k = self._check_widths(out_t)
        key = (in_t, self.exp_type, x.device)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, torch.from_numpy(self.exp_table(in_t)).to(x.device))
        e_tab = self._cache[1]
        m = to_raw(x.to(torch.float64), in_t)
        e = e_tab[m - m.max(dim=-1, keepdim=True).values + (in_t.raw_max - in_t.raw_min)]
        s = e.sum(dim=-1, keepdim=True)  # exact (int64)
        num = e * (1 << k)
        q = torch.div(num, s, rounding_mode="floor")
        mq = 2 * q + (num - q * s != 0).to(torch.int64)  # rounds like e / s (fixed.tables.div_cast)
        return quantize(mq.to(torch.float64) * 2.0 ** -(k + 1), out_t)

    def onnx_export(self, ctx):
        """ONNX body: ``qfx.Softmax(x, FixedPoint(E))`` (int64 max, lookup, sum, division), then the cast."""
        from .. import onnx_ops
        in_t = self.export_input_type(ctx)
        if len(ctx.in_shapes[0]) != 1:
            raise ctx.error(f"Softmax expects a (N, K) input, got (N, {', '.join(map(str, ctx.in_shapes[0]))})")
        out_t = ctx.act_type()
        k = self._check_widths(out_t)
        et = self.exp_type
        values = self.exp_table(in_t).astype(np.float64) * 2.0 ** -et.frac_bits
        init = ctx.b.init(f"{ctx.name}.exp_table", values)
        eq = ctx.b.fixed_point(init, et, et.int_bits, (), f"{ctx.name}.exp_table", values.shape)
        overload = ctx.overload("softmax")
        ctx.b.custom_function(onnx_ops.softmax_function(overload, in_t.frac_bits, in_t.raw_max - in_t.raw_min,
                                                        et.frac_bits, k, et.width))
        y = ctx.node("Softmax", [ctx.x, eq], "acc", domain=onnx_ops.DOMAIN, overload=overload, axis=-1)
        return ctx.cast_out(y)

    def extra_repr(self):
        return f"dim=-1, exp_type={self.exp_type}"


# ------------------------------------------------------------------ conversion from torch (quantize_model)
#: bounded outputs get a fixed binary point (calibration could only shrink the range the function is known
#: to cover): (signed, integer bits) of the output type; width and rounding come from QFXConfig.activation
_BOUNDED = {"Sigmoid": (False, 0), "Tanh": (True, 1), "Hardsigmoid": (False, 1), "Softmax": (False, 0)}


def _bounded_type(cls_name: str, opts) -> FixedType:
    signed, ib = _BOUNDED[cls_name]
    return opts["activation"].replace(signed=signed, int_bits=ib, overflow="AP_SAT")


def _leaky(slope, opts):
    return LeakyReLU(slope, opts["activation"], learnable=opts["learn_int_bits"])


def _table_module(cls):
    if cls.__name__ in _BOUNDED:
        return lambda opts: cls(_bounded_type(cls.__name__, opts), learnable=False)
    return lambda opts: cls(opts["activation"], learnable=opts["learn_int_bits"])


def _softmax(opts):
    return Softmax(-1, _bounded_type("Softmax", opts), learnable=False)


TORCH_MODULES = {nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.Hardsigmoid: "Hardsigmoid", nn.Hardswish: "Hardswish",
                 nn.LeakyReLU: "LeakyReLU", nn.Softmax: "Softmax"}
SUPPORTED = ("nn.Sigmoid", "nn.Tanh", "nn.Hardsigmoid", "nn.Hardswish", "nn.LeakyReLU", "nn.Softmax(dim=-1)",
             "torch.sigmoid / torch.tanh / F.* forms", "F.softmax(x, dim=-1)", "F.leaky_relu")


def convert_module(mod: nn.Module, opts: dict):
    """The QFX twin of a torch activation module, or None if ``mod`` is not one; ValueError if unsupported."""
    if isinstance(mod, nn.Softmax):
        if mod.dim not in (-1, 1):
            raise ValueError(f"nn.Softmax(dim={mod.dim}): only the last axis of a (N, K) tensor (dim=-1)")
        return _softmax(opts)
    if isinstance(mod, nn.LeakyReLU):
        return _leaky(mod.negative_slope, opts)
    for cls, q in ((nn.Sigmoid, Sigmoid), (nn.Tanh, Tanh), (nn.Hardsigmoid, Hardsigmoid), (nn.Hardswish, Hardswish)):
        if isinstance(mod, cls):
            return _table_module(q)(opts)
    return None


_FUNCTIONS = {torch.sigmoid: "Sigmoid", F.sigmoid: "Sigmoid", "sigmoid": "Sigmoid",
              torch.tanh: "Tanh", F.tanh: "Tanh", "tanh": "Tanh",
              F.hardsigmoid: "Hardsigmoid", F.hardswish: "Hardswish",
              F.leaky_relu: "LeakyReLU", F.softmax: "Softmax", torch.softmax: "Softmax", "softmax": "Softmax"}


def function_spec(target, args, kwargs):
    """``(class name, factory(opts))`` for a functional activation call, None if it is not one.

    ValueError when it is one with unsupported arguments (softmax not over the last axis, inplace, ...).
    """
    try:
        name = _FUNCTIONS.get(target)
    except TypeError:  # unhashable target
        return None
    if name is None:
        return None
    rest = list(args[1:])
    # arguments that change nothing: inplace=False, softmax's dtype=None and _stacklevel
    kw = {k: v for k, v in kwargs.items() if not (k == "_stacklevel" or (k, v) in (("inplace", False),
                                                                                    ("dtype", None)))}
    if name == "Softmax":
        dim = rest.pop(0) if rest else kw.pop("dim", None)
        if rest and rest[0] == 3:  # F.softmax's positional _stacklevel
            rest.pop(0)
        if rest and rest[0] is None:  # dtype
            rest.pop(0)
        if dim not in (-1, 1) or rest or kw:
            raise ValueError(f"softmax(dim={dim}, ...): only softmax over the last axis of a (N, K) tensor "
                             f"(dim=-1) without other arguments")
        return name, _softmax
    if name == "LeakyReLU":
        slope = rest.pop(0) if rest else kw.pop("negative_slope", 0.01)
        if rest and rest[0] is False:
            rest.pop(0)
        if rest or kw or not isinstance(slope, (int, float)):
            raise ValueError("leaky_relu(x, negative_slope) with a constant slope only")
        return name, lambda opts: _leaky(float(slope), opts)
    if rest and rest == [False]:
        rest = []
    if rest or kw:
        raise ValueError(f"{getattr(target, '__name__', target)} with extra arguments {rest or kw} is not supported")
    cls = {"Sigmoid": Sigmoid, "Tanh": Tanh, "Hardsigmoid": Hardsigmoid, "Hardswish": Hardswish}[name]
    return name, _table_module(cls)
