"""Bit-exact integer reference: a numpy interpreter for integer-only ONNX models.

``run(model, feeds)`` executes QLinear*/QGemm/integer ops with int32 accumulators and
gemmlowp/TFLite fixed-point requantization; ``export_params(model)`` lists each layer's
multipliers and shifts for MCU code generation.
"""

from edgeq.reference.agreement import agreement
from edgeq.reference.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from edgeq.reference.interpreter import Program, compile_model, export_params, run

__all__ = [
    "run",
    "export_params",
    "agreement",
    "compile_model",
    "Program",
    "quantize_multiplier",
    "multiply_by_quantized_multiplier",
    "requantize",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]
