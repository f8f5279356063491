"""Weights whose levels are 0 or +-2^e (``--mode static --weights pot``): products as shifts.

    acc = sum((x - zx) * w)   ==>   acc = sum over e of ((sum of (x - zx) * s_e) << e)

``planes(w)`` splits such a weight into one sign plane per exponent (s_e in {-1, 0, 1}, where
|w| = 2^e), or returns None where some level is not a power of two. A kernel then adds and
subtracts inputs per plane and shifts each partial sum left by its exponent: no multiply by a
weight, as an integer target without a multiplier computes it; the result is the multiply's, bit
for bit (integers). ``describe`` is what ``export_params`` lists for code generation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["planes", "shifted", "describe"]

MAX_EXPONENT = 7  # int8 levels: 2^0 .. 2^7 (-128 is 2^7 with a sign)


def planes(w: np.ndarray) -> list[tuple[int, np.ndarray]] | None:
    """[(e, signs of the weights with |w| = 2^e)], or None unless every level is 0 or +-2^e."""
    w = np.asarray(w, np.int64)
    mag = np.abs(w)
    nonzero = mag[mag > 0]
    if nonzero.size == 0 or np.any(nonzero & (nonzero - 1)):
        return None
    out = []
    for e in range(MAX_EXPONENT + 1):
        hit = mag == (1 << e)
        if hit.any():
            out.append((e, np.where(hit, np.sign(w), 0).astype(np.int64)))
    return out


def shifted(acc_of: Callable[[np.ndarray], np.ndarray], weight_planes: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """``acc_of(signs)`` (the accumulation against a sign plane: additions only) per plane, each
    shifted left by its exponent, summed."""
    total = None
    for e, signs in weight_planes:
        part = np.left_shift(acc_of(signs), e)
        total = part if total is None else total + part
    return total


def describe(weight_planes: list[tuple[int, np.ndarray]]) -> dict[str, Any]:
    return {"weights": "pot", "exponents": [e for e, _ in weight_planes]}
