"""Streaming observers: one per tensor, updated batch by batch, holding O(bins) state.

* ``MinMaxObserver``: running min and max (and the mean and spread of each batch's extremes).
* ``ChannelRange``: running min and max of each channel along one axis (a Conv output's channels,
  for ``passes/channel_scales.py``), O(channels).
* ``HistogramObserver``: min/max plus a histogram of ``2 * num_bins`` bins over ``[-R, R]``
  (``num_bins`` per side, zero is a bin edge). It is single-pass: the bin width is always a power
  of two, the smallest that lets ``R`` cover every ``|x|`` seen so far. When a batch goes beyond
  ``R``, the width doubles ``k`` times and the old counts merge exactly, ``2**k`` adjacent bins
  into one (as TensorRT's and PyTorch's histogram calibrators widen theirs). The grid therefore
  depends only on the final ``max|x|``: any split of the data into batches, in any order, gives
  the very same histogram as one big batch. ``max|x|`` fills between half and all of ``[0, R]``.
  ``abs_histogram()`` folds it to ``num_bins`` bins of ``|x|`` over ``[0, R]``.

Non-finite values (an overflowing activation) are ignored with a debug log; empty tensors are
skipped. Batches are processed in chunks so the transient memory stays a few MB per tensor.
"""

from __future__ import annotations

import logging
import math

import numpy as np

__all__ = ["MinMaxObserver", "HistogramObserver", "ChannelRange", "channel_summary", "CHUNK"]

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # elements per chunk while histogramming


def _finite(array: np.ndarray, name: str) -> tuple[np.ndarray, float, float]:
    lo, hi = float(array.min()), float(array.max())
    if math.isfinite(lo) and math.isfinite(hi):
        return array, lo, hi
    array = array[np.isfinite(array)]
    logger.debug("tensor %r: ignoring %s non-finite values", name, "some")
    if array.size == 0:
        return array, math.nan, math.nan
    return array, float(array.min()), float(array.max())


class _Moments:
    """Running count, mean and sum of squared deviations (Welford): O(1) memory."""

    __slots__ = ("count", "mean", "m2")

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0


class MinMaxObserver:
    """Running min/max over every element of every batch, and the mean and spread of each
    batch's max and (negated) min (for ``methods.tail_range``)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.min = math.inf
        self.max = -math.inf
        self.num_batches = 0
        self.batch_max = _Moments()
        self.batch_neg_min = _Moments()

    @property
    def seen(self) -> bool:
        return self.num_batches > 0

    def update(self, array: np.ndarray) -> None:
        if array.size == 0:
            return
        array, lo, hi = _finite(array.reshape(-1), self.name)
        if array.size == 0:
            return
        self._update(array, lo, hi)
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.batch_max.add(hi)
        self.batch_neg_min.add(-lo)
        self.num_batches += 1

    def _update(self, array: np.ndarray, lo: float, hi: float) -> None:
        pass


class HistogramObserver(MinMaxObserver):
    """Min/max plus a signed histogram that widens by power-of-two merges (single pass)."""

    def __init__(self, name: str = "", num_bins: int = 2048) -> None:
        super().__init__(name)
        self.num_bins = int(num_bins)
        self.radius = 0.0  # R: the histogram covers [-R, R]; 0 until a non-zero value is seen
        self.counts = np.zeros(2 * self.num_bins, dtype=np.float64)
        self._pending_zeros = 0  # zeros seen while R is still 0

    @property
    def width(self) -> float:
        return self.radius / self.num_bins

    def _widen(self, amax: float) -> None:
        n = self.num_bins
        mantissa, exponent = math.frexp(amax / n)  # amax / n = mantissa * 2**exponent
        radius = n * math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent)
        if self.radius == 0.0:
            self.radius = radius
            self.counts[n] += self._pending_zeros
            self._pending_zeros = 0
            return
        shift = min(round(math.log2(radius / self.radius)), 62)
        index = np.arange(n) >> shift
        pos = np.bincount(index, weights=self.counts[n:], minlength=n)
        neg = np.bincount(index, weights=self.counts[:n][::-1], minlength=n)
        self.counts = np.concatenate([neg[::-1], pos])
        self.radius = radius
        logger.debug("tensor %r: histogram range widened to +-%g", self.name, self.radius)

    def _update(self, array: np.ndarray, lo: float, hi: float) -> None:
        amax = max(-lo, hi)
        if amax == 0.0 and self.radius == 0.0:
            self._pending_zeros += array.size
            return
        if amax > self.radius:
            self._widen(amax)
        n = self.num_bins
        if array.dtype not in (np.float32, np.float64):
            array = array.astype(np.float32)  # float16 cannot index 2 * num_bins bins exactly
        if array.dtype == np.float32 and n / self.radius > float(np.finfo(np.float32).max):
            array = array.astype(np.float64)  # |x| ~1e-37: n / R overflows float32 (inf -> bin -2**63)
        scale = np.float32(n / self.radius) if array.dtype == np.float32 else n / self.radius
        top = 2 * n - 1
        for start in range(0, array.size, CHUNK):
            chunk = array[start : start + CHUNK]
            pos = chunk * scale
            np.add(pos, n, out=pos)  # in [0, 2n] as R >= max|x|; truncation is floor here
            np.minimum(pos, top, out=pos)  # x == R goes to the last bin
            self.counts += np.bincount(pos.astype(np.intp), minlength=2 * n)

    # -- views used by the range methods -------------------------------------------------
    def signed_histogram(self) -> tuple[np.ndarray, float]:
        """``(counts, width)``: ``2 * num_bins`` bins, bin ``j`` covers ``[-R + j*w, -R + (j+1)*w)``."""
        counts = self.counts.copy()
        if self.radius == 0.0:
            counts[self.num_bins] += self._pending_zeros
        return counts, self.width

    def abs_histogram(self) -> tuple[np.ndarray, float]:
        """``(counts, width)``: ``num_bins`` bins of ``|x|``, bin ``j`` covers ``[j*w, (j+1)*w)``."""
        n = self.num_bins
        counts = self.counts[n:] + self.counts[:n][::-1]
        if self.radius == 0.0:
            counts = counts.copy()
            counts[0] += self._pending_zeros
        return counts, self.width


class ChannelRange:
    """Running per-channel min and max along ``axis`` (batches whose channel count differs from
    the first, or that hold non-finite values, are left out of it)."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def update(self, array: np.ndarray) -> None:
        if array.ndim < 2 or array.size == 0:
            return
        axis = self.axis % array.ndim
        others = tuple(i for i in range(array.ndim) if i != axis)
        lo, hi = array.min(axis=others).astype(np.float64), array.max(axis=others).astype(np.float64)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return
        if self.min is None:
            self.min, self.max = lo, hi
        elif self.min.shape == lo.shape:
            self.min, self.max = np.minimum(self.min, lo), np.maximum(self.max, hi)

    def summary(self) -> dict | None:
        return None if self.min is None else channel_summary(self.axis, self.min, self.max)


def channel_summary(axis: int, lo: np.ndarray, hi: np.ndarray) -> dict:
    """The ranges table's form of per-channel extremes (``TensorRange.summary["channels"]``)."""
    return {"axis": int(axis), "min": [float(x) for x in lo], "max": [float(x) for x in hi]}
