"""Calibration spread over a cluster: shards of the feeds observed on workers, merged in order.

    num_samples = observe_on_cluster(executor, model, run_values, from_feed, observers, channels,
                                     skipped, source, limit, config, advance)

1. The model with the observed values as outputs (``observe.observed_target``) goes to the
   object store once; each worker opens one session on it for every shard it takes
   (``cluster.worker_cache``).
2. The feeds are read here, in order, ``SHARD`` at a time; a wave of ``2 x width`` shards is in
   flight at once, so memory here holds a wave, not the data set.
3. Each shard comes back as observers made with ``record=True`` (histograms, min/max, each
   batch's extremes), per-channel ranges and the tensors it found unusable; they are merged in
   shard order (``observers.merge``), which gives the very ranges table one process observing
   every feed in order gives, byte for byte (``tests/test_cluster.py``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from edgeq.calibrate.observe import ObservedModel, make_observer, observe_feeds, observed_target
from edgeq.calibrate.observers import ChannelRange, MinMaxObserver
from edgeq.cluster import Executor, worker_cache

__all__ = ["observe_on_cluster", "observe_shard", "feed_shards", "in_waves", "shipped_target", "ShardJob", "ShardResult",
           "SHARD"]

SHARD = 8  # feeds per task


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """What every shard of one calibration needs (put in the object store once)."""

    key: str
    target: Any  # InMemoryModel: the model with the observed values as outputs (None: inputs only)
    names: tuple[str, ...]  # observed values, in the order the session returns them
    fetch: tuple[str, ...]
    from_feed: tuple[str, ...]
    method: str
    num_bins: int
    channel_axes: dict[str, int]


@dataclasses.dataclass
class ShardResult:
    observers: dict[str, MinMaxObserver]
    channels: dict[str, ChannelRange]
    skipped: dict[str, str]
    count: int


def observe_shard(job: ShardJob, feeds: Sequence[tuple[str, dict]]) -> ShardResult:
    """A worker's task: ``feeds`` through the observers (as ``collect_ranges`` does here)."""
    session = worker_cache(job.key, lambda: ObservedModel.of(job.target, job.names, job.fetch)) if job.names else None
    observers = {n: make_observer(n, job.method, job.num_bins, record=True) for n in (*job.names, *job.from_feed)}
    channels = {n: ChannelRange(axis) for n, axis in job.channel_axes.items()}
    skipped: dict[str, str] = {}
    for label, feed in feeds:
        observe_feeds(session, job.from_feed, observers, channels, skipped, feed, label)
    return ShardResult(observers, channels, skipped, len(feeds))


def feed_shards(source: Any, limit: int | None, size: int) -> Iterator[list[tuple[str, dict]]]:
    shard: list[tuple[str, dict]] = []
    taken = 0
    for label, feed in source.items():
        if limit is not None and taken >= limit:
            break
        shard.append((label, dict(feed)))
        taken += 1
        if len(shard) == size:
            yield shard
            shard = []
    if shard:
        yield shard


def observe_on_cluster(executor: Executor, model: Any, run_values: Sequence[Any], from_feed: Sequence[str],
                       observers: dict[str, MinMaxObserver], channels: dict[str, ChannelRange], skipped: dict[str, str],
                       source: Any, limit: int | None, config: Any, advance: Callable[[int], None]) -> int:
    """The feeds of ``source`` (the first ``limit``) observed on ``executor``'s workers and merged
    into ``observers``, ``channels`` and ``skipped`` (module docstring); the number of feeds."""
    target, fetch = shipped_target(model, run_values)
    job = ShardJob(uuid.uuid4().hex, target, tuple(v.name for v in run_values), tuple(fetch), tuple(from_feed),
                   config.method, config.num_bins, {n: c.axis for n, c in channels.items()})
    shared = executor.share(job)

    def run(wave: list[list[tuple[str, dict]]]) -> int:
        done = executor.map(observe_shard, wave, shared=shared, label="calibration shard",
                            on_result=lambda _, r: advance(r.count))
        for result in done:  # in shard order: the order one process would have observed them in
            for name, reason in result.skipped.items():
                skipped.setdefault(name, reason)
            for name, obs in result.observers.items():
                if name in observers and name not in skipped:
                    observers[name].merge(obs)
            for name, rng in result.channels.items():
                channels[name].merge(rng)
        return sum(r.count for r in done)

    return in_waves(executor, source, limit, run)


def shipped_target(model: Any, values: Sequence[Any]) -> tuple[Any, list[str]]:
    """``observed_target`` as it travels to workers (None: no values to run the model for): the
    weights in it, not the file's path, which a worker may not see."""
    if not values:
        return None, []
    target, fetch = observed_target(model, values)
    return dataclasses.replace(target, path=None), fetch


def in_waves(executor: Executor, source: Any, limit: int | None, run: Callable[[list], int]) -> int:
    """``run`` over the shards of ``source`` (the first ``limit`` feeds), ``2 x width`` shards at a
    time (module docstring (2)); the sum of what it returns."""
    count = 0
    wave: list[list[tuple[str, dict]]] = []
    for shard in feed_shards(source, limit, SHARD):
        wave.append(shard)
        if len(wave) == 2 * executor.width:
            count += run(wave)
            wave = []
    if wave:
        count += run(wave)
    return count
