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
  ``abs_histogram()`` folds it to ``num_bins`` bins of ``|x|`` over ``[0, R]``. Exactly the same,
  bit for bit: a value's bin is ``floor(x / w)`` taken before the offset is added (``x / w`` is
  exact, the width being a power of two), so merging ``2**k`` bins gives the bin a wider width
  gives; a value equal to ``R`` (the top edge, which the last bin holds) is counted apart until
  ``R`` grows.

Shards: ``merge(other)`` adds an observer of other batches (``calibrate/shards.py``: calibration
spread over a cluster) and gives what one observer fed both series of batches, in that order,
gives: min, max, histogram, and the batch-extreme moments, which replay the other's batch
extremes (kept by an observer made with ``record=True``) in order.

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

    def __init__(self, name: str = "", record: bool = False) -> None:
        self.name = name
        self.min = math.inf
        self.max = -math.inf
        self.num_batches = 0
        self.batch_max = _Moments()
        self.batch_neg_min = _Moments()
        self.extremes: list[tuple[float, float]] | None = [] if record else None  # (max, -min) per batch

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
        self._extremes(lo, hi)

    def _extremes(self, lo: float, hi: float) -> None:
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.batch_max.add(hi)
        self.batch_neg_min.add(-lo)
        self.num_batches += 1
        if self.extremes is not None:
            self.extremes.append((hi, -lo))

    def _update(self, array: np.ndarray, lo: float, hi: float) -> None:
        pass

    def merge(self, other: MinMaxObserver) -> None:
        """Add ``other``'s batches (observed after this one's; made with ``record=True``)."""
        if other.num_batches and other.extremes is None:
            raise ValueError(f"tensor {self.name!r}: merging needs an observer made with record=True")
        for hi, neg_lo in other.extremes or ():
            self._extremes(-neg_lo, hi)


class HistogramObserver(MinMaxObserver):
    """Min/max plus a signed histogram that widens by power-of-two merges (single pass)."""

    def __init__(self, name: str = "", num_bins: int = 2048, record: bool = False) -> None:
        super().__init__(name, record)
        self.num_bins = int(num_bins)
        self.radius = 0.0  # R: the histogram covers [-R, R]; 0 until a non-zero value is seen
        self.counts = np.zeros(2 * self.num_bins, dtype=np.float64)
        self._pending_zeros = 0  # zeros seen while R is still 0
        self._at_radius = 0  # values equal to R: the last bin's at this R, another bin's once R grows

    @property
    def width(self) -> float:
        return self.radius / self.num_bins

    def _widen(self, amax: float) -> None:
        n = self.num_bins
        mantissa, exponent = math.frexp(amax / n)  # amax / n = mantissa * 2**exponent
        self._widen_to(n * math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent))

    def _widen_to(self, radius: float) -> None:
        n = self.num_bins
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
        self.counts[n + (n >> shift)] += self._at_radius  # the old R: floor(R / new width) = n >> shift
        self._at_radius = 0
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
        for start in range(0, array.size, CHUNK):
            chunk = array[start : start + CHUNK]
            pos = chunk * scale  # exact: a power of two
            np.floor(pos, out=pos)  # before the offset, whose rounding could move a value across an edge
            np.add(pos, n, out=pos)  # in [0, 2n] as R >= max|x|
            counts = np.bincount(pos.astype(np.intp), minlength=2 * n + 1)
            self._at_radius += int(counts[2 * n])  # x == R (module docstring)
            self.counts += counts[: 2 * n]

    def merge(self, other: MinMaxObserver) -> None:
        """Add ``other``'s batches (module docstring: Shards): both histograms on the wider ``R``
        of the two, added."""
        if not isinstance(other, HistogramObserver) or other.num_bins != self.num_bins:
            raise ValueError(f"tensor {self.name!r}: only histograms of {self.num_bins} bins merge")
        radius = max(self.radius, other.radius)
        if radius == 0.0:
            self._pending_zeros += other._pending_zeros
        else:
            if self.radius < radius:
                self._widen_to(radius)
            theirs = HistogramObserver(self.name, self.num_bins)
            theirs.radius, theirs.counts = other.radius, other.counts.copy()
            theirs._at_radius, theirs._pending_zeros = other._at_radius, other._pending_zeros
            if theirs.radius < radius:
                theirs._widen_to(radius)
            self.counts += theirs.counts
            self._at_radius += theirs._at_radius
        super().merge(other)

    # -- views used by the range methods -------------------------------------------------
    def signed_histogram(self) -> tuple[np.ndarray, float]:
        """``(counts, width)``: ``2 * num_bins`` bins, bin ``j`` covers ``[-R + j*w, -R + (j+1)*w)``."""
        counts = self.counts.copy()
        counts[-1] += self._at_radius
        if self.radius == 0.0:
            counts[self.num_bins] += self._pending_zeros
        return counts, self.width

    def abs_histogram(self) -> tuple[np.ndarray, float]:
        """``(counts, width)``: ``num_bins`` bins of ``|x|``, bin ``j`` covers ``[j*w, (j+1)*w)``."""
        n = self.num_bins
        counts = self.counts[n:] + self.counts[:n][::-1]
        counts[-1] += self._at_radius
        if self.radius == 0.0:
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

    def merge(self, other: ChannelRange) -> None:
        """Add ``other``'s batches (observed after this one's)."""
        if other.min is None or other.max is None:
            return
        if self.min is None or self.max is None:
            self.min, self.max = other.min.copy(), other.max.copy()
        elif self.min.shape == other.min.shape:
            self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)

    def summary(self) -> dict | None:
        return None if self.min is None else channel_summary(self.axis, self.min, self.max)


def channel_summary(axis: int, lo: np.ndarray, hi: np.ndarray) -> dict:
    """The ranges table's form of per-channel extremes (``TensorRange.summary["channels"]``)."""
    return {"axis": int(axis), "min": [float(x) for x in lo], "max": [float(x) for x in hi]}
