"""One calibration pass that serves every range method and every repair.

    cal = calibrate_once(model, source, config)       # one run over the data
    cal.table("entropy")                              # RangesTable by one method
    cal.table_for({"x": "mse"}, default="minmax")     # a table mixing methods per tensor
    cal.outlier_ratio("x")                            # max|x| / p99.99(|x|)
    cal.channel_mean("x", axis=1)                     # per-channel mean (bias correction)
    cal.channel_absmax("x")                           # per-channel max|x| on the last axis (SmoothQuant)
    cal.range("conv_out", "minmax").summary["channels"]  # a Conv output's per-channel min/max

Every float activation of the main graph (graph inputs and node outputs) gets one streaming
``HistogramObserver``; the four range methods are then read from the same histogram, so choosing
a method per tensor costs no further pass over the data. Tensors that feed Conv/Gemm/MatMul also
keep per-channel sums and maxima, and Conv outputs their per-channel min/max (O(channels) each,
``passes/channel_scales.py``). Memory does not grow with the samples. On a cluster
(``cluster.using``), shards of the data are observed by the workers and merged in order
(``calib_shards.py``): the same histograms, sums and maxima, bit for bit.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeq import cluster
from edgeq.auto.calib_observe import Channels, observe_feed
from edgeq.calibrate.methods import choose_range, percentile_range
from edgeq.calibrate.observers import ChannelRange, HistogramObserver
from edgeq.calibrate.ranges import RangesTable, TensorRange
from edgeq.config import QuantConfig

__all__ = ["Calibration", "calibrate_once", "METHODS"]

logger = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy", "mse")  # not "tail": docs/calibration.md says why
_NON_FLOAT = {"INT64", "INT32", "INT8", "UINT8", "BOOL", "STRING", "INT16", "UINT16", "UINT32", "UINT64"}


class Calibration:
    """Histograms (and channel statistics) of every float activation, from one pass."""

    def __init__(self, observers: dict[str, HistogramObserver], channels: dict[str, Channels],
                 config: QuantConfig, num_samples: int, source: str,
                 out_channels: dict[str, ChannelRange] | None = None) -> None:
        self.observers = observers
        self.channels = channels
        self.out_channels = out_channels or {}
        self.config = config
        self.num_samples = num_samples
        self.source = source
        self._cache: dict[tuple[str, str], TensorRange] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.observers

    def range(self, name: str, method: str) -> TensorRange:
        key = (name, method)
        if key not in self._cache:
            obs, c = self.observers[name], self.config
            lo, hi, summary = choose_range(obs, method, percentile=c.percentile, activations=c.activations,
                                           symmetric=c.symmetric)
            summary = {"num_samples": self.num_samples, **summary}
            channels = self.out_channels[name].summary() if name in self.out_channels else None
            if channels is not None:
                summary["channels"] = channels
            absmax = self.channel_absmax(name)
            if absmax is not None:  # a per-token MatMul's outlier channels (passes/per_token.py (9))
                summary["channel_absmax"] = [float(x) for x in absmax]
            self._cache[key] = TensorRange(lo=lo, hi=hi, min=obs.min, max=obs.max, method=method, summary=summary)
        return self._cache[key]

    def table_for(self, methods: Mapping[str, str], default: str = "minmax") -> RangesTable:
        """Each tensor by its method in ``methods`` (else ``default``)."""
        ranges = {name: self.range(name, methods.get(name, default)) for name in self.observers}
        used = {methods.get(name, default) for name in self.observers} or {default}
        method = used.pop() if len(used) == 1 else "mixed"
        meta = {"activations": self.config.activations, "symmetric": self.config.symmetric,
                "source": self.source, "chosen_by": "edgeq.auto"}
        return RangesTable(ranges, method=method, num_samples=self.num_samples, meta=meta)

    def table(self, method: str) -> RangesTable:
        return self.table_for({}, default=method)

    def outlier_ratio(self, name: str) -> float:
        """``max|x| / p99.99(|x|)``: far above 1 when a few values dominate the range."""
        obs = self.observers[name]
        amax = max(-obs.min, obs.max)
        if amax <= 0:
            return 1.0
        _, _, summary = percentile_range(obs, 99.99, symmetric=True)
        t = float(summary["threshold"])
        return amax / t if t > 0 else float("inf")

    def channel_mean(self, name: str) -> np.ndarray | None:
        ch = self.channels.get(name)
        if ch is None or ch.sums is None or ch.count == 0:
            return None
        return (ch.sums / ch.count).astype(np.float32)

    def channel_absmax(self, name: str) -> np.ndarray | None:
        ch = self.channels.get(name)
        return None if ch is None or ch.absmax is None else ch.absmax.astype(np.float32)


def _observed_values(model: Any) -> tuple[list[Any], list[str], dict[str, int], dict[str, int]]:
    """(node outputs to add as outputs, graph input names, channel axis by value name, and by Conv
    output): the main
    graph's and those of If/Loop/Scan bodies that can be routed out (``subgraph_outputs``; a Loop
    stacks a body value over its iterations, so channel statistics are the main graph's only)."""
    from edgeq.calibrate.subgraph_outputs import unroutable

    graph = model.graph
    produced, inputs, channel_axis, out_axis = [], [], {}, {}
    for value in graph.inputs:
        if value.dtype is None or value.dtype.name not in _NON_FLOAT:
            inputs.append(value.name)
    for body in [graph, *graph.subgraphs()]:
        for node in body:
            for value in node.outputs:
                if (value.name and (value.dtype is None or value.dtype.name not in _NON_FLOAT)
                        and (body is graph or unroutable(value, model) is None)):
                    produced.append(value)
            if (body is graph and node.domain in ("", "ai.onnx") and node.op_type in ("Conv", "Gemm", "MatMul")
                    and node.inputs):
                x = node.inputs[0]
                if x is not None and x.const_value is None and x.name:
                    channel_axis[x.name] = 1 if node.op_type == "Conv" else -1
                if node.op_type == "Conv" and node.outputs[0].name:
                    out_axis[node.outputs[0].name] = 1
    return produced, inputs, channel_axis, out_axis


# samples from which calibration is spread over a cluster's workers: below, this process's
# concurrent feeds are faster than shards of 8 on single-threaded workers, their transfer and the
# merge (auto's 32 samples of mobilenet224 on a 16-core Xeon: 3.9 s here, 6.7-7.8 s spread)
MIN_SPREAD = 64


def calibrate_once(model: Any, source: Any, config: QuantConfig | None = None, *,
                   max_samples: int | None = None, progress: bool = True) -> Calibration:
    """Observe every float activation of ``model`` (onnx_ir.Model) over ``source`` once."""
    from edgeq.calibrate import load_data
    from edgeq.calibrate.collect import ObservedModel, progress_bar
    from edgeq.calibrate.observe import run_in_order

    config = config or QuantConfig()
    source = load_data(source, model)
    produced, inputs, channel_axis, out_axis = _observed_values(model)
    observers = {n: HistogramObserver(n, config.num_bins) for n in [*inputs, *(v.name for v in produced)]}
    channels = {n: Channels(axis) for n, axis in channel_axis.items() if n in observers}
    out_channels = {n: ChannelRange(axis) for n, axis in out_axis.items() if n in observers}
    limit = max_samples or config.max_samples
    try:
        total: int | None = len(source) if limit is None else min(len(source), limit)
    except TypeError:  # a module:function source of unknown length
        total = limit
    skipped: set[str] = set()
    count = 0
    executor = cluster.current()
    if executor.distributed and (total is None or total >= MIN_SPREAD):
        from edgeq.auto.calib_shards import observe_on_cluster

        with progress_bar(progress) as bar:
            task = bar.add_task(f"calibrating (all methods, {executor.width} workers)", total=total)
            count = observe_on_cluster(executor, model, produced, inputs, observers, channels, out_channels, skipped,
                                       source, limit, lambda n: bar.advance(task, n))
    else:
        session = ObservedModel(model, produced) if produced else None
        try:
            with progress_bar(progress) as bar:
                task = bar.add_task("calibrating (all methods)", total=total)
                items = itertools.islice(source.items(), limit)
                run = (lambda item: session.run(item[1], item[0])) if session is not None else (lambda item: None)
                for (label, feed), outputs in run_in_order(run, items, None if session is not None else 1):
                    observe_feed(session, inputs, observers, channels, out_channels, skipped, feed, label, outputs)
                    del outputs
                    count += 1
                    bar.advance(task)
        finally:
            if session is not None:
                session.close()
    observers = {n: o for n, o in observers.items() if o.seen and n not in skipped}
    logger.info("auto calibration: %d tensors on %d samples", len(observers), count)
    return Calibration(observers, channels, config, count, source.description, out_channels)
