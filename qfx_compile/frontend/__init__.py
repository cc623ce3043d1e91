"""Model files -> IR: ``load_model(path, input_type=None)`` reads qfx ONNX and QONNX; errors are :class:`ModelError`.

Importing this package registers the frontend's importers (casts, arithmetic, structural ops) in the
one table ``ir.ops.onnx_table.IMPORTERS``, beside those the IR op modules register.
"""
from . import arith, casts, structural  # noqa: F401  (register their ONNX importers)
from .errors import ModelError
from .onnx_reader import load_model, read_model_proto

__all__ = ["ModelError", "load_model", "read_model_proto"]
