"""Observing tensors while calibration data runs through a model: the session and the observers.

    target, fetch = observed_target(model, values)   # the model with ``values`` as outputs, in memory
    session = ObservedModel(model, values)           # or ObservedModel.of(target, names, fetch)
    observe_feeds(session, from_feed, observers, channels, skipped, feed, label)

Shared by ``collect_ranges`` (one process) and ``shards.observe_shard`` (a cluster worker), so
both observe a feed the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq.calibrate.observers import ChannelRange, HistogramObserver, MinMaxObserver
from edgeq.calibrate.subgraph_outputs import routed_copy
from edgeq.errors import DataError, UnsupportedError

__all__ = ["ObservedModel", "observed_target", "observe_feeds", "make_observer"]


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
    def of(cls, target: Any, names: Sequence[str], fetch: Sequence[str], threads: int = 0) -> ObservedModel:
        """``threads``: onnxruntime's intra-op threads (0: every core; a cluster worker owns one)."""
        observed = cls.__new__(cls)
        observed._open(target, list(names), list(fetch), threads)
        return observed

    def _open(self, target: Any, names: list[str], fetch: list[str], threads: int = 0) -> None:
        import onnxruntime as ort

        from edgeq.runtime.memory import inference_session

        self.names, self._fetch = names, fetch
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
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
                  channels: dict[str, ChannelRange], skipped: dict[str, str], feed: dict[str, Any], label: str) -> None:
    """One feed through the observers (the session's values, the inputs read from the feed)."""
    if session is not None:
        outputs = session.run(feed, label)
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
