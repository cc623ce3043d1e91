"""The IR op registry: ``REGISTRY[op_name] -> OpDef`` (one module per op, see ``base.OpDef``)."""
from __future__ import annotations

from . import add, avgpool, batchnorm, clip, conv2d, dense, flatten, global_avgpool, maxpool, quant, relu
from . import multithreshold
from .base import OpDef, OpError

REGISTRY: dict[str, OpDef] = {m.OP.name: m.OP for m in (
    quant, dense, conv2d, batchnorm, relu, clip, add, maxpool, avgpool, global_avgpool, flatten, multithreshold)}

# table-based layers (sigmoid, tanh, hard*, leaky_relu; softmax): issue 8
from . import leaky_relu, softmax, table  # noqa: E402
REGISTRY.update({m.OP.name: m.OP for m in (table, softmax, leaky_relu)})

# structural layers (concat, zero padding, nearest upsampling): issue 8
from . import concat, pad, upsample  # noqa: E402
REGISTRY.update({m.OP.name: m.OP for m in (concat, pad, upsample)})

# a final decision (ArgMax, or a final Softmax with --softmax argmax): issue 10
from . import argmax  # noqa: E402
REGISTRY[argmax.OP.name] = argmax.OP

#: Ops whose result is cast to ``attrs["out_type"]``.
CASTING_OPS = frozenset(k for k, v in REGISTRY.items() if v.casts)


def get(op: str) -> OpDef:
    if op not in REGISTRY:
        raise OpError(f"unknown IR op {op!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[op]


__all__ = ["REGISTRY", "CASTING_OPS", "OpDef", "OpError", "get"]
