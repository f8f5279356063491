"""Fixed-point requantization as in gemmlowp and TFLite, on numpy int64 arrays.

A real multiplier ``M > 0`` becomes an int32 ``multiplier`` in ``[2^30, 2^31)`` and a ``shift``
with ``M ~= multiplier * 2^(shift - 31)``. Applying it to an int32 accumulator ``x`` is::

    x' = SaturatingRoundingDoublingHighMul(x << max(shift, 0), multiplier)
    y  = RoundingDivideByPOT(x', max(-shift, 0))

Nothing here touches a float once the multiplier is decomposed (``quantize_multiplier`` is the
only function that reads one, ahead of time).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "requantize",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``real -> (multiplier, shift)`` with ``multiplier`` in ``[2^30, 2^31)`` (or 0 for 0).

    ``shift`` is a left shift when positive and a right shift when negative, as TFLite's
    ``QuantizeMultiplier``; multipliers too small for a 31-bit right shift become 0.
    """
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"requantization multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)  # real = mantissa * 2^shift, mantissa in [0.5, 1)
    multiplier = round(mantissa * (1 << 31))
    if multiplier == 1 << 31:
        multiplier //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"requantization multiplier {real} is too large for int32 fixed point")
    return int(multiplier), int(shift)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values held in int64."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    # C integer division by 2^31 truncates toward zero.
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: ``x / 2^exponent`` rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int,
    single_rounding: bool = False,
) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier; ``multiplier``/``shift`` broadcast against x.

    By default the gemmlowp double rounding (SRDHM, then RoundingDivideByPOT). With
    ``single_rounding`` TFLite's ``TFLITE_SINGLE_ROUNDING`` form (also CMSIS-NN's option):
    ``(x * multiplier + 2^(30 - shift)) >> (31 - shift)``, one rounding, half up.
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if single_rounding:
        x = np.clip(x, INT32_MIN, INT32_MAX)
        total = 31 - shift
        return (x * np.asarray(multiplier, np.int64) + (np.int64(1) << (total - 1))) >> total
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.clip(x << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray | int,
    shift: np.ndarray | int,
    zero_point: int,
    dtype: np.dtype,
    single_rounding: bool = False,
) -> np.ndarray:
    """int32 accumulator -> quantized ``dtype``: scale, add the zero point, saturate."""
    info = np.iinfo(dtype)
    acc = np.clip(np.asarray(acc, dtype=np.int64), INT32_MIN, INT32_MAX)
    y = multiply_by_quantized_multiplier(acc, multiplier, shift, single_rounding)
    y = y + np.int64(zero_point)
    return np.clip(y, info.min, info.max).astype(dtype)
