"""The per-layer options file (``--config``, JSON): read, bounded and checked.

The file is untrusted input: it may be huge, deeply nested, hold 10,000-digit
integers, give ``"layers"`` as a list or a string. Every such case is a
:class:`ConfigError` (a user error, CLI exit 2) naming the file and what to fix.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import names

#: Layer options a config file may set, with their defaults.
LAYER_DEFAULTS = {"stream_depth": 2, "inline": False, "reuse": 0, "mul_impl": 0, "shiftadd": 0, "dsp_pack": 0}
#: Allowed ranges of the integer options (reuse 0 = chosen by the compiler; mul_impl 0 auto, 1 DSP, 2 LUTs).
OPTION_RANGES = {"stream_depth": (1, 1 << 20), "reuse": (0, 1 << 30), "mul_impl": (0, 2), "shiftadd": (0, 1),
                 "dsp_pack": (0, 1)}
#: A config file is small: refuse bigger ones before reading them.
MAX_CONFIG_BYTES = 4 << 20
#: Objects/arrays nested deeper than this are refused before json parses them (no RecursionError).
MAX_DEPTH = 16
#: Integers in the file have at most this many digits (Python's int() of 100,000 digits is slow and refused).
MAX_INT_DIGITS = 20

EXAMPLE = '{"default": {"stream_depth": 2}, "layers": {"<layer name>": {"reuse": 64}}}'


class ConfigError(ValueError):
    """A bad ``--config`` file (a user error: exit 2)."""


def _nesting(text: str) -> int:
    """Deepest nesting of ``{``/``[`` outside strings (a linear scan, before json.loads recurses)."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}]":
            depth -= 1
    return deepest


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(s)} digits")
    return int(s)


def _reject_constant(s: str):
    raise ValueError(f"{s} is not JSON")


def read_config(path: str | Path) -> dict:
    p = Path(path)
    shown = names.printable(str(p))
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {shown} is {size:,} bytes; a layer options file is at most "
                              f"{MAX_CONFIG_BYTES:,} bytes, e.g. {EXAMPLE}")
        with open(p, "rb") as f:
            blob = f.read(MAX_CONFIG_BYTES + 1)
        text = blob.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {shown} does not exist: give a JSON file such as {EXAMPLE}")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {shown} is not UTF-8 text (byte {e.start}); expected JSON such as {EXAMPLE}")
    except OSError as e:
        raise ConfigError(f"cannot read config file {shown}: {names.printable(e.strerror or str(e))}")
    if _nesting(text) > MAX_DEPTH:
        raise ConfigError(f"config file {shown} nests objects or arrays deeper than {MAX_DEPTH} levels; "
                          f"expected {EXAMPLE}")
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"config file {shown} is not valid JSON ({names.printable(str(e), 120)}); expected "
                          f"{EXAMPLE}")


def load_layer_config(path: str | Path | None, graph) -> tuple[dict, dict[str, dict]]:
    """Read the per-layer options file (JSON): ``{"default": {...}, "layers": {"<onnx name>": {...}}}``."""
    default = dict(LAYER_DEFAULTS)
    per: dict[str, dict] = {}
    if path is None:
        return default, per
    p = names.printable(str(path))
    data = read_config(path)
    if not isinstance(data, dict) or set(data) - {"default", "layers"}:
        extra = sorted(set(data) - {"default", "layers"}) if isinstance(data, dict) else []
        raise ConfigError(f"config file {p}: the top level must be an object with keys 'default' and/or 'layers'"
                          + (f" (unknown: {', '.join(names.printable(k, 30) for k in extra[:5])})" if extra else "")
                          + f", e.g. {EXAMPLE}")

    def check(where: str, opts: Any) -> dict:
        if not isinstance(opts, dict):
            raise ConfigError(f"config file {p}: {where} must be an object such as {{\"reuse\": 64}}, "
                              f"got {type(opts).__name__}")
        out = {}
        for k, v in opts.items():
            if k not in LAYER_DEFAULTS:
                raise ConfigError(f"config file {p}: unknown option {names.printable(k, 40)!r} in {where}; "
                                  f"known options: {', '.join(sorted(LAYER_DEFAULTS))}")
            if k == "inline":
                if not isinstance(v, bool):
                    raise ConfigError(f"config file {p}: {where}.inline must be true or false")
            elif isinstance(v, bool) or not isinstance(v, int) or not \
                    OPTION_RANGES[k][0] <= v <= OPTION_RANGES[k][1]:
                lo, hi = OPTION_RANGES[k]
                raise ConfigError(f"config file {p}: {where}.{k} must be an integer in {lo}..{hi}, got "
                                  f"{names.printable(repr(v), 40)}"
                                  + (" (0 auto, 1 DSP, 2 LUTs)" if k == "mul_impl" else "")
                                  + (" (0 = chosen by the compiler)" if k == "reuse" else "")
                                  + (" (0 auto, 1 table kernel)" if k == "shiftadd" else "")
                                  + (" (0 off, 1 two products per DSP where the widths allow it)"
                                     if k == "dsp_pack" else ""))
            out[k] = v
        return out

    default.update(check("default", data.get("default", {})))
    layers = data.get("layers")
    if layers is None:
        layers = {}
    if not isinstance(layers, dict):
        raise ConfigError(f"config file {p}: 'layers' must be an object mapping layer names to options, got "
                          f"{type(layers).__name__}, e.g. {EXAMPLE}")
    layer_names = {n.name for n in graph.nodes}
    unknown = sorted(k for k in layers if k not in layer_names)
    if unknown:
        raise ConfigError(f"config file {p}: no layer named "
                          f"{', '.join(repr(names.printable(u, 40)) for u in unknown[:5])}"
                          + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
                          + f" in the model (layers: "
                          f"{', '.join(names.printable(n.name, 30) for n in graph.nodes[:12])})")
    for name, opts in sorted(layers.items()):
        per[name] = check(f"layers[{names.printable(name, 30)!r}]", opts)
    return default, per
