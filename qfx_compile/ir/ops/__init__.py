"""The IR op registry: ``REGISTRY[op_name] -> OpDef`` (one module per op, see ``base.OpDef``).

Adding an op: its module, one entry in ``_MODULES``, a kernel in hls_lib/ (docs/adding-an-op.md).
"""
from __future__ import annotations

from . import (add, argmax, avgpool, batchnorm, clip, concat, conv2d, dense, flatten, global_avgpool, leaky_relu,
               maxpool, merge_rows, multithreshold, pad, quant, relu, softmax, table, upsample)
from .base import OpDef, OpError

_MODULES = (quant, dense, conv2d, batchnorm, relu, clip, add, maxpool, avgpool, global_avgpool, flatten,
            multithreshold, table, softmax, leaky_relu, concat, pad, upsample, argmax, merge_rows)
REGISTRY: dict[str, OpDef] = {m.OP.name: m.OP for m in _MODULES}

#: Ops whose result is cast to ``attrs["out_type"]``.
CASTING_OPS = frozenset(k for k, v in REGISTRY.items() if v.casts)


def get(op: str) -> OpDef:
    if op not in REGISTRY:
        raise OpError(f"unknown IR op {op!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[op]


__all__ = ["REGISTRY", "CASTING_OPS", "OpDef", "OpError", "get"]
