"""Fixed-point decomposition and gemmlowp rounding, against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edgeq.reference.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)


def test_multiplier_range_and_exactness(rng):
    reals = np.exp(rng.uniform(np.log(1e-8), np.log(1e3), 5000))
    for real in reals:
        m, shift = quantize_multiplier(real)
        assert 2**30 <= m < 2**31
        assert -31 <= shift <= 30
        # 31-bit mantissa: relative error at most 2^-31
        assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0**-31


@pytest.mark.parametrize("real", [0.0, 1e-12])
def test_tiny_multipliers_become_zero(real):
    assert quantize_multiplier(real) == (0, 0)


def test_rounding_mantissa_up_to_one():
    m, shift = quantize_multiplier(1.0 - 2.0**-40)  # mantissa rounds to 2^31
    assert (m, shift) == (2**30, 1)


def test_negative_multiplier_rejected():
    with pytest.raises(ValueError):
        quantize_multiplier(-0.5)


def _ref_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return int(math.trunc(Fraction(ab + nudge, 1 << 31)))


def _ref_rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def test_srdhm_and_rdbpot_match_scalar_definitions(rng):
    a = rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True)
    b = rng.integers(0, INT32_MAX, 2000, endpoint=True)
    a[:2], b[:2] = INT32_MIN, [INT32_MIN, INT32_MAX]
    got = saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [_ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    e = rng.integers(0, 31, 2000)
    got = rounding_divide_by_pot(a, e)
    assert got.tolist() == [_ref_rdbpot(int(x), int(k)) for x, k in zip(a, e)]


def test_requantization_within_one_of_exact_rounding(rng):
    """x * M in fixed point vs round-half-away(x * M) exactly, for many random M and x."""
    worst = 0
    for real in np.exp(rng.uniform(np.log(1e-6), np.log(4.0), 300)):
        m, shift = quantize_multiplier(real)
        x = rng.integers(-(2**20), 2**20, 200)
        got = multiply_by_quantized_multiplier(x, m, shift)
        exact = np.array([
            int(math.floor(abs(Fraction(int(v)) * Fraction(real)) + Fraction(1, 2)))
            * (1 if v >= 0 else -1) for v in x
        ])
        worst = max(worst, int(np.abs(got - exact).max()))
    assert worst <= 1


def test_single_rounding_is_exact_round_half_up(rng):
    """TFLITE_SINGLE_ROUNDING: x * (m * 2^(shift-31)) rounded once, half up, exactly."""
    for real in np.exp(rng.uniform(np.log(1e-6), np.log(4.0), 200)):
        m, shift = quantize_multiplier(real)
        x = rng.integers(-(2**20), 2**20, 200)
        got = multiply_by_quantized_multiplier(x, m, shift, single_rounding=True)
        q = Fraction(m) * Fraction(2) ** (shift - 31)
        exact = [math.floor(Fraction(int(v)) * q + Fraction(1, 2)) for v in x]
        assert got.tolist() == exact
