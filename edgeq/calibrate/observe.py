"""Observing tensors while calibration data runs through a model: the session and the observers.

    target, fetch = observed_target(model, values)   # the model with ``values`` as outputs, in memory
    session = ObservedModel(model, values)           # or ObservedModel.of(target, names, fetch)
    observe_feeds(session, from_feed, observers, channels, skipped, feed, label)

Shared by ``collect_ranges`` (one process) and ``shards.observe_shard`` (a cluster worker), so
both observe a feed the same way.

Every session here runs with ``ANALYSIS_THREADS`` (1) intra-op thread: onnxruntime's kernels split
their work by the thread count and the last bits of a result with it (a 16-core Xeon's activations
differed from a 1-thread run's, and so did entropy ranges), so a fixed count makes what one
process observes equal, bit for bit, to what a cluster's workers observe and to what a machine
with another number of cores observes. The cores are used by running feeds concurrently instead
(``run_in_order``: one session, several calls at once, results taken in feed order).
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from edgeq.calibrate.observers import ChannelRange, HistogramObserver, MinMaxObserver
from edgeq.calibrate.subgraph_outputs import routed_copy
from edgeq.errors import DataError, UnsupportedError

__all__ = ["ObservedModel", "observed_target", "observe_feeds", "make_observer", "run_in_order", "ANALYSIS_THREADS",
           "concurrency"]

ANALYSIS_THREADS = 1  # intra-op threads of every calibration and scoring session (module docstring)
T = TypeVar("T")
R = TypeVar("R")


def concurrency(limit: int = 4) -> int:
    """Feeds run at once: this machine's cores, at most ``limit`` (each holds its outputs)."""
    return max(1, min(os.cpu_count() or 1, limit))


def run_in_order(fn: Callable[[T], R], items: Iterable[T], width: int | None = None) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for each item in order, ``width`` calls at once on threads
    (onnxruntime releases the GIL while it runs); an error comes out at its item's turn."""
    width = concurrency() if width is None else width
    if width <= 1:
        for item in items:
            yield item, fn(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(width, thread_name_prefix="edgeq-feeds") as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= width:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    line = line.removeprefix("[ONNXRuntimeError] : ").strip()
    return re.sub(r"^\d+ : [A-Z_]+ : ", "", line)


def observed_target(model: Any, values: Sequence[Any]) -> tuple[Any, list[str]]:
    """(``model`` with ``values`` as outputs, in memory; the names to fetch, in the order of
    ``values``): values inside subgraphs through a routed clone (``subgraph_outputs``)."""
    from edgeq.runtime.memory import in_memory

    graph = model.graph
    if any(v.graph is not None and v.graph is not graph for v in values):
        routed, outputs = routed_copy(model, values)
        return in_memory(routed), [v.name for v in outputs]
    added = [v for v in values if not v.is_graph_output()]
    graph.outputs.extend(added)
    try:
        return in_memory(model), [v.name for v in values]  # weights by reference: no copy, external data from any folder
    finally:
        for v in added:
            graph.outputs.remove(v)


class ObservedModel:
    """An onnxruntime CPU session of ``model`` with ``values`` added as outputs (values inside
    subgraphs through a routed clone: ``subgraph_outputs``); ``run`` returns them in order.
    ``ObservedModel.of(target, names, fetch)``: the same from ``observed_target``'s result (a
    cluster worker's, ``calibrate/shards.py``)."""

    def __init__(self, model: Any, values: Sequence[Any]) -> None:
        target, fetch = observed_target(model, values)
        self._open(target, [v.name for v in values], fetch)

    @classmethod
    def of(cls, target: Any, names: Sequence[str], fetch: Sequence[str],
           threads: int = ANALYSIS_THREADS) -> ObservedModel:
        observed = cls.__new__(cls)
        observed._open(target, list(names), list(fetch), threads)
        return observed

    def _open(self, target: Any, names: list[str], fetch: list[str], threads: int = ANALYSIS_THREADS) -> None:
        import onnxruntime as ort

        from edgeq.runtime.memory import inference_session

        self.names, self._fetch = names, fetch
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 4  # errors reach the user once, as edgeq's one line
        try:
            self.session = inference_session(target, so, ["CPUExecutionProvider"])
        except Exception as e:
            raise UnsupportedError(
                f"onnxruntime cannot load the model for calibration: {_first_line(e)}"
            ) from None

    def run(self, feed: dict[str, np.ndarray], label: str) -> list[np.ndarray]:
        try:
            return self.session.run(self._fetch, feed)
        except Exception as e:
            raise DataError(f"running {label} through the model failed: {_first_line(e)}") from None

    def close(self) -> None:
        """Nothing to clean up (kept for callers that close what they open)."""


def make_observer(name: str, method: str, num_bins: int, record: bool = False) -> MinMaxObserver:
    """The observer a range method needs (``record``: keeping batch extremes, to be merged)."""
    if method == "minmax":
        return MinMaxObserver(name, record)
    return HistogramObserver(name, num_bins, record)


def observe_feeds(session: ObservedModel | None, from_feed: Sequence[str], observers: dict[str, MinMaxObserver],
                  channels: dict[str, ChannelRange], skipped: dict[str, str], feed: dict[str, Any], label: str,
                  outputs: list[np.ndarray] | None = None) -> None:
    """One feed through the observers (the session's values, the inputs read from the feed);
    ``outputs``: the session's run of it, where it ran already (``run_in_order``)."""
    if session is not None:
        outputs = session.run(feed, label) if outputs is None else outputs
        for name, array in zip(session.names, outputs):
            _observe(observers, skipped, name, array)
            if name in channels and name not in skipped:
                channels[name].update(array)
        del outputs
    for name in from_feed:
        _observe(observers, skipped, name, feed[name])


def _observe(observers: dict[str, MinMaxObserver], skipped: dict[str, str], name: str, array: Any) -> None:
    if name in skipped:
        return
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        kind = array.dtype.name if isinstance(array, np.ndarray) else type(array).__name__
        skipped[name] = f"not a float tensor ({kind})"
        return
    observers[name].update(array)
