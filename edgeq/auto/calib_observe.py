"""What ``calibrate_once`` keeps per tensor besides its histogram, and one feed through it all.

    observe_feed(session, inputs, observers, channels, out_channels, skipped, feed, label)

``Channels``: the per-channel sums along an axis and maxima along the last axis of a tensor that
feeds a Conv/Gemm/MatMul (bias correction, SmoothQuant), O(channels); made with ``batches=[]`` it
keeps each batch's figures, so that a cluster shard's merge adds the float sums in one process's
order (``calib_shards.py``). Used here and on a cluster's workers alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeq.calibrate.observers import ChannelRange, HistogramObserver

__all__ = ["Channels", "observe_feed"]


@dataclasses.dataclass
class Channels:
    """Running per-channel sum/count along ``axis`` and abs max along the last axis."""

    axis: int
    sums: np.ndarray | None = None
    count: int = 0
    absmax: np.ndarray | None = None
    batches: list | None = None  # each batch's (sums, count, maxima), kept to be merged (a cluster shard's)

    def update(self, array: np.ndarray) -> None:
        if array.ndim < 2:
            return
        axis = self.axis % array.ndim
        moved = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1).astype(np.float64)
        last = np.abs(array).reshape(-1, array.shape[-1]).max(axis=0).astype(np.float64)
        self._add(moved.sum(axis=1), moved.shape[1], last)

    def _add(self, sums: np.ndarray, count: int, last: np.ndarray) -> None:
        self.sums = sums if self.sums is None or self.sums.shape != sums.shape else self.sums + sums
        self.count += count
        self.absmax = last if self.absmax is None or self.absmax.shape != last.shape else np.maximum(self.absmax, last)
        if self.batches is not None:
            self.batches.append((sums, count, last))

    def merge(self, other: Channels) -> None:
        """Add ``other``'s batches in their order (the float sums as one process adds them)."""
        for sums, count, last in other.batches or ():
            self._add(sums, count, last)


def observe_feed(session: Any, inputs: list[str], observers: dict[str, HistogramObserver],
                 channels: dict[str, Channels], out_channels: dict[str, ChannelRange], skipped: set[str],
                 feed: Mapping[str, np.ndarray], label: str, outputs: list[np.ndarray] | None = None) -> None:
    """One feed through ``calibrate_once``'s observers (here, or on a cluster's worker);
    ``outputs``: the session's run of it, where it ran already."""
    if session is not None and outputs is None:
        outputs = session.run(feed, label)
    arrays = list(zip(session.names, outputs)) if session else []
    arrays += [(n, feed[n]) for n in inputs]
    for name, array in arrays:
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            skipped.add(name)
            continue
        observers[name].update(array)
        if name in channels:
            channels[name].update(array)
        if name in out_channels:
            out_channels[name].update(array)
