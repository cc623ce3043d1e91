"""QFX: fixed-point training in PyTorch whose eval mode equals the generated hardware bit for bit."""
from .types import FixedType, ROUNDING_MODES, OVERFLOW_MODES, common_type
from .quantize import quantize, to_raw, from_raw, requantize_raw, max_exact_width
from .quantizer import Quantizer, quantizers, int_bits_parameters, other_parameters
from .khot import (khot_table, khot_values, khot_quantize, digits_of, digit_count, csd_weight, is_khot,
                   project_raw)
from . import khot, nn
from .calibrate import calibrate, ptq

__all__ = ["FixedType", "ROUNDING_MODES", "OVERFLOW_MODES", "common_type", "quantize", "to_raw", "from_raw",
           "requantize_raw", "max_exact_width", "Quantizer", "quantizers", "int_bits_parameters",
           "other_parameters", "khot", "khot_table", "khot_values", "khot_quantize", "digits_of", "digit_count",
           "csd_weight", "is_khot", "project_raw", "nn", "calibrate", "ptq"]

try:
    from .convert import quantize_model, QFXConfig, infer_types  # noqa: F401
    __all__ += ["quantize_model", "QFXConfig", "infer_types"]
except ImportError:  # pragma: no cover - convert.py not written yet
    pass

try:
    from .export import export_onnx  # noqa: F401  (written by the export engineer)
    __all__ += ["export_onnx"]
except ImportError:
    pass
