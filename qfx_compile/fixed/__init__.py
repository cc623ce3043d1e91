"""The torch-free fixed-point core: types and their rules, the exact cast, K-hot digits, window geometry.

Everything here is numpy and Python ints. The training library (``qfx``), the
IR, the frontend and the backend all take these rules from here, so each rule
has one home.
"""
from .cast import float_to_raw, requantize_raw
from .digits import DIGIT_FLAVOURS, digit_count, digits_of, khot_table, project_raw
from .types import (MAX_WIDTH, OVERFLOW_MODES, ROUNDING_MODES, FixedType, common_type, raw_range,
                    reciprocal_raw, reciprocal_type, sat_sym_raw_min)

__all__ = ["FixedType", "ROUNDING_MODES", "OVERFLOW_MODES", "MAX_WIDTH", "common_type", "raw_range",
           "sat_sym_raw_min", "reciprocal_type", "reciprocal_raw", "requantize_raw", "float_to_raw",
           "DIGIT_FLAVOURS", "digit_count", "digits_of", "khot_table", "project_raw"]
