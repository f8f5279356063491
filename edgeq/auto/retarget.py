"""The gate's search again: aim as far above the target as the gate fell below the scoring samples.

    added = retarget(search, gap, target, fp32, again)   # configurations built, timed, in ``search.tried``

The search aims ``SQNR_MARGIN_DB`` above the user's target on its few scoring samples; the final
gate (``gate.py``) judges the pick on every sample, out of sample, by a one-sided bound. Where the
pick misses there, its scoring SQNR minus its gate bound (``gap``) says how far this model's
scoring figures overstate what the gate will find. Checking only the configurations already built
then lands on those that happened to score that much higher: often the ones that kept the most
layers float, the slowest.

So the fallback's ladder runs again (at most twice: ``gate.py`` (2)), from the ranking it already
measured (``Ranking``; or the whole fallback where int8 had met the target without one), aiming
at ``target + gap + SQNR_MARGIN_DB``: the smallest ranked prefix in float, layers re-quantized
most time saved per noise first, then the ladder. What it builds that meets that aim and has int8
layers is timed against fp32 where auto times, and joins the gate's alternatives, where
configurations that absorb the gap are checked first, fastest first.

ddddocr's recognizer on an Intel Xeon (Emerald Rapids), 32 text lines, 1 thread: the first pick
(4 float layers) scored 31.6 dB and its gate bound was 29.4; aiming at 32.7 dB, the search again
built a configuration with 8 float layers at 3.1x fp32 (its bound 29.4 again: it fell 4.1 dB)
and one with 12 layers per-token at 1.3-1.55x, which passed (bound 32.1 dB; 34.9 dB on 48 unseen
lines; docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import math
from typing import Any

__all__ = ["retarget", "paying_prefixes"]

logger = logging.getLogger(__name__)


def retarget(search: Any, gap: float, target: float | None, fp32: bytes, again: Any) -> list[Any]:
    """The configurations the search again (``again()``: the search's fallback, from its
    ranking where it has one) built that meet ``target + gap + SQNR_MARGIN_DB``,
    timed against ``fp32`` (the prepared float model's bytes; ``latency_ms`` on the scale of
    the first timing, ``placement.place``); [] where there is nothing to aim
    at (no SQNR target, no gap in dB, no timing, the time budget spent)."""
    from edgeq.auto.latency import measure_in_groups
    from edgeq.auto.state import SQNR_MARGIN_DB

    if (target is None or not math.isfinite(gap) or gap <= 0 or search.timing is None
            or getattr(search, "prepared_ms", None) is None or search.over_budget("the gate's search again")):
        return []
    aim = target + gap + SQNR_MARGIN_DB
    search.bar.update(search.task, description=f"auto: searching again, aiming at {aim:.1f} dB")
    logger.info("auto gate: the pick fell %.2f dB from its scoring samples to the gate: searching again at %.2f dB",
                gap, aim)
    start, saved = len(search.tried), search.min_sqnr
    search.min_sqnr = aim
    try:
        again()
        seen, added = set(), []
        for c in search.tried[start:]:
            if search.meets(c) and c.has_int8() and c.layout not in seen:
                seen.add(c.layout)
                added.append(c)
    finally:
        search.min_sqnr = saved
    if not added:
        return []
    feed, provider, threads = search.timing
    models = {"fp32": fp32, **{str(i): c.data for i, c in enumerate(added)}}
    search.bar.update(search.task, description=f"auto: timing {len(added)} configuration(s) of the search again")
    times = measure_in_groups(models, feed, anchor="fp32", provider=provider, threads=threads)
    for i, c in enumerate(added):
        c.latency_ms = times[str(i)] * search.prepared_ms / times["fp32"]
    logger.info("auto gate: search again: %d configuration(s) at %.2f dB: %s", len(added), aim,
                ", ".join(f"{c.name} {c.latency_ms:.3f} ms" for c in added))
    return added


def paying_prefixes(search: Any, rungs: tuple[str, ...]) -> tuple[str, ...]:
    """The ladder precisions whose ranked prefix is worth searching again: those with a prefix
    configuration timed faster than fp32, or none timed. A whole prefix in int16 runs as float
    kernels between Q/DQ on onnxruntime's CPU provider: ddddocr_det's four timed 97-105 ms against
    fp32's 53 in each search again, builds and timings spent for nothing. (The ladder, one unit at
    a time, still tries every precision.)"""
    fp32_ms = getattr(search, "fp32_ms", None)
    if fp32_ms is None:
        return rungs
    kept = []
    for rung in rungs:
        timed = [c.latency_ms for c in search.tried if c.prefix == rung and c.latency_ms is not None]
        if not timed or min(timed) < fp32_ms:
            kept.append(rung)
    return tuple(kept)
