"""``quantize_model``: turn a float ``nn.Module`` into a QFX model (torch.fx graph of QFX layers).

The model is traced with torch.fx (QFX layers and torch.nn layers are leaves);
supported layers are swapped for their QFX twins with the trained weights and
statistics copied; residual ``+`` (``operator.add`` / ``torch.add``) becomes
``qfx.nn.Add``, ``torch.flatten`` / ``nn.Flatten`` / ``x.flatten(1)`` become
``qfx.nn.Flatten``, ``F.relu`` becomes ``qfx.nn.ReLU``; Dropout and Identity are
removed; a ``QuantInput`` is inserted after the input. Weight / bias / BatchNorm
binary points start from the float values; activation binary points from one
calibration pass over ``example_input`` (unless ``learn_int_bits=False``: then
every type is used exactly as declared and frozen).

Which type goes where (``QFXConfig`` fields; a FixedType or its C++ spelling):
``weight``, ``bias`` (Linear/Conv2d), ``output`` (Linear/Conv2d output cast),
``bn_scale``, ``bn_shift``, ``bn_output`` (BatchNorm2d), ``residual`` (Add),
``pool`` (average pools), ``input`` (QuantInput); ``output``, ``bn_output``,
``residual``, ``pool``, ``input`` default to ``activation``.
``overrides`` maps a layer's qualified name (fnmatch patterns allowed) or a
class name (``"Conv2d"``, ``"Linear"``, ``"BatchNorm2d"``, ``"Add"``, ...) to a dict
of these fields (mixed precision); names win over class names.

Mixed rows (Mix and Match, arXiv 2012.04240): with ``k_hot`` and ``lut_rows``, each
K-hot Linear/Conv layer keeps ``lut_rows`` of its rows (output channels) K-hot in
``digits`` (shift-add in LUTs) and makes the others plain fixed-point rows of the same
weight type (DSP multiplies): per-row K ``[K or 0, ...]`` in the weight quantizer and in
the exported ``k_hot``. :func:`assign_rows` chooses the rows (quantize_model calls it
once, after calibration) and re-chooses them during training.

Learned word lengths (``learn_width=True``, overridable per layer): the weight tensor and the
output (activation) cast of every layer, and the input cast, learn their width W within
``[min_width, max_width]`` (``max_width=None``: the declared width, so training can only narrow
a type) beside their binary point (:meth:`Quantizer.learn_width`); biases and BatchNorm
constants keep their declared widths. Eval mode and the export use the current integer widths.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import nn as qnn
from .calibrate import calibrate
from .khot import DIGIT_FLAVOURS, check_khot, choose_lut_rows, row_error_gap
from .quantize import quantize, to_raw
from .quantizer import Quantizer, as_fixed_type, int_bits_to_cover
from ..fixed.types import FixedType


@dataclasses.dataclass
class QFXConfig:
    """Default types and options of :func:`quantize_model` (see module doc).

    ``lut_rows`` (K-hot layers only; overridable per layer): which share of each layer's rows
    is K-hot, the others plain fixed-point (:func:`assign_rows`):

    * ``None``: every row K-hot (no mixed rows);
    * a float in [0, 1]: that share of the rows, ``floor(share * rows + 1/2)``;
    * an int >= 0: that many rows (all rows of a layer that has fewer);
    * ``"auto"``: the share that keeps both kinds of compute busy on ``target`` (a name of
      ``qfx_compile.targets.TARGETS`` or a Target), see :func:`auto_lut_rows`.
    """

    weight: FixedType | str = "ap_fixed<8,1,AP_RND_CONV,AP_SAT>"
    bias: FixedType | str = "ap_fixed<16,6,AP_RND_CONV,AP_SAT>"
    activation: FixedType | str = "ap_fixed<8,4,AP_RND_CONV,AP_SAT>"
    output: FixedType | str | None = None
    input: FixedType | str | None = None
    bn_scale: FixedType | str = "ap_fixed<8,3,AP_RND_CONV,AP_SAT>"
    bn_shift: FixedType | str = "ap_fixed<8,3,AP_RND_CONV,AP_SAT>"
    bn_output: FixedType | str | None = None
    residual: FixedType | str | None = None
    pool: FixedType | str | None = None
    k_hot: int | list | None = None
    digits: str = "csd"
    per_channel_weights: bool = True
    per_channel_bn: bool = True
    learn_int_bits: bool = True
    recip_bits: int = 16
    input_range: tuple[float, float] | None = None
    unsigned_relu: bool = False
    lut_rows: float | int | str | None = None
    target: str | None = None
    learn_width: bool = False
    min_width: int = 2
    max_width: int | None = None
    overrides: dict = dataclasses.field(default_factory=dict)


_TYPE_FIELDS = ("weight", "bias", "activation", "output", "input", "bn_scale", "bn_shift", "bn_output", "residual",
                "pool")
_OVERRIDABLE = set(f.name for f in dataclasses.fields(QFXConfig)) - {"overrides", "input_range", "unsigned_relu",
                                                                      "target"}
_FIELD_DEFAULTS = {"output": "activation", "input": "activation", "bn_output": "activation",
                   "residual": "activation", "pool": "activation"}

SUPPORTED = ("nn.Linear", "nn.Conv2d (groups, dilation=1, zero padding)", "nn.BatchNorm2d", "nn.ReLU",
             "nn.ReLU6", "nn.Hardtanh", "nn.MaxPool2d", "nn.AvgPool2d (count_include_pad)", "nn.ZeroPad2d",
             "nn.Upsample (nearest, integer scale)", "torch.cat (dim=1)", "nn.Conv1d", "nn.BatchNorm1d", "nn.MaxPool1d",
             "nn.AvgPool1d", "nn.AdaptiveAvgPool1d(1)",
             "F.max_pool2d / F.avg_pool2d / F.adaptive_avg_pool2d / F.pad / F.interpolate / F.relu6 / F.hardtanh",
             "nn.AdaptiveAvgPool2d(1)", "nn.Flatten", "nn.Dropout", "nn.Identity", "qfx.nn layers",
             "operator.add / torch.add (two tensors)", "torch.flatten(x, 1)", "F.relu / torch.relu") + \
    qnn.activation.SUPPORTED


def _as_config(config) -> QFXConfig:
    if config is None:
        return QFXConfig()
    if isinstance(config, QFXConfig):
        return config
    if isinstance(config, dict):
        bad = set(config) - {f.name for f in dataclasses.fields(QFXConfig)}
        if bad:
            raise ValueError(f"unknown QFXConfig field(s) {sorted(bad)}; known: "
                             f"{[f.name for f in dataclasses.fields(QFXConfig)]}")
        return QFXConfig(**config)
    raise ValueError(f"config must be a QFXConfig, a dict or None, got {type(config).__name__}")


class _Resolver:
    """Per-layer options: defaults, then class-name overrides, then name overrides."""

    def __init__(self, cfg: QFXConfig):
        self.cfg = cfg
        self.used = set()
        if not isinstance(cfg.overrides, dict):
            raise ValueError("QFXConfig.overrides must be a dict {layer name or class name: {field: value}}")
        for key, ov in cfg.overrides.items():
            if not isinstance(ov, dict):
                raise ValueError(f"override {key!r} must be a dict of QFXConfig fields, got {ov!r}")
            bad = set(ov) - _OVERRIDABLE
            if bad:
                raise ValueError(f"override {key!r}: unknown field(s) {sorted(bad)}; overridable: "
                                 f"{sorted(_OVERRIDABLE)}")
        base = {f: getattr(cfg, f) for f in _OVERRIDABLE}
        self._validate(base, "QFXConfig")
        wanted = [("QFXConfig", cfg.lut_rows)] + [(f"override {k!r}", ov["lut_rows"]) for k, ov in cfg.overrides.items()
                                                  if "lut_rows" in ov]
        problems = [p for where, v in wanted for p in [_lut_rows_problem(v, where)] if p]
        if any(v == "auto" for _, v in wanted if isinstance(v, str)):
            problems += [p for p in [_target_problem(cfg.target, "QFXConfig")] if p]
        elif cfg.target is not None:
            problems += [p for p in [_target_problem(cfg.target, "QFXConfig", needed=False)] if p]
        if problems:
            raise ValueError("; ".join(problems))

    @staticmethod
    def _validate(opts: dict, where: str) -> None:
        for f in _TYPE_FIELDS:
            if opts.get(f) is not None:
                opts[f] = as_fixed_type(opts[f], f"{where}: {f}")
        if opts.get("digits") not in DIGIT_FLAVOURS:
            raise ValueError(f"{where}: digits must be one of {DIGIT_FLAVOURS}, got {opts.get('digits')!r}")
        if opts.get("k_hot") is not None:
            check_khot(opts["k_hot"], opts["digits"], opts["weight"].width, f"{where}: k_hot")
        if not opts["weight"].signed:
            raise ValueError(f"{where}: the weight type {opts['weight']} is unsigned; weights need ap_fixed")
        if not isinstance(opts.get("learn_width"), bool):
            raise ValueError(f"{where}: learn_width must be True or False, got {opts.get('learn_width')!r}")
        if opts["learn_width"] and not opts["learn_int_bits"]:
            raise ValueError(f"{where}: learn_width=True needs learn_int_bits=True (learn_int_bits=False keeps "
                             f"every type as declared)")
        for f, v in (("min_width", opts.get("min_width")), ("max_width", opts.get("max_width"))):
            if (v is not None or f == "min_width") and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{where}: {f} must be an int >= 1{' or None' if f == 'max_width' else ''}, got {v!r}")
        if opts.get("max_width") is not None and opts["min_width"] > opts["max_width"]:
            raise ValueError(f"{where}: min_width {opts['min_width']} > max_width {opts['max_width']}")
        if opts.get("lut_rows") is not None and opts.get("k_hot") is not None:
            if isinstance(opts["k_hot"], (list, tuple)):
                raise ValueError(f"{where}: lut_rows chooses each row's K itself (K or 0): give k_hot as one int, "
                                 f"not {opts['k_hot']!r}")
            if not opts["per_channel_weights"]:
                raise ValueError(f"{where}: lut_rows needs per_channel_weights=True (a K per row)")

    def options(self, name: str, classes: tuple[str, ...]) -> dict:
        opts = {f: getattr(self.cfg, f) for f in _OVERRIDABLE}
        ov = self.cfg.overrides
        for key in ov:
            if key in classes:
                opts.update(ov[key])
                self.used.add(key)
        for key in ov:
            if key not in classes and (key == name or fnmatch.fnmatchcase(name, key)):
                opts.update(ov[key])
                self.used.add(key)
        for f, src in _FIELD_DEFAULTS.items():
            if opts.get(f) is None:
                opts[f] = opts[src]
        self._validate(opts, f"layer {name!r}")
        return opts


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, qnn.QFXModule) or super().is_leaf_module(m, qualname)


def _set_module(root: nn.Module, target: str, new: nn.Module) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _unsupported(name: str, what: str, why: str = "") -> ValueError:
    return ValueError(f"unsupported layer {name!r} ({what}){': ' + why if why else ''}. "
                      f"Supported: {', '.join(SUPPORTED)}")


def _convert_module(name: str, mod: nn.Module, opts: dict):
    """The QFX twin of ``mod`` (weights copied), or None to drop it (Dropout, Identity)."""
    learn = opts["learn_int_bits"]
    cls = type(mod).__name__
    if isinstance(mod, qnn.QFXModule):
        return mod
    if isinstance(mod, (nn.Dropout, nn.Identity)):
        return None
    if isinstance(mod, nn.Linear):
        new = qnn.Linear(mod.in_features, mod.out_features, mod.bias is not None, weight_type=opts["weight"],
                         bias_type=opts["bias"], output_type=opts["output"],
                         per_channel=opts["per_channel_weights"], k_hot=opts["k_hot"],
                         digits=opts["digits"] if opts["k_hot"] is not None else None, learnable=learn)
    elif isinstance(mod, nn.Conv2d):
        if tuple(mod.dilation) != (1, 1):
            raise _unsupported(name, cls, f"dilation={mod.dilation}; only 1")
        if mod.padding_mode != "zeros":
            raise _unsupported(name, cls, f"padding_mode={mod.padding_mode!r}; only 'zeros'")
        pad = mod.padding
        if isinstance(pad, str):
            if pad != "valid":
                raise _unsupported(name, cls, f"padding={pad!r}; give explicit padding")
            pad = (0, 0)
        new = qnn.Conv2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, pad,
                         mod.bias is not None, weight_type=opts["weight"], bias_type=opts["bias"],
                         output_type=opts["output"], per_channel=opts["per_channel_weights"], k_hot=opts["k_hot"],
                         digits=opts["digits"] if opts["k_hot"] is not None else None, learnable=learn,
                         groups=mod.groups)
    elif isinstance(mod, nn.Conv1d):
        if tuple(mod.dilation) != (1,) or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            raise _unsupported(name, cls, f"dilation={mod.dilation}, padding={mod.padding!r}, padding_mode="
                                          f"{mod.padding_mode!r}; only dilation 1 and explicit zero padding")
        new = qnn.Conv1d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                         mod.bias is not None, weight_type=opts["weight"], bias_type=opts["bias"],
                         output_type=opts["output"], per_channel=opts["per_channel_weights"], k_hot=opts["k_hot"],
                         digits=opts["digits"] if opts["k_hot"] is not None else None, learnable=learn,
                         groups=mod.groups)
        with torch.no_grad():
            new.weight.copy_(mod.weight.unsqueeze(2))  # (O, C/G, K) -> (O, C/G, 1, K)
            if mod.bias is not None:
                new.bias.copy_(mod.bias)
        if learn:
            new.init_quantizers_from_weights()
        return new
    elif isinstance(mod, nn.MaxPool1d):
        if mod.dilation not in (1, (1,)) or mod.ceil_mode or mod.return_indices:
            raise _unsupported(name, cls, "dilation, ceil_mode and return_indices are not supported")
        return qnn.MaxPool1d(mod.kernel_size, mod.stride, mod.padding)
    elif isinstance(mod, nn.AvgPool1d):
        if mod.ceil_mode or (mod.padding not in (0, (0,)) and not mod.count_include_pad):
            raise _unsupported(name, cls, "ceil_mode and padding with count_include_pad=False are not supported")
        return qnn.AvgPool1d(mod.kernel_size, mod.stride, mod.padding, output_type=opts["pool"],
                             recip_bits=opts["recip_bits"], learnable=learn)
    elif isinstance(mod, nn.AdaptiveAvgPool1d):
        if mod.output_size not in (1, (1,), [1]):
            raise _unsupported(name, cls, f"output_size={mod.output_size}; only 1")
        return qnn.AdaptiveAvgPool1d(1, output_type=opts["pool"], recip_bits=opts["recip_bits"], learnable=learn)
    elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
        if not mod.track_running_stats:
            raise _unsupported(name, cls, "track_running_stats=False (eval needs running statistics)")
        new = (qnn.BatchNorm1d if isinstance(mod, nn.BatchNorm1d) else qnn.BatchNorm2d)(mod.num_features, mod.eps, mod.momentum, scale_type=opts["bn_scale"],
                              shift_type=opts["bn_shift"], output_type=opts["bn_output"],
                              per_channel=opts["per_channel_bn"], learnable=learn)
        with torch.no_grad():
            if mod.affine:
                new.weight.copy_(mod.weight)
                new.bias.copy_(mod.bias)
            new.running_mean.copy_(mod.running_mean)
            new.running_var.copy_(mod.running_var)
            new.num_batches_tracked.copy_(mod.num_batches_tracked)
        if learn:
            new.init_quantizers_from_stats()
        return new
    elif isinstance(mod, nn.ReLU):
        return qnn.ReLU()
    elif isinstance(mod, nn.ReLU6):
        return qnn.Clip(0.0, 6.0)
    elif isinstance(mod, nn.Hardtanh):
        return qnn.Clip(mod.min_val, mod.max_val)
    elif isinstance(mod, nn.MaxPool2d):
        if mod.dilation not in (1, (1, 1)) or mod.ceil_mode or mod.return_indices:
            raise _unsupported(name, cls, "dilation, ceil_mode and return_indices are not supported")
        return qnn.MaxPool2d(mod.kernel_size, mod.stride, mod.padding)
    elif isinstance(mod, nn.AvgPool2d):
        if mod.ceil_mode or mod.divisor_override is not None or \
                (mod.padding not in (0, (0, 0)) and not mod.count_include_pad):
            raise _unsupported(name, cls, "ceil_mode, divisor_override and padding with count_include_pad=False "
                                          "are not supported")
        return qnn.AvgPool2d(mod.kernel_size, mod.stride, mod.padding, output_type=opts["pool"],
                             recip_bits=opts["recip_bits"], learnable=learn)
    elif isinstance(mod, nn.ZeroPad2d):
        return qnn.ZeroPad2d(tuple(int(v) for v in mod.padding))
    elif isinstance(mod, nn.Upsample):
        sf = mod.scale_factor
        sfs = (sf, sf) if not isinstance(sf, (tuple, list)) else tuple(sf)
        if mod.mode != "nearest" or mod.size is not None or sf is None or \
                any(float(v) != int(v) or v < 1 for v in sfs) or len(sfs) != 2:
            raise _unsupported(name, cls, f"mode={mod.mode!r}, size={mod.size}, scale_factor={sf}; only "
                                          f"mode='nearest' with integer scale factors")
        return qnn.Upsample(tuple(int(v) for v in sfs))
    elif isinstance(mod, nn.AdaptiveAvgPool2d):
        if mod.output_size not in (1, (1, 1), [1, 1]):
            raise _unsupported(name, cls, f"output_size={mod.output_size}; only 1")
        return qnn.AdaptiveAvgPool2d(1, output_type=opts["pool"], recip_bits=opts["recip_bits"], learnable=learn)
    elif qnn.activation.convert_module(mod, opts) is not None:  # Sigmoid, Tanh, Softmax, LeakyReLU, Hard*
        return qnn.activation.convert_module(mod, opts)
    elif isinstance(mod, nn.Flatten):
        if mod.start_dim != 1 or mod.end_dim != -1:
            raise _unsupported(name, cls, "only start_dim=1, end_dim=-1")
        return qnn.Flatten()
    else:
        raise _unsupported(name, cls)
    with torch.no_grad():
        new.weight.copy_(mod.weight)
        if mod.bias is not None:
            new.bias.copy_(mod.bias)
    if learn:
        new.init_quantizers_from_weights()
    return new


def _size_helper(node) -> bool:
    """``x.size(0)`` / ``x.shape`` / ``x.shape[0]`` whose every use is a batch flatten (``x.view(x.size(0), -1)``)."""
    import operator
    if not ((node.op == "call_method" and node.target == "size") or
            (node.op == "call_function" and node.target in (getattr, operator.getitem))):
        return False
    users = list(node.users)
    return bool(users) and all(qnn.structural.batch_flatten_source(u) is not None or _size_helper(u) for u in users)


def _function_module(node):
    """The torch module a functional call computes (qnn.structural.function_module), or None."""
    try:
        return qnn.structural.function_module(node.target, node.args, node.kwargs)
    except (TypeError, ValueError) as e:
        what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        raise _unsupported(node.name, f"{node.op} {what}", str(e)) from None


def _float_class(mod) -> tuple[str, ...]:
    names = (type(mod).__name__,)
    return names


def quantize_model(model: nn.Module, config=None, example_input: torch.Tensor | None = None) -> fx.GraphModule:
    """A QFX model (``fx.GraphModule``, in training mode) computing ``model`` in fixed point; see module doc."""
    cfg = _as_config(config)
    res = _Resolver(cfg)
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - report any tracing failure the same way
        raise ValueError(f"torch.fx could not trace {type(model).__name__}: {e}") from e
    gm = fx.GraphModule(model, graph, type(model).__name__ + "QFX")
    g = gm.graph
    placeholders = [n for n in g.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"quantize_model supports one input tensor, the model has {len(placeholders)}")
    new_name = {}
    widths: dict[str, dict] = {}  # layer name -> its options (learn_width)

    def add_module(node, base, mod, args, opts=None):
        name = base
        i = 1
        while hasattr(gm, name):
            name = f"{base}_{i}"
            i += 1
        gm.add_submodule(name, mod)
        with g.inserting_after(node):
            new = g.call_module(name, args=args)
        node.replace_all_uses_with(new)
        g.erase_node(node)
        widths[name] = opts
        return name

    for node in list(g.nodes):
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if node.target in new_name:
                _set_module(gm, node.target, new_name[node.target])
                continue
            opts = res.options(node.target, _float_class(mod))
            try:
                new = _convert_module(node.target, mod, opts)
            except ValueError as e:
                if str(e).startswith("unsupported layer"):
                    raise
                raise ValueError(f"layer {node.target!r} ({type(mod).__name__}): {e}") from None
            if new is None:
                node.replace_all_uses_with(node.args[0])
                g.erase_node(node)
                continue
            new_name[node.target] = new
            widths[node.target] = opts
            _set_module(gm, node.target, new)
            _attach_row_spec(new, opts, cfg.target)
        elif node.op in ("call_function", "call_method"):
            t = node.target
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            if t in (operator.add, torch.add, "add") and len(node.args) == 2 and len(tensors) == 2 \
                    and not node.kwargs:
                opts = res.options(node.name, ("Add",))
                add_module(node, node.name, qnn.Add(opts["residual"], learnable=opts["learn_int_bits"]),
                           tuple(node.args), opts)
            elif t in (torch.flatten, "flatten") and len(tensors) == 1 and \
                    tuple(node.args[1:]) + tuple(node.kwargs.values()) in ((1,), (1, -1)):
                add_module(node, node.name, qnn.Flatten(), (node.args[0],))
            elif qnn.structural.batch_flatten_source(node) is not None:  # x.view(x.size(0), -1)
                helper = node.args[1] if isinstance(node.args[1], fx.Node) else None
                add_module(node, node.name, qnn.Flatten(), (qnn.structural.batch_flatten_source(node),))
                for h in (helper, helper.args[0] if helper is not None and helper.op == "call_function"
                          else None):
                    if isinstance(h, fx.Node) and not h.users:
                        g.erase_node(h)
            elif _size_helper(node):
                pass  # x.size(0) / x.shape[0] of a flatten below: removed with it
            elif len(tensors) == 1 and node.args and node.args[0] is tensors[0] and \
                    qnn.activation.function_spec(t, node.args, node.kwargs) is not None:
                cls, make = qnn.activation.function_spec(t, node.args, node.kwargs)
                opts = res.options(node.name, (cls,))
                add_module(node, node.name, make(opts), (node.args[0],), opts)
            elif t in (F.relu, torch.relu, "relu") and len(tensors) == 1 and len(node.args) == 1:
                add_module(node, node.name, qnn.ReLU(), (node.args[0],))
            elif t in (torch.cat, torch.concat) and node.args and isinstance(node.args[0], (list, tuple)) and \
                    all(isinstance(a, fx.Node) for a in node.args[0]):
                dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
                if dim != 1:
                    raise _unsupported(node.name, f"torch.cat(dim={dim})", "only the channel axis, dim=1")
                add_module(node, node.name, qnn.Concat(1), tuple(node.args[0]))
            elif len(tensors) == 1 and node.args and node.args[0] is tensors[0] and \
                    _function_module(node) is not None:
                mod = _function_module(node)
                opts = res.options(node.name, (type(mod).__name__,))
                new = _convert_module(node.name, mod, opts)
                if new is None:
                    node.replace_all_uses_with(node.args[0])
                    g.erase_node(node)
                else:
                    add_module(node, node.name, new, (node.args[0],), opts)
            else:
                what = t if isinstance(t, str) else getattr(t, "__name__", str(t))
                raise _unsupported(node.name, f"{node.op} {what}")
        elif node.op == "get_attr":
            raise _unsupported(node.name, f"parameter or buffer access {node.target!r} in forward")
    unused = set(cfg.overrides) - res.used
    # the input quantizer
    ph = placeholders[0]
    opts = res.options("input_quant", ("QuantInput",))
    qin = qnn.QuantInput(opts["input"], learnable=opts["learn_int_bits"])
    if "input_quant" in cfg.overrides:
        unused.discard("input_quant")
    if unused:
        raise ValueError(f"override key(s) {sorted(unused)} match no layer name or class of the model")
    gm.add_submodule("input_quant", qin)
    widths["input_quant"] = opts
    users = list(ph.users)
    with g.inserting_after(ph):
        qnode = g.call_module("input_quant", args=(ph,))
    for u in users:
        u.replace_input_with(ph, qnode)
    if cfg.input_range is not None:
        lo, hi = (float(v) for v in cfg.input_range)
        t = qin.output_quantizer.fixed_type()
        if lo < 0 and not t.signed:
            raise ValueError(f"input type {t} is unsigned but the declared input range {cfg.input_range} is negative")
        if opts["learn_int_bits"]:
            qin.output_quantizer.set_int_bits(int_bits_to_cover(lo, hi, t.signed))
            qin.output_quantizer.freeze()
        elif lo < t.min or hi > t.max:
            raise ValueError(f"input type {t} (range [{t.min}, {t.max}]) cannot hold the declared input range "
                             f"{cfg.input_range}")
    g.lint()
    gm.recompile()
    _learn_widths(gm, widths)
    if cfg.unsigned_relu:
        _unsigned_activations(gm)
    _fuse_relus(gm)
    for name, m in gm.named_modules():
        if isinstance(m, qnn.QFXModule):
            m.qfx_name = name
    if not cfg.learn_int_bits:
        for q in gm.modules():
            if isinstance(q, Quantizer):
                q.freeze()
    gm.register_forward_pre_hook(_eval_types_hook)
    gm.register_forward_hook(_clear_static_types, always_call=True)
    if example_input is not None:
        calibrate(gm, example_input)
    if any(isinstance(m, qnn.QFXModule) and getattr(m, "qfx_rows", None) is not None for m in gm.modules()):
        assign_rows(gm)
    elif cfg.lut_rows is not None or any("lut_rows" in ov for ov in cfg.overrides.values()):
        raise ValueError(f"QFXConfig.lut_rows={cfg.lut_rows!r} splits the rows of K-hot layers, but no Linear/Conv "
                         f"layer of the model is K-hot: set k_hot (and digits)")
    gm.train(model.training)
    return gm


_SAT = ("AP_SAT", "AP_SAT_SYM", "AP_SAT_ZERO")


def _learn_widths(gm: fx.GraphModule, layer_opts: dict) -> None:
    """``learn_width``: the weight and output quantizers of each layer that asks learn their width."""
    problems = []
    for name, opts in layer_opts.items():
        if not opts or not opts.get("learn_width"):
            continue
        m = gm.get_submodule(name)
        for attr in ("weight_quantizer", "output_quantizer"):
            q = getattr(m, attr, None)
            if isinstance(q, Quantizer):
                try:
                    q.learn_width(opts["min_width"], opts["max_width"])
                except ValueError as e:
                    problems.append(f"layer {name!r}: {e}")
    if problems:
        raise ValueError("; ".join(problems))


def _fuse_relus(gm: fx.GraphModule) -> None:
    """Set ``fuse_relu`` on each BatchNorm and Add module whose every call has one user, a ReLU: training then
    applies the ReLU in the module's output cast (``QFXModule.fuse_relu``); and ``fuse_cast_into_bn`` on each
    Conv2d whose every call has one user, a BatchNorm2d, which then runs the convolution's output cast's
    backward in its own node (``Conv2d.fuse_cast_into_bn``). Eval and export are unchanged."""
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)

    def feeds_only(node: fx.Node, cls) -> bool:
        users = list(node.users)
        return len(users) == 1 and users[0].op == "call_module" and type(gm.get_submodule(users[0].target)) is cls

    def feeds_one_relu(node: fx.Node) -> bool:
        return feeds_only(node, qnn.ReLU)

    for target, nodes in calls.items():
        m = gm.get_submodule(target)
        if isinstance(m, (qnn.BatchNorm2d, qnn.Add)):
            m.fuse_relu = all(feeds_one_relu(n) for n in nodes)
        if type(m) is qnn.Conv2d:
            m.fuse_cast_into_bn = all(feeds_only(n, qnn.BatchNorm2d) for n in nodes)


def _unsigned_activations(gm: fx.GraphModule) -> None:
    """``QFXConfig.unsigned_relu``: signed activation casts whose values are never negative where used
    become unsigned of the same width (one more bit of resolution for the same hardware cost).

    A node's output cast becomes ``ap_ufixed`` (saturating overflow only) when every user is a
    ReLU or a ``Clip`` with ``lo >= 0`` (they would zero any negative value anyway; the unsigned
    saturating cast sends it to 0 first), or when the node is an average pool, an addition or a
    ``Quant`` whose inputs are all non-negative (ReLU / Clip outputs, max pools and flattens of them,
    unsigned casts).
    """
    nonneg: dict[str, bool] = {}

    def is_nonneg_user(u):
        if u.op != "call_module":
            return False
        m = gm.get_submodule(u.target)
        return isinstance(m, qnn.ReLU) or (isinstance(m, qnn.Clip) and m.lo >= 0)

    for node in gm.graph.nodes:
        if node.op != "call_module":
            nonneg[node.name] = False
            continue
        m = gm.get_submodule(node.target)
        ins = [a for a in node.args if isinstance(a, fx.Node)]
        all_in = bool(ins) and all(nonneg.get(a.name, False) for a in ins)
        q = getattr(m, "output_quantizer", None)
        if isinstance(m, (qnn.ReLU,)) or (isinstance(m, qnn.Clip) and m.lo >= 0):
            nonneg[node.name] = True
        elif isinstance(m, (qnn.MaxPool2d, qnn.Flatten)):
            nonneg[node.name] = all_in
        elif q is not None:
            t = q.base_type
            users_clip = bool(node.users) and all(is_nonneg_user(u) for u in node.users)
            keeps = isinstance(m, (qnn.AvgPool2d, qnn.AdaptiveAvgPool2d, qnn.Add)) or type(m) is qnn.Quant
            if t.signed and t.overflow in _SAT and (users_clip or (keeps and all_in)):
                q.base_type = t.replace(signed=False, overflow="AP_SAT" if t.overflow == "AP_SAT_SYM"
                                        else t.overflow)
            nonneg[node.name] = not q.base_type.signed
        else:
            nonneg[node.name] = False


def infer_types(gm: fx.GraphModule) -> dict[str, FixedType | None]:
    """Eval-mode type of every node's output (None before the input quantizer); sets ``Clip.input_type``."""
    types: dict[str, FixedType | None] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            types[node.name] = None
        elif node.op == "call_module":
            m = gm.get_submodule(node.target)
            ins = [types.get(a.name) for a in node.args if isinstance(a, fx.Node)]
            if isinstance(m, qnn.Clip) or getattr(m, "needs_input_type", False):
                m.input_type = ins[0] if ins else None
            if isinstance(m, qnn.QFXModule) and (getattr(m, "output_quantizer", None) is not None
                                                 or all(t is not None for t in ins)):
                types[node.name] = m.output_type(ins)
            else:
                types[node.name] = None
        elif node.op == "output":
            a = node.args[0]
            types[node.name] = types.get(a.name) if isinstance(a, fx.Node) else None
        else:
            types[node.name] = None
    return types


def _eval_types_hook(gm, args):
    if not gm.training:
        gm.__dict__["_static_types_set"] = True  # (before any is set: _clear_static_types then walks)
        types = infer_types(gm)
        # For this forward only: each QFX layer knows its inputs' types (the exactness guard then
        # needs no pass over the data; cleared by _clear_static_types, even on an exception).
        seen = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                m = gm.get_submodule(node.target)
                if isinstance(m, qnn.QFXModule):
                    ins = [types.get(a.name) if isinstance(a, fx.Node) else None for a in node.args]
                    # a module called from two nodes gets the types only where both calls agree
                    prev = seen.setdefault(id(m), ins)
                    if prev is not ins:
                        ins = [a if a == b else None for a, b in zip(prev, ins)] if len(prev) == len(ins) else []
                        seen[id(m)] = ins
                    m.static_input_types = ins


def _clear_static_types(gm, args, output):
    if not gm.__dict__.pop("_static_types_set", False):  # a training forward set none: nothing to walk
        return
    for m in gm.modules():
        if isinstance(m, qnn.QFXModule) and "static_input_types" in m.__dict__:
            del m.static_input_types


def ptq(model: nn.Module, config, example_input: torch.Tensor, data) -> nn.Module:
    """Post-training quantization: convert ``model`` with ``config``, calibrate on ``data``, return it in eval mode."""
    q = quantize_model(model, config, example_input)
    calibrate(q, data)
    return q.eval()


# ------------------------------------------------------------------ mixed rows (Mix and Match)
@dataclasses.dataclass(frozen=True)
class RowSpec:
    """A layer's current ``lut_rows`` and target (what :func:`assign_rows` uses by default), K of its K-hot rows."""
    lut_rows: float | int | str
    k: int
    target: object = None


@dataclasses.dataclass(frozen=True)
class RowAssignment:
    """One weighted layer after :func:`assign_rows`."""
    layer: str
    rows: int
    lut_rows: int     # K-hot rows (shift-add in LUTs); the other rows are plain fixed-point (DSP multiplies)
    k: int
    digits: str
    changed: int      # rows whose scheme this call changed
    error: float      # the layer's sum of squared weight quantization errors (value units), after the call

    @property
    def share(self) -> float:
        return self.lut_rows / self.rows


def _lut_rows_problem(v, where: str) -> str | None:
    """Why ``v`` is not a valid ``lut_rows`` (None when it is)."""
    import numbers
    ok = v is None or (isinstance(v, str) and v == "auto")
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        ok = v >= 0
    elif isinstance(v, numbers.Real) and not isinstance(v, bool):
        ok = 0.0 <= float(v) <= 1.0  # False for NaN
    if ok:
        return None
    return (f"{where}: lut_rows must be None (every row K-hot), a share in [0, 1] (float), a number of rows "
            f"(int >= 0) or 'auto', got {v!r}")


def _target_problem(target, where: str, needed: bool = True) -> str | None:
    from ..targets import Target, get_target
    if target is None:
        return (f"{where}: lut_rows='auto' chooses the share from the part's LUTs and DSPs: give target= "
                f"(e.g. 'ultra96')") if needed else None
    if isinstance(target, Target):
        return None
    try:
        get_target(str(target))
    except ValueError as e:
        return f"{where}: target: {e}"
    return None


def _attach_row_spec(m, opts: dict, target) -> None:
    """Record ``opts["lut_rows"]`` on a K-hot weighted layer (``m.qfx_rows``) for :func:`assign_rows`."""
    q = getattr(m, "weight_quantizer", None)
    if opts.get("lut_rows") is None or not isinstance(q, Quantizer) or not isinstance(q.k_hot, int):
        return
    m.qfx_rows = RowSpec(opts["lut_rows"], q.k_hot, target)


def _row_k(name: str, m) -> int:
    """K of the layer's K-hot rows: its RowSpec, its quantizer's int K, or the one nonzero K of its list."""
    spec = getattr(m, "qfx_rows", None)
    if spec is not None:
        return spec.k
    k = m.weight_quantizer.k_hot
    if isinstance(k, int):
        return k
    ks = sorted(set(int(v) for v in k) - {0})
    if len(ks) != 1:
        raise ValueError(f"layer {name!r}: its rows have K {ks or [0]}; assign_rows needs one K for the K-hot rows "
                         f"(build the layer with k_hot=K)")
    return ks[0]


def _target(target):
    from ..targets import Target, get_target
    return target if isinstance(target, Target) else get_target(str(target))


def _input_types(model: nn.Module) -> dict[str, FixedType | None]:
    """Eval-mode type of the first input of every module call (by qualified name), from :func:`infer_types`."""
    gm = model
    if not isinstance(model, fx.GraphModule):
        try:
            gm = fx.GraphModule(model, _Tracer().trace(model))
        except Exception as e:  # noqa: BLE001 - report any tracing failure the same way
            raise ValueError(f"lut_rows='auto' needs each layer's input type: torch.fx could not trace "
                             f"{type(model).__name__}: {e}") from e
    types = infer_types(gm)
    out: dict[str, FixedType | None] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.args and isinstance(node.args[0], fx.Node):
            out.setdefault(str(node.target), types.get(node.args[0].name))
    return out


def auto_lut_rows(layer: nn.Module, input_type: FixedType, target, k: int | None = None) -> int:
    """The number of K-hot rows of ``lut_rows="auto"`` for ``layer`` on ``target`` (Mix and Match).

    Every row of a layer has the same products, so a share ``n`` of ``N`` rows is busy for
    ``n * l / L`` and the DSP rows for ``(N - n) * d / D`` (in cycles per product of a row), where

    * ``L``, ``D``: the part's LUTs and DSPs (``targets.TARGETS``; equal budget shares cancel);
    * ``l``: LUTs per K-hot product per cycle, ``estimate.shiftadd_product_luts(K, acc)`` (one term
      unit of the shift-add table kernel) with ``acc`` the layer's exact accumulator width as the
      compiler types it (``ir.ops.intervals.linear_acc`` over the plain-grid weights);
    * ``d``: DSPs per product, ``estimate.dsp_per_product(a, b, part's DSP kind)`` with ``a`` the
      input type's and ``b`` the weight constant's signed width (``ir.passes.unify_consts``).

    ``n`` minimizes the busier side, ``max(n * l * D, (N - n) * d * L)`` compared exactly in
    integers; ties go to fewer K-hot rows (the plain rows have the smaller error).
    """
    from ..backend import estimate as E
    from ..ir.graph import Const
    from ..ir.ops.intervals import linear_acc
    from ..ir.passes.unify_consts import unify_const
    part = _target(target)
    q = layer.weight_quantizer
    k = _row_k(type(layer).__name__, layer) if k is None else int(k)
    with torch.no_grad():
        w64 = layer.weight.detach().double().cpu()
        ib = q.int_bits_tensor()
        wt = q.fixed_type()
        w = Const(to_raw(quantize(w64, wt, int_bits=ib, axis=0), wt, int_bits=ib, axis=0).numpy(), wt, ib.numpy())
        b = None
        if layer.bias is not None:
            bq = layer.bias_quantizer
            bib = bq.int_bits_tensor()
            bt = bq.fixed_type()
            braw = to_raw(layer.quantized_bias(), bt, int_bits=bib if bq.per_channel else None, axis=0).numpy()
            b = Const(braw, bt, bib.numpy() if bq.per_channel else None)
    w, b = unify_const(w), (unify_const(b) if b is not None else None)
    acc = linear_acc(w, b, input_type)
    lut_cost = E.shiftadd_product_luts(k, acc.width)
    dsp_cost = E.dsp_per_product(E.signed_bits(input_type.width, input_type.signed),
                                 E.signed_bits(w.type.width, w.type.signed), part.dsp_kind)
    rows = int(layer.weight.shape[0])
    return min(range(rows + 1), key=lambda n: max(n * lut_cost * part.dsp, (rows - n) * dsp_cost * part.lut))


def _row_count(v, rows: int) -> int:
    """K-hot rows of a numeric ``lut_rows`` (see :class:`QFXConfig`)."""
    import numbers
    from fractions import Fraction
    if isinstance(v, numbers.Integral):
        return min(int(v), rows)
    return int(math.floor(Fraction(float(v)) * rows + Fraction(1, 2)))


def assign_rows(model: nn.Module, share=None, target=None) -> list[RowAssignment]:
    """Give each row of every K-hot Linear/Conv layer its scheme: K-hot (LUTs) or plain fixed-point (DSPs).

    ``share``: ``lut_rows`` as in :class:`QFXConfig` (None: each layer's current ``lut_rows``, from the
    config or the last call that gave one; layers without one are left as they are); ``target``: for
    ``"auto"`` (None: the current one). The layer records both (``layer.qfx_rows``).
    For ``n`` K-hot rows a layer keeps the ``n`` rows whose K-hot projection adds the least squared
    error over the plain cast (:func:`qfx.khot.row_error_gap`, :func:`qfx.khot.choose_lut_rows`): the
    rows that fit the K-hot levels best; this minimizes the layer's total squared error for that ``n``.
    Call it during training as the weights move (the eval-mode output is recomputed exactly from
    the new per-row K). Returns one :class:`RowAssignment` per layer assigned.
    """
    problems = []
    if share is not None:
        problems += [p for p in [_lut_rows_problem(share, "assign_rows")] if p]
    if target is not None:
        problems += [p for p in [_target_problem(target, "assign_rows", needed=False)] if p]
    todo = []
    for name, m in model.named_modules():
        q = getattr(m, "weight_quantizer", None)
        if not isinstance(q, Quantizer) or q.digits is None:
            continue
        spec = getattr(m, "qfx_rows", None)
        s = share if share is not None else (spec.lut_rows if spec is not None else None)
        if s is None:
            continue
        t = target if target is not None else (spec.target if spec is not None else None)
        if isinstance(s, str) and t is None:
            problems.append(f"layer {name!r}: lut_rows='auto' chooses the share from the part's LUTs and DSPs: "
                            f"give target= (e.g. 'ultra96')")
        if q.channels != m.weight.shape[0] or q.axis != 0:
            problems.append(f"layer {name!r}: mixed rows need a per-output-channel weight quantizer "
                            f"(per_channel_weights=True)")
        todo.append((name, m, s, t))
    if problems:
        raise ValueError("; ".join(problems))
    types = _input_types(model) if any(isinstance(s, str) for _, _, s, _ in todo) else {}
    counts = []
    for name, m, s, t in todo:
        k = _row_k(name, m)
        rows = int(m.weight.shape[0])
        if isinstance(s, str):
            tx = types.get(name)
            if tx is None:
                raise ValueError(f"layer {name!r}: lut_rows='auto' needs the layer's input type; the model must "
                                 f"start with qfx.nn.QuantInput")
            n = auto_lut_rows(m, tx, t, k)
        else:
            n = _row_count(s, rows)
        if getattr(m, "groups", 1) != 1 and 0 < n < rows:
            problems.append(f"layer {name!r}: a grouped convolution (groups={m.groups}) would get {n} K-hot rows of "
                            f"{rows}, which the compiler does not build (mixed rows: dense and ungrouped conv only); "
                            f"give it lut_rows 0 or 1.0 (QFXConfig.overrides={{{name!r}: {{'lut_rows': 0}}}})")
        counts.append((name, m, s, t, k, n))
    if problems:
        raise ValueError("; ".join(problems))
    out = []
    for name, m, s, t, k, n in counts:
        q = m.weight_quantizer
        rows = int(m.weight.shape[0])
        mask = choose_lut_rows(row_error_gap(m.weight, q.base_type, k, q.digits, q.int_bits_tensor()), n)
        old = q.k_hot if isinstance(q.k_hot, list) else [int(q.k_hot)] * rows
        new = [k if b else 0 for b in mask.tolist()]
        q.k_hot = new
        m.qfx_rows = RowSpec(s, k, t)
        with torch.no_grad():
            w64 = m.weight.detach().double()
            err = float(((w64 - q.apply_eval(w64)) ** 2).sum())
        out.append(RowAssignment(name, rows, n, k, q.digits, sum(a != b for a, b in zip(old, new)), err))
    return out
