"""QFX: fixed-point training in PyTorch whose eval mode equals the generated hardware bit for bit."""
from .types import FixedType, ROUNDING_MODES, OVERFLOW_MODES, common_type
from .quantize import quantize, to_raw, from_raw, requantize_raw, max_exact_width

__all__ = ["FixedType", "ROUNDING_MODES", "OVERFLOW_MODES", "common_type", "quantize", "to_raw", "from_raw",
           "requantize_raw", "max_exact_width"]
