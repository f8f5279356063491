"""``collect_ranges``: run calibration data through the model once and keep streaming ranges.

    source = load_data("calib/", model)
    table = collect_ranges(model, ["conv1_out", "relu2_out"], source, QuantConfig(method="entropy"))

The values to observe become extra graph outputs of the model for the time it takes to build one
onnxruntime CPU session (graph optimizations off so every name survives); the caller's model is
left as it was. Each batch updates one observer per tensor and is dropped: memory does not grow
with the number of samples. Histogram methods use a single pass (see ``observers``). The session
runs at one thread, a few feeds at once, observed in order (``observe.run_in_order``); on a
cluster (``cluster.using``) shards of the feeds are observed by its workers and merged in order
(``shards.py``): the same table, byte for byte.

Graph inputs are observed from the feeds, initializers from their values. Values inside If/Loop/
Scan bodies are routed out to graph outputs of a clone of the model (``subgraph_outputs``): an If
branch's values in the samples that take it, a Loop/Scan body's values of every iteration.
Non-float tensors, values in other ops' subgraphs and tensors that stayed empty (a branch no sample
took) are left out of the table; the reason for each is logged and kept in ``table.meta["skipped"]``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import Any

from edgeq import cluster
from edgeq.calibrate.data import FeedSource, load_data
from edgeq.calibrate.methods import choose_range
from edgeq.calibrate.observe import ObservedModel, make_observer, observe_feeds, run_in_order
from edgeq.calibrate.observers import ChannelRange, MinMaxObserver
from edgeq.calibrate.ranges import RangesTable, TensorRange
from edgeq.calibrate.subgraph_outputs import unroutable
from edgeq.config import QuantConfig
from edgeq.errors import UsageError
from edgeq.io import as_model

__all__ = ["collect_ranges", "ObservedModel", "progress_bar"]  # ObservedModel: from observe.py

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = {"FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16"}


def progress_bar(enabled: bool) -> Any:
    """A rich progress bar on stderr (hidden when ``enabled`` is false), gone when done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}", style="progress.description", markup=False),  # names are no markup
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def collect_ranges(
    model: Any,
    names: Iterable[str],
    source: Any,
    config: QuantConfig | None = None,
    *,
    progress: bool = True,
    channel_axes: dict[str, int] | None = None,
) -> RangesTable:
    """One ``TensorRange`` per observable float tensor in ``names`` (see the module docstring).

    ``channel_axes``: tensors (main graph) whose per-channel min/max along that axis are kept too,
    in the range's ``summary["channels"]`` (``passes/channel_scales.py`` reads them).

    ``model``: onnx_ir.Model | onnx.ModelProto | path. ``source``: a FeedSource or anything
    ``load_data`` takes. ``config`` supplies method, percentile, num_bins, max_samples,
    activations and symmetric.
    """
    config = config or QuantConfig()
    model, _ = as_model(model, copy=False)
    if not isinstance(source, FeedSource):
        source = load_data(source, model)
    graph = model.graph
    names = list(dict.fromkeys(names))

    produced = {v.name: v for node in graph for v in node.outputs if v.name}
    inputs = {v.name: v for v in graph.inputs}
    initializers = graph.initializers
    inner: dict[str, list[Any]] = {}  # If/Loop/Scan bodies, routed out (subgraph_outputs); sibling
    for sub in graph.subgraphs():  # branches may reuse a name: one range over all of them
        for v in [*sub.inputs, *(out for node in sub for out in node.outputs)]:
            if v.name and v.name not in produced:
                inner.setdefault(v.name, []).append(v)
    produced.update((name, vs[0]) for name, vs in inner.items())

    skipped: dict[str, str] = {}
    unroutable_in: dict[Any, str | None] = {}
    run_values, from_feed, constants = [], [], []
    for name in names:
        value = next((m[name] for m in (initializers, inputs, produced) if name in m), None)
        if value is None:
            raise UsageError(f"value {name!r} is not in the model: it cannot be calibrated")
        if value.dtype is not None and value.dtype.name not in _FLOAT_DTYPES:
            skipped[name] = f"not a float tensor ({value.dtype.name.lower()})"
            continue
        if name in inner and value is inner[name][0]:
            for v in inner[name]:
                if v.graph not in unroutable_in:
                    unroutable_in[v.graph] = unroutable(v, model)
            reason = next((unroutable_in[v.graph] for v in inner[name] if unroutable_in[v.graph]), None)
            if reason:
                skipped[name] = reason
            else:
                run_values.extend(inner[name])
            continue
        if name in initializers:
            constants.append(value)
        elif name in inputs:
            from_feed.append(name)
        else:
            run_values.append(value)

    observers = {name: make_observer(name, config.method, config.num_bins) for name in names if name not in skipped}
    inner_names = set(inner)
    channels = {name: ChannelRange(axis) for name, axis in (channel_axes or {}).items()
                if name in observers and name not in inner_names}
    for value in constants:
        if value.const_value is not None:
            observers[value.name].update(value.const_value.numpy())

    limit = config.max_samples
    try:
        total = len(source)
    except TypeError:
        total = None
    if limit is not None:
        total = limit if total is None else min(total, limit)
    executor = cluster.current()
    if executor.distributed and (run_values or from_feed):
        from edgeq.calibrate.shards import observe_on_cluster

        with progress_bar(progress) as bar:
            task = bar.add_task(f"calibrating ({config.method}, {executor.width} workers)", total=total)
            num_samples = observe_on_cluster(executor, model, run_values, from_feed, observers, channels, skipped,
                                             source, limit, config, lambda n: bar.advance(task, n))
    else:
        num_samples = _observe_here(model, run_values, from_feed, observers, channels, skipped, source, limit,
                                    config, total, progress)
    return _table(observers, channels, skipped, num_samples, config, source)


def _observe_here(model: Any, run_values: list[Any], from_feed: list[str], observers: dict[str, MinMaxObserver],
                  channels: dict[str, ChannelRange], skipped: dict[str, str], source: Any, limit: int | None,
                  config: QuantConfig, total: int | None, progress: bool) -> int:
    session = ObservedModel(model, run_values) if run_values else None
    num_samples = 0
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"calibrating ({config.method})", total=total)
            items = itertools.islice(source.items(), limit)
            run = (lambda item: session.run(item[1], item[0])) if session is not None else (lambda item: None)
            for (label, feed), outputs in run_in_order(run, items, None if session is not None else 1):
                observe_feeds(session, from_feed, observers, channels, skipped, feed, label, outputs)
                del feed, outputs
                num_samples += 1
                bar.advance(task)
    finally:
        if session is not None:
            session.close()
    return num_samples


def _table(observers: dict[str, MinMaxObserver], channels: dict[str, ChannelRange], skipped: dict[str, str],
           num_samples: int, config: QuantConfig, source: Any) -> RangesTable:
    ranges: dict[str, TensorRange] = {}
    for name, obs in observers.items():
        if name in skipped:
            continue
        if not obs.seen:
            skipped[name] = "empty or non-finite in every sample"
            continue
        lo, hi, summary = choose_range(
            obs,
            config.method,
            percentile=config.percentile,
            activations=config.activations,
            symmetric=config.symmetric,
        )
        summary = {"num_samples": num_samples, **summary}
        if name in channels and channels[name].summary() is not None:
            summary["channels"] = channels[name].summary()
        ranges[name] = TensorRange(lo=lo, hi=hi, min=obs.min, max=obs.max, method=config.method, summary=summary)
    for name, reason in skipped.items():
        logger.info("not calibrated: %r is %s", name, reason)
    meta: dict[str, Any] = {
        "activations": config.activations,
        "symmetric": config.symmetric,
        "source": source.description,
    }
    if config.method == "percentile":
        meta["percentile"] = config.percentile
    if config.method != "minmax":
        meta["num_bins"] = config.num_bins
    if skipped:
        meta["skipped"] = skipped
    logger.info("calibrated %d tensors on %d samples (%s)", len(ranges), num_samples, config.method)
    return RangesTable(ranges, method=config.method, num_samples=num_samples, meta=meta)
