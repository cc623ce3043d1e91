"""QFX: fixed-point training in PyTorch whose eval mode equals the generated hardware bit for bit."""
from ..fixed.types import FixedType, ROUNDING_MODES, OVERFLOW_MODES, common_type
from .quantize import quantize, to_raw, from_raw, requantize_raw, max_exact_width
from .quantizer import Quantizer, quantizers, int_bits_parameters, other_parameters
from .khot import (khot_table, khot_values, khot_quantize, digits_of, digit_count, csd_weight, is_khot,
                   project_raw)
from . import khot, nn
from .calibrate import calibrate
from .heap import keep_freed_memory

__all__ = ["FixedType", "ROUNDING_MODES", "OVERFLOW_MODES", "common_type", "quantize", "to_raw", "from_raw",
           "requantize_raw", "max_exact_width", "Quantizer", "quantizers", "int_bits_parameters",
           "other_parameters", "keep_freed_memory", "khot", "khot_table", "khot_values", "khot_quantize",
           "digits_of", "digit_count", "csd_weight", "is_khot", "project_raw", "nn", "calibrate", "ptq"]

from .convert import quantize_model, QFXConfig, infer_types, ptq, assign_rows, RowAssignment  # noqa: E402
from .export import export_onnx  # noqa: E402
from .cost import hardware_cost, HardwareCost  # noqa: E402
from .recipe import seed_everything, train_recipe, reestimate_bn, accuracy  # noqa: E402

__all__ += ["quantize_model", "QFXConfig", "infer_types", "ptq", "assign_rows", "RowAssignment", "export_onnx",
            "seed_everything", "train_recipe", "reestimate_bn", "accuracy", "hardware_cost", "HardwareCost"]
