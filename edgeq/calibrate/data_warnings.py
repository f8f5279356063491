"""Calibration data that is valid but suspicious: a warning naming the input and the sample.

Checked as the feeds are validated, one feed at a time (nothing is kept but a few numbers per
input):

1. a value whose magnitude is above ``ABSURD`` (1e15): int8 steps computed from such a range are
   wider than any ordinary activation, so the model would be calibrated for that value only;
2. an input that is constant over every sample (all zeros being the common case): its range is
   one point, so calibration learns nothing about the values the model will really see.

NaN and Inf are errors (``validate_feed``), not warnings: no range can be computed from them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

__all__ = ["DataStats", "ABSURD"]

logger = logging.getLogger(__name__)

ABSURD = 1e15


class DataStats:
    """Running minimum and maximum per float input over the feeds seen, and the first sample
    holding an absurdly large value; ``report(description)`` logs the warnings."""

    def __init__(self) -> None:
        self._low: dict[str, float] = {}
        self._high: dict[str, float] = {}
        self._absurd: dict[str, tuple[str, float]] = {}
        self.samples = 0

    def add(self, feed: Mapping[str, np.ndarray], where: str) -> None:
        self.samples += 1
        for name, array in feed.items():
            if array.dtype.kind != "f" or array.size == 0:
                continue
            low, high = float(array.min()), float(array.max())
            self._low[name] = min(low, self._low.get(name, low))
            self._high[name] = max(high, self._high.get(name, high))
            peak = max(abs(low), abs(high))
            if peak > ABSURD and name not in self._absurd:
                self._absurd[name] = (where, peak)

    def warnings(self, description: str) -> list[str]:
        out = []
        for name, (where, peak) in self._absurd.items():
            out.append(f"input {name!r} holds {peak:.3g} in {where} (above {ABSURD:.0e}): calibration ranges "
                       "would be set by it; check the data's scaling")
        for name, low in self._low.items():
            if low == self._high[name]:
                what = "all zeros" if low == 0 else f"the constant {low:.6g}"
                out.append(f"input {name!r} is {what} in all {self.samples} sample(s) of {description}: "
                           "calibration learns nothing about its real values; give representative data")
        return out

    def report(self, description: str) -> list[str]:
        found = self.warnings(description)
        for warning in found:
            logger.warning(warning)
        return found
