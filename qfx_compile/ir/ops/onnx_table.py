"""The one table of ONNX importers, keyed by ``(domain, op_type)``.

An importer is a function ``(r, out) -> None``: ``r`` is the frontend's reader
(``qfx_compile.frontend.onnx_reader._Reader``: the node being read, its inputs,
attributes, ``r.err(...)``), ``out`` the name of the node's first output; it
sets ``r.vals[out]``. Importers are registered with :func:`onnx_import` next to
the IR op they produce (a ``# ---- ONNX import`` section of ``ir/ops/<op>.py``)
or, for structural ops that produce no IR node, in ``frontend/``. The frontend
dispatches only through :data:`IMPORTERS`: an op is supported exactly when it
is in this table. This module imports nothing from the frontend (nor onnx).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

#: ``onnx.AttributeProto`` type codes (kept here so that ir/ops need not import onnx)
FLOAT, INT, STRING, TENSOR, FLOATS, INTS = 1, 2, 3, 4, 6, 7

#: the standard domain's two spellings, and the domains QONNX custom ops are exported under
STD = ("", "ai.onnx")
QONNX = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")


@dataclasses.dataclass(frozen=True)
class Importer:
    fn: Callable
    max_inputs: int | None  # None: any number
    outputs: int  # outputs that may be named (the rest must be empty)
    label: str  # how the op is listed among the supported ones


IMPORTERS: dict[tuple[str, str], Importer] = {}


def onnx_import(*op_types: str, domain=STD, max_inputs: int | None = None, outputs: int = 1,
                label: str | None = None):
    """Register the decorated ``fn(r, out)`` for every ``op_type`` in every domain of ``domain``."""
    domains = (domain,) if isinstance(domain, str) else tuple(domain)

    def deco(fn):
        for op in op_types:
            lab = label or (op if domains[0] in STD else f"{domains[0].split('.')[0]}.{op}")
            for d in domains:
                if (d, op) in IMPORTERS and IMPORTERS[(d, op)].fn is not fn:
                    raise RuntimeError(f"two ONNX importers for {(d, op)}")
                IMPORTERS[(d, op)] = Importer(fn, max_inputs, outputs, lab)
        return fn

    return deco


def supported() -> list[str]:
    """The supported ops, for messages (one entry per label)."""
    return sorted({i.label for i in IMPORTERS.values()})
