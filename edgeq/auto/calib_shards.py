"""``calibrate_once`` on a cluster: shards of the data observed by the workers, merged in order.

The same scheme as ``calibrate/shards.py`` (the model with every observed value as an output, put
in the object store once; ``SHARD`` feeds per task; a wave of ``2 x width`` tasks in flight),
with auto's observers: a histogram per tensor, the per-channel sums and maxima of Conv/Gemm/
MatMul inputs (each batch's kept, so that the float sums are added in one process's order) and
Conv outputs' per-channel ranges. Merged in shard order, they equal one process's, bit for bit.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from edgeq.auto.calib_observe import Channels, observe_feed
from edgeq.calibrate.observe import ObservedModel
from edgeq.calibrate.observers import ChannelRange, HistogramObserver
from edgeq.calibrate.shards import in_waves, shipped_target
from edgeq.cluster import Executor, worker_cache

__all__ = ["observe_on_cluster", "observe_auto_shard", "AutoShardJob"]


@dataclasses.dataclass(frozen=True)
class AutoShardJob:
    key: str
    target: Any  # InMemoryModel with the observed values as outputs (None: graph inputs only)
    names: tuple[str, ...]
    fetch: tuple[str, ...]
    inputs: tuple[str, ...]
    num_bins: int
    channel_axes: dict[str, int]
    out_axes: dict[str, int]


def observe_auto_shard(job: AutoShardJob, feeds: Sequence[tuple[str, dict]]) -> tuple[Any, ...]:
    session = worker_cache(job.key, lambda: ObservedModel.of(job.target, job.names, job.fetch)) if job.names else None
    observers = {n: HistogramObserver(n, job.num_bins, record=True) for n in (*job.inputs, *job.names)}
    channels = {n: Channels(axis, batches=[]) for n, axis in job.channel_axes.items()}
    out_channels = {n: ChannelRange(axis) for n, axis in job.out_axes.items()}
    skipped: set[str] = set()
    for label, feed in feeds:
        observe_feed(session, list(job.inputs), observers, channels, out_channels, skipped, feed, label)
    return observers, channels, out_channels, skipped, len(feeds)


def observe_on_cluster(executor: Executor, model: Any, produced: Sequence[Any], inputs: Sequence[str],
                       observers: dict[str, HistogramObserver], channels: dict[str, Channels],
                       out_channels: dict[str, ChannelRange], skipped: set[str], source: Any, limit: int | None,
                       advance: Callable[[int], None]) -> int:
    """The feeds of ``source`` (the first ``limit``) observed on the workers and merged into the
    given observers (module docstring); the number of feeds."""
    target, fetch = shipped_target(model, produced)
    num_bins = next(iter(observers.values())).num_bins if observers else 2048
    job = AutoShardJob(uuid.uuid4().hex, target, tuple(v.name for v in produced), tuple(fetch), tuple(inputs),
                       num_bins, {n: c.axis for n, c in channels.items()}, {n: c.axis for n, c in out_channels.items()})
    shared = executor.share(job)

    def run(wave: list) -> int:
        done = executor.map(observe_auto_shard, wave, shared=shared, label="calibration shard",
                            on_result=lambda _, r: advance(r[-1]))
        for their_obs, their_channels, their_out, their_skipped, _ in done:  # shard order: one process's order
            skipped.update(their_skipped)
            for name, obs in their_obs.items():
                observers[name].merge(obs)
            for name, ch in their_channels.items():
                channels[name].merge(ch)
            for name, rng in their_out.items():
                out_channels[name].merge(rng)
        return sum(r[-1] for r in done)

    return in_waves(executor, source, limit, run)
