"""Auto mode with a size target (``--mode auto --max-size MB|Nx|min``): the answer's weights stored
in fewer bits until the file fits, the fidelity promise checked again, the latency measured.

    chosen, verdict, record = fit_size(search, chosen, verdict, drawn, float_model, limit, ...)

Auto's answer (int8 layers, float layers, or the fp32 model) is what the search found fastest
under the promise; here only how its weights are stored changes, never what runs:

1. Options per weight (``size_store.py``): an int8 weight at 8 bits or through integer codebooks
   of 6 to 2 bits (rebuilt as int8 when the session loads, so the int8 kernels still run); a
   float weight as stored or through k-means codebooks of 8 to 2 bits (the fp32 kernels).
   Intermediate shapes are dropped too where onnxruntime runs the same operators without them.
2. Each weight's effect on the outputs is measured (``size_target.py`` (3)): the answer with that
   weight alone at ``PROBE_BITS`` bits, on the search's scoring samples, its output noise against
   the answer's per unit of squared rounding error (on a cluster, ``--cluster``, the probes run
   as tasks, each worker clustering its weight again: the same figures, so the same file). The
   allocation is ``size_target.allocate``: the least forecast noise within the limit, built and
   measured until the file fits. Probes and checks judge ``size_store.rebuilt_model``.
3. The promise: the stored file is checked as the answer was (``gate.py``): every calibration
   sample judged out of sample (the held-out quarter by the file, each other quarter by the
   same configuration on ranges calibrated without it, its weights stored by the same plan),
   or on the evaluation samples given; the bound must reach the target and the guards (top-1,
   score-map IoU, a metric) their scores. A plan that breaks it is not returned: ``RAISES``
   bisection steps (geometric) between the limit and the answer's own size (which keeps it) name
   the smallest file found that keeps it, and a ``FidelityError`` says so (nothing is written).
4. Latency and load: the stored file, the answer as searched and fp32, timed interleaved on the
   provider at the search's threads (medians), and each session's creation (the unpacking runs
   then, once), in the record (``report["auto"]["size"]``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from typing import Any

import numpy as np

from edgeq.auto.size_store import apply_plan, ladders_of, rebuilt_model

__all__ = ["fit_size", "probe_noise", "ProbeJob", "RAISES", "SMALLEST_STEPS"]

logger = logging.getLogger(__name__)

RAISES = 4  # (3) bisection steps to name the smallest file that keeps the promise
SMALLEST_STEPS = 6  # (3) bisection steps of --max-size min, from the file with every weight at 2 bits
LOAD_ROUNDS = 3  # (4)


@dataclasses.dataclass(frozen=True)
class ProbeJob:
    """What a cluster's worker needs to probe the answer's weights (2): the answer serialized, the
    scoring feeds and the answer's outputs on them (computed once, here)."""

    key: str
    model: bytes
    feeds: list
    reference: list
    drop_shapes: bool


def probe_noise(shared: Any, name: str) -> float:
    """(2) The output noise energy of the answer with weight ``name`` alone at ``PROBE_BITS``, on
    the feeds. ``shared``: a ``ProbeJob`` (on a worker, where the codes are clustered again: the
    same k-means, the same figure) or, here, ``(model, feeds, reference, cache, drop_shapes)``."""
    from edgeq.auto.workbench import model_bytes_of
    from edgeq.cluster import worker_cache
    from edgeq.report.evaluate import cpu_session
    from edgeq.stages.size_target import PROBE_BITS

    if isinstance(shared, ProbeJob):
        model, feeds, reference = worker_cache(shared.key, lambda: _parsed(shared.model)), shared.feeds, shared.reference
        cache: dict = {}
        drop = shared.drop_shapes
    else:
        model, feeds, reference, cache, drop = shared
    session = cpu_session(model_bytes_of(rebuilt_model(model, {name: PROBE_BITS}, cache, drop)), 1)
    return sum(float(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64)).sum())
               for feed, outs in zip(feeds, reference) for a, b in zip(session.run(None, feed), outs)
               if np.asarray(b).dtype.kind == "f")


def _parsed(data: bytes) -> Any:
    import onnx

    from edgeq.io import as_model

    return as_model(onnx.load_from_string(data))[0]


def _alphas(model: Any, feeds: list, probe_error: dict[str, float], cache: dict, progress: Any,
            drop_shapes: bool) -> dict[str, float]:
    """(2) Output noise (relative to the answer's output power) per unit of squared weight error;
    the probes run as tasks on a cluster where one is in use (``--cluster``), in order here."""
    import uuid

    from edgeq import cluster
    from edgeq.auto.workbench import model_bytes_of
    from edgeq.errors import ClusterError
    from edgeq.io import model_bytes
    from edgeq.report.evaluate import cpu_session

    reference_session = cpu_session(model_bytes_of(model), 1)
    reference = [reference_session.run(None, feed) for feed in feeds]
    power = sum(float(np.square(o.astype(np.float64)).sum()) for outs in reference for o in outs
                if np.asarray(o).dtype.kind == "f") or 1e-30
    executor, names = cluster.current(), list(probe_error)
    if executor.distributed:
        data = model_bytes(model)
        if len(data) >= 2**31:
            raise ClusterError("a model of 2 GB or more is not sent to a cluster's workers: run without --cluster")
        shared = executor.share(ProbeJob(uuid.uuid4().hex, data, list(feeds), reference, drop_shapes))
    else:
        shared = (model, feeds, reference, cache, drop_shapes)
    noises = executor.map(probe_noise, names, shared=shared, label="size probe", on_result=lambda i, r: progress())
    return {name: (noise / power) / max(probe_error[name], 1e-30) for name, noise in zip(names, noises)}


def _check(search: Any, chosen: Any, drawn: Any, fp32: Any, plan: dict, cache: dict, cals: dict,
           drop_shapes: bool) -> Any:
    """(3) The stored file judged as the gate judged the answer."""
    from edgeq.auto.gate import check_cross_fitted, check_on
    from edgeq.auto.workbench import model_bytes_of

    def stored(model: Any) -> Any:  # judged as onnxruntime runs the stored file, its codebooks folded
        return model_bytes_of(rebuilt_model(model, plan, cache, drop_shapes))

    if drawn.folds and not chosen.name.startswith("fp16 (whole model)"):
        return check_cross_fitted(search, chosen, drawn, fp32, cals, transform=stored)
    source = drawn.gate if drawn.gate is not None else _Feeds(search.bench.feeds)
    return check_on(fp32, stored(chosen.result.model), source, search.bench.metric, sessions=cals)


class _Feeds:
    """A list of feeds as the gate reads a source."""

    def __init__(self, feeds: list) -> None:
        self.feeds = feeds

    def items(self) -> Any:
        return enumerate(self.feeds)


def _timed(models: dict[str, Any], feed: dict, provider: str, threads: int) -> tuple[dict, dict]:
    """(4) Median ms per run (interleaved) and median session creation ms of each model."""
    from edgeq.runtime.session import Session
    from edgeq.runtime.timing import measure

    loads = {}
    for name, data in models.items():
        times = []
        for _ in range(LOAD_ROUNDS):
            start = time.perf_counter()
            built = Session(data, providers=(provider,), threads=threads).ort_session  # the codebooks unpack here
            del built
            times.append((time.perf_counter() - start) * 1e3)
        loads[name] = statistics.median(times)
    return measure(models, feed, provider=provider, threads=threads), loads


class _Fit:
    """What the allocation, the checks and the bisections of one size target share."""

    def __init__(self, search: Any, chosen: Any, drawn: Any, fp32: Any, answer: Any, before: int,
                 target: float | None) -> None:
        from edgeq.stages.shapes_free import shapes_are_free

        self.search, self.chosen, self.drawn, self.fp32, self.answer, self.target = (search, chosen, drawn, fp32,
                                                                                     answer, target)
        self.before = before  # the answer's bytes as searched
        self.sizes: dict[tuple, int] = {}  # plan -> bytes: every allocation starts from the same widest build
        self.cache: dict = {}
        self.cals: dict = {}
        self.built: dict[str, Any] = {}
        self.ladders, probe_error, self.kinds = ladders_of(answer, self.cache)
        self.drop_shapes = shapes_are_free(answer)  # (stages/shapes_free.py) else kept, as the answer has them
        self.alphas = (_alphas(answer, search.bench.feeds[:8], probe_error, self.cache,
                               lambda: search.bar.advance(search.task), self.drop_shapes) if self.ladders else {})

    def build(self, plan: dict[str, Any]) -> int:
        from edgeq.io import model_bytes

        key = tuple(sorted(plan.items(), key=lambda item: item[0]))
        if key not in self.sizes:
            self.built = {"plan": dict(plan), "model": apply_plan(self.answer, plan, self.cache, self.drop_shapes)}
            self.sizes[key] = len(model_bytes(self.built["model"]))
        return self.sizes[key]

    def floor(self) -> float:
        """The file with every weight at its narrowest (estimated from a build of the widest)."""
        rest = self.build(dict.fromkeys(self.ladders)) - sum(ladder[0][1] for ladder in self.ladders.values())
        return rest + sum(ladder[-1][1] for ladder in self.ladders.values())

    def allocate(self, limit: float, refuse: Any = None) -> tuple[dict, int, float]:
        from edgeq.stages.size_target import allocate

        return allocate(self.ladders, self.alphas, limit, self.build, refuse or (lambda smallest: RuntimeError()))

    def check(self, plan: dict) -> Any:
        return _check(self.search, self.chosen, self.drawn, self.fp32, plan, self.cache, self.cals, self.drop_shapes)

    def keeps(self, checked: Any) -> bool:
        return checked.meets(self.target, self.search.min_score)

    def bisect(self, lo: float, steps: int) -> tuple[dict, int, Any] | None:
        """(3) Geometric bisection between ``lo`` (breaks the promise, or the floor) and the answer's
        own size (keeps it): the smallest (plan, bytes, check) found that keeps it, else None."""
        hi, found = float(self.before), None
        for _ in range(steps):
            trial = math.sqrt(max(lo, 1.0) * hi)
            plan, size, _ = self.allocate(trial)
            checked = self.check(plan)
            if self.keeps(checked):
                hi, found = trial, (plan, size, checked)
            else:
                lo = trial
        return found


def fit_size(search: Any, chosen: Any, verdict: str, drawn: Any, float_model: Any, limit: float, asked: str,
             provider: str, threads: int, feed: dict) -> tuple[Any, str, dict]:
    """(answer, verdict, record): the module docstring's steps; ``limit`` in bytes, 0 for the
    smallest file that keeps the promise (``--max-size min``: ``SMALLEST_STEPS`` bisection steps
    from the floor); ``asked``: the option as given, for the messages. Raises ``UsageError`` where
    no plan reaches the limit and ``FidelityError`` where the promise breaks at it."""
    from edgeq.auto.state import SQNR_MARGIN_DB
    from edgeq.auto.workbench import model_bytes_of
    from edgeq.errors import FidelityError, UsageError
    from edgeq.io import model_bytes

    answer = chosen.result.model
    before = len(model_bytes(answer))
    record: dict[str, Any] = {"asked": asked, "limit_bytes": int(limit), "answer_bytes": before}
    if 0 < limit and before <= limit:
        record.update(bytes=before, stored="as searched (it fits)")
        return chosen, verdict + f"; {before / 1e6:.3f} MB, within --max-size {asked} as it is", record
    search.bar.update(search.task, description="auto --max-size: each weight's effect on the outputs")
    target = None if search.min_sqnr is None else search.min_sqnr - SQNR_MARGIN_DB
    fit = _Fit(search, chosen, drawn, model_bytes_of(float_model), answer, before, target)
    if not fit.ladders:
        if limit <= 0:
            record.update(bytes=before, stored="as searched (no weight to store in fewer bits)")
            return chosen, verdict + f"; {before / 1e6:.3f} MB: no weight to store in fewer bits", record
        raise UsageError(f"--max-size {asked}: the answer ({before / 1e6:.3f} MB) has no weight to store in fewer bits")
    search.bar.update(search.task, description=f"auto --max-size: checking the file on all {drawn.gate_what}")
    if limit <= 0:  # the smallest file that keeps the promise
        found = fit.bisect(fit.floor(), SMALLEST_STEPS)
        if found is None:
            record.update(bytes=before, stored="as searched (no smaller file found keeps the promise)")
            return chosen, verdict + (f"; {before / 1e6:.3f} MB: no smaller file found keeps the promise "
                                      f"({SMALLEST_STEPS} sizes tried)"), record
        plan, size, checked = found
        noise = None
    else:
        def refuse(smallest: float) -> Exception:
            return UsageError(f"--max-size {asked} ({limit / 1e6:.3f} MB) cannot be met: with every weight at 2 bits "
                              f"auto's answer would still be about {smallest / 1e6:.3f} MB (its graph and small tensors "
                              "count too)")

        plan, size, noise = fit.allocate(limit, refuse)
        checked = fit.check(plan)
        if not fit.keeps(checked):
            raise FidelityError(_broken(fit, checked, limit, asked))
    stored = (fit.built["model"] if fit.built.get("plan") == plan
              else apply_plan(answer, plan, fit.cache, fit.drop_shapes))
    data = model_bytes_of(stored)
    times, loads = _timed({"fp32": fit.fp32, "searched": chosen.data, "stored": data}, feed, provider, threads)
    widths: dict[str, int] = {}
    for name, bits in plan.items():
        label = f"{fit.kinds[name]} {'as searched' if bits is None else f'{bits}-bit'}"
        widths[label] = widths.get(label, 0) + 1
    record.update(bytes=size, stored="codebooks", weights=len(plan), widths=widths, shapes_dropped=fit.drop_shapes,
                  predicted_sqnr_db=round(-10 * math.log10(noise), 1) if noise else None,
                  plan={n: b for n, b in plan.items() if b is not None},
                  ms={k: round(v, 4) for k, v in times.items()}, load_ms={k: round(v, 1) for k, v in loads.items()},
                  check={"samples": checked.samples, "min_sqnr_db": round(checked.min_sqnr, 2),
                         "bound_db": round(checked.min_low, 2), "target_db": target,
                         **({"metric": checked.metric} if checked.metric is not None else {})})
    chosen.result.model, chosen.data = stored, data
    speed = times["fp32"] / times["stored"] if times["stored"] > 0 else math.inf
    verdict += (f"; stored in {size / 1e6:.3f} MB for --max-size {asked} ({before / 1e6:.3f} MB as searched), "
                f"min output SQNR bound {checked.min_low:.1f} dB on all {checked.samples} {drawn.gate_what}, "
                f"{speed:.2f}x fp32 ({times['stored']:.3f} vs {times['fp32']:.3f} ms), session start "
                f"{loads['stored']:.0f} ms (fp32 {loads['fp32']:.0f} ms)")
    return chosen, verdict, record


def _broken(fit: _Fit, checked: Any, limit: float, asked: str) -> str:
    """(3) The message of a limit that breaks the promise, naming the smallest larger file found
    that keeps it (``RAISES`` bisection steps from the limit towards the answer's size)."""
    from edgeq.auto.summary import metric_label

    search = fit.search
    what = (f"min output SQNR bound {checked.min_low:.1f} dB < {fit.target:g} dB" if fit.target is not None
            and not checked.meets(fit.target, None) else
            f"{metric_label(search.bench.metric)} {checked.metric:.4f} < {search.min_score}")
    found = fit.bisect(limit, RAISES)
    hint = (f"the smallest file found that keeps it is {found[1] / 1e6:.3f} MB (--max-size "
            f"{math.ceil(found[1] / 1e3) / 1e3:.3f}, or --max-size min)" if found
            else f"no smaller file found keeps it than the answer as searched, {fit.before / 1e6:.3f} MB")
    return (f"--max-size {asked} ({limit / 1e6:.3f} MB) breaks auto's fidelity promise: stored that small, the answer "
            f"measured {what} on all {checked.samples} {fit.drawn.gate_what}; {hint}; or lower --min-sqnr, or use "
            "--mode compress (fp32 kernels, no promise)")
