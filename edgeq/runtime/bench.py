"""Benchmark models: latency percentiles, throughput, session start, peak memory, file size.

    results = bench(["fp32.onnx", "int8.onnx"], providers=("cpu",), threads=(1, 2), batches=(1, 8))

Every model x provider x threads x batch configuration runs in a fresh Python process (``isolate``,
the default), so that its peak RSS is its own and one configuration's arena or thread pool does
not warm the next. In that process: feeds are made (random from the input specs, or read from
``inputs``), the baseline RSS is taken, the session is built (timed), warmed up, then run
``iters`` times or for ``seconds`` (at least ``min_iters`` runs). ``speedup`` compares each
model's p50 with the first model's in the same configuration.

Rounds: with several models, each configuration is measured in ``rounds`` rounds (``ROUNDS`` by
default; one with a single model), the budget (``iters`` or ``seconds``, and ``min_iters``) split
between them. Within a round the models of one provider x threads x batch run one after the
other, their order rotated each round, so that a shared machine's drift (another job starting,
the clock changing) hits every model alike instead of whichever ran last. A model's figures are
the medians over its rounds (p50, p90, p99, session start, first run); ``iters`` the sum; min,
max, mean and throughput over all runs; ``speedup`` the first model's p50 over this one's (the
two columns a reader divides), and ``speedup_range`` the lowest and highest of that ratio
within one round. On this project's shared 2-core machine the demo's ``edgeq bench`` read int8
at 0.72x fp32 with every fp32 configuration measured before every int8 one, where the quantize
step, timing the two interleaved, had just measured 1.06x.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.errors import UsageError

__all__ = ["BenchResult", "bench", "measure", "make_feed", "file_bytes", "bench_report", "ROUNDS"]

logger = logging.getLogger(__name__)

ROUNDS = 3  # rounds per configuration where several models are compared (module docstring)


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """One configuration's figures; times in milliseconds, memory and size in bytes."""

    model: str
    provider: str
    providers_used: tuple[str, ...]
    threads: int
    batch: int
    iters: int
    warmup: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput: float  # samples per second: batch * iters / total run time
    session_start_ms: float
    peak_rss_delta_bytes: int | None
    file_bytes: int
    input_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    speedup: float | None = None  # first model's p50 / this p50, same provider/threads/batch
    fell_back: bool = False  # the requested provider could not run the model (see providers_used)
    warnings: list[str] = dataclasses.field(default_factory=list)  # the session's (runtime/cpu.py: saturation)
    first_run_ms: float | None = None  # the first run after the session started (cold caches, lazy init)
    rounds: int = 1  # rounds measured (module docstring): the figures are their medians
    speedup_range: tuple[float, float] | None = None  # lowest and highest of the rounds' ratios


    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["providers_used"] = list(self.providers_used)
        if self.speedup_range is not None:
            d["speedup_range"] = list(self.speedup_range)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in d.items() if k in fields}
        data["providers_used"] = tuple(data.get("providers_used", ()))
        if data.get("speedup_range") is not None:
            data["speedup_range"] = tuple(data["speedup_range"])
        return cls(**data)


def file_bytes(path: str) -> int:
    """Size of a model file plus the external-data files it references."""
    total = os.path.getsize(path)
    try:
        import onnx

        proto = onnx.load(path, load_external_data=False)
    except Exception:  # the session will report a broken file properly
        return total
    locations: set[str] = set()
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                locations.update(e.value for e in tensor.external_data if e.key == "location")
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    folder = os.path.dirname(os.path.abspath(path))
    for location in locations:
        target = os.path.join(folder, location)
        if os.path.isfile(target):
            total += os.path.getsize(target)
    return total


def _reset_peak_rss() -> bool:
    """Linux: restart this process's peak-RSS mark (VmHWM) now, so the peak excludes imports."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    """Peak resident set size of this process, in bytes (None where unknown).

    Linux: VmHWM of this process's own memory map. ``ru_maxrss`` is not used there: after
    fork+exec it still holds the parent's peak, which would count the parent's memory.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", None)


def _batch_feed(feed: dict[str, np.ndarray], specs: Sequence[Any], batch: int | None) -> dict[str, np.ndarray]:
    """Repeat or trim given data along a symbolic first dim to ``batch`` samples."""
    if batch is None:
        return feed
    out = {}
    for spec in specs:
        array = feed[spec.name]
        first = spec.shape[0] if spec.shape else None
        if spec.shape and not isinstance(first, int) and array.ndim and array.shape[0] != batch:
            array = np.take(array, np.arange(batch) % array.shape[0], axis=0)
        out[spec.name] = array
    return out


def make_feed(
    session: Any,
    batch: int | None,
    *,
    inputs: str | None = None,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """The feed to time: the first feed of ``inputs`` (tiled to ``batch`` along a symbolic first
    dim) or random data from the session's input specs; checked against the model."""
    from edgeq.runtime.feeds import iter_feeds, random_feeds

    specs = session.input_specs
    if inputs is not None:
        _, feed = next(iter(iter_feeds(inputs, [s.name for s in specs])))
        return session.check(_batch_feed(feed, specs, batch))
    return session.check(random_feeds(specs, batch if batch is not None else 1, dims, shapes))


def measure(
    model: str,
    provider: str = "cpu",
    threads: int = 1,
    *,
    batch: int | None = 1,
    warmup: int = 5,
    iters: int | None = None,
    seconds: float = 2.0,
    min_iters: int = 10,
    inputs: str | None = None,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> BenchResult:
    """Measure one configuration in this process (``bench`` calls it in a fresh one)."""
    import gc

    import psutil

    from edgeq.runtime.session import Session

    gc.collect()
    process = psutil.Process()
    base_rss = process.memory_info().rss
    _reset_peak_rss()
    session = Session(model, providers=(provider,), threads=threads)
    sess = session.ort_session
    start_ms = (session.start_seconds or 0.0) * 1e3
    fell_back = session.providers[0] != session.requested_providers[0]
    if fell_back:
        logger.warning("%s could not run %s; these figures are for %s", provider, model, session.providers[0])
    feed = make_feed(session, batch, inputs=inputs, dims=dims, shapes=shapes)
    # The feeds are the benchmark's, not the model's: leave them out of the memory figure.
    feed_bytes = sum(a.nbytes for a in feed.values())
    first = next(iter(feed.values()), None)
    n = batch if batch is not None else (first.shape[0] if first is not None and first.ndim else 1)
    first_ms = None
    if warmup:
        t0 = time.perf_counter()
        sess.run(None, feed)  # the first run (the first warm-up run)
        first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup - 1):
        sess.run(None, feed)
    times: list[float] = []
    began = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
        if iters is not None:
            if len(times) >= iters:
                break
        elif len(times) >= min_iters and time.perf_counter() - began >= seconds:
            break
    peak = max(_peak_rss() or 0, process.memory_info().rss)
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return BenchResult(
        model=model,
        provider=provider,
        providers_used=tuple(session.providers),
        threads=threads,
        batch=int(n),
        iters=len(times),
        warmup=warmup,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        throughput=float(n * len(times) / float(np.sum(times))),
        session_start_ms=start_ms,
        peak_rss_delta_bytes=max(0, int(peak - base_rss - feed_bytes)),
        file_bytes=file_bytes(model),
        input_shapes={k: list(v.shape) for k, v in feed.items()},
        fell_back=fell_back,
        warnings=list(session.warnings),
        first_run_ms=first_ms if first_ms is not None else float(ms[0]),  # no warm-up: the first timed run
    )


def _measure_isolated(spec: dict[str, Any], timeout: float) -> BenchResult:
    from edgeq.runtime.isolated import run_isolated

    what = (f"benchmark of {spec['model']} ({spec['provider']}, threads={spec['threads']}, batch={spec['batch']})")
    return BenchResult.from_dict(run_isolated("edgeq.runtime._bench_worker", spec, timeout, what=what,
                                              fix="use fewer --iters or a smaller --seconds"))


def bench(
    models: Sequence[str | os.PathLike],
    providers: Sequence[str] = ("cpu",),
    threads: Sequence[int] = (1,),
    *,
    batches: Sequence[int] | None = None,
    warmup: int = 5,
    iters: int | None = None,
    seconds: float = 2.0,
    min_iters: int = 10,
    inputs: str | None = None,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    isolate: bool = True,
    progress: bool = False,
    rounds: int | None = None,
) -> list[BenchResult]:
    """Benchmark every model x provider x threads x batch; see the module docstring.

    ``batches=None`` means batch 1 for random inputs and the data's own batch for ``inputs``.
    ``rounds``: None for ``ROUNDS`` with several models, 1 with one. Unavailable providers are
    skipped with a warning; none available raises ProviderError. Results come in the order
    model x provider x threads x batch.
    """
    from edgeq.runtime.providers import available_providers, canonical_name
    from edgeq.runtime.session import check_model_file

    models = [os.fspath(m) for m in models]
    if not models:
        raise UsageError("give at least one model to benchmark")
    for model in models:
        check_model_file(model)
    if iters is not None and iters < 1:
        raise UsageError(f"--iters must be at least 1, got {iters}")
    if warmup < 0 or seconds <= 0:
        raise UsageError("--warmup must be >= 0 and --seconds > 0")
    if rounds is not None and rounds < 1:
        raise UsageError(f"--rounds must be at least 1, got {rounds}")
    rounds = rounds if rounds is not None else (ROUNDS if len(models) > 1 else 1)
    avail = available_providers()
    chosen = [name for name in providers if canonical_name(name) in avail]
    if chosen:
        for name in providers:
            if name not in chosen:
                logger.warning("execution provider %s is not available here; not benchmarking it", name)
    else:
        from edgeq.errors import ProviderError

        raise ProviderError(
            f"none of the requested providers ({', '.join(providers)}) is available; available: {', '.join(avail)}"
        )
    groups = [(p, t, b) for p in chosen for t in threads for b in (list(batches) if batches else [None])]
    configs = [(index, model, p, t, b) for index, model in enumerate(models) for p, t, b in groups]
    # the budget split between the rounds (module docstring)
    common = dict(warmup=warmup, iters=None if iters is None else -(-iters // rounds), seconds=seconds / rounds,
                  min_iters=max(1, -(-min_iters // rounds)), inputs=inputs, dims=dict(dims or {}),
                  shapes={k: list(v) for k, v in (shapes or {}).items()})
    timeout = 600.0 + (seconds * 20 if iters is None else 1200.0)
    order = [(r, (index, models[index], *group)) for r in range(rounds) for group in groups
             for index in [(k + r) % len(models) for k in range(len(models))]]  # models rotated each round
    measured: dict[tuple, list[BenchResult]] = {}
    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # markup=False: a model's file name is no markup
        bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("bench", total=len(order))
    try:
        for r, config in order:
            _, model, p, t, b = config
            label = f"{os.path.basename(model)} {p} threads={t} batch={b or 'data'}"
            if rounds > 1:
                label += f" (round {r + 1} of {rounds})"
            if bar is not None:
                bar.update(task, description=label)
            logger.info("benchmarking %s", label)
            if isolate:
                spec = dict(common, model=model, provider=p, threads=t, batch=b)
                result = _measure_isolated(spec, timeout)
            else:
                result = measure(model, p, t, batch=b, **common)
            measured.setdefault(config, []).append(result)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return _combined(configs, measured)


def _combined(configs: list[tuple], measured: dict[tuple, list[BenchResult]]) -> list[BenchResult]:
    """One result per configuration from its rounds, with the speed-up against the first model of
    the same provider x threads x batch (module docstring)."""
    combined = {config: _median_of(measured[config]) for config in configs}
    first = {config[2:]: config for config in configs if config[0] == 0}
    out = []
    for config in configs:
        result = combined[config]
        if config[0] != 0:
            ref = first[config[2:]]
            ratios = sorted(a.p50_ms / b.p50_ms for a, b in zip(measured[ref], measured[config]))
            result = dataclasses.replace(result, speedup=combined[ref].p50_ms / result.p50_ms,
                                         speedup_range=(ratios[0], ratios[-1]) if len(ratios) > 1 else None)
        out.append(result)
    return out


def _median_of(runs: list[BenchResult]) -> BenchResult:
    """``runs`` (one configuration's rounds) as one result; a single round as it is."""
    if len(runs) == 1:
        return runs[0]

    def median(name: str) -> float:
        return float(np.median([getattr(r, name) for r in runs]))

    iters = sum(r.iters for r in runs)
    mean = sum(r.mean_ms * r.iters for r in runs) / iters
    firsts = [r.first_run_ms for r in runs if r.first_run_ms is not None]
    peaks = [r.peak_rss_delta_bytes for r in runs if r.peak_rss_delta_bytes is not None]
    return dataclasses.replace(
        runs[0], iters=iters, p50_ms=median("p50_ms"), p90_ms=median("p90_ms"), p99_ms=median("p99_ms"),
        mean_ms=mean, min_ms=min(r.min_ms for r in runs), max_ms=max(r.max_ms for r in runs),
        throughput=runs[0].batch / (mean / 1e3), session_start_ms=median("session_start_ms"),
        peak_rss_delta_bytes=max(peaks) if peaks else None, fell_back=any(r.fell_back for r in runs),
        warnings=list(dict.fromkeys(w for r in runs for w in r.warnings)),
        first_run_ms=float(np.median(firsts)) if firsts else None, rounds=len(runs))


def bench_report(results: Sequence[BenchResult]) -> dict[str, Any]:
    """JSON-ready report: versions, host, and every result."""
    import platform

    import onnxruntime as ort

    from edgeq._version import __version__

    return {
        "edgeq": __version__,
        "onnxruntime": ort.__version__,
        "host": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "results": [r.to_dict() for r in results],
    }
