"""Model files -> IR: ``load_model(path)`` reads qfx ONNX and QONNX; errors are :class:`ModelError`."""
from .errors import ModelError
from .onnx_reader import load_model, read_model_proto

__all__ = ["ModelError", "load_model", "read_model_proto"]
