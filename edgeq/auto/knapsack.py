"""Int8 units chosen by time saved per noise from none: the fallback's second candidate.

    c = by_time(search, best, cal, order, requantize)   # a recorded configuration, or None

The fallback (``search._from_ranking``) first keeps the smallest prefix of units in float, most
sensitive first, that meets the target, then takes float units back to int8 while the target
holds, most fp32 time saved per unit of noise first (``_back_order``). That prefix is chosen by
noise alone: a unit that is both noisy and slow (an LSTM, a large Gemm) lands in it, and the
prefix meets the target with little room left, so taking it back misses and smaller units take
the room instead. ddddocr's recognizer: its LSTM alone costs 39.8 dB of noise (its convolutions
40-45 dB each) and holds 63% of the fp32 time on an Intel Xeon (Emerald Rapids), where auto's
answers kept it float at 1.35-1.45x fp32 (every unit int8: 3.97x at 25 dB). With this candidate,
two runs there answered 'int8 by time saved per noise, 12 float' at 2.75x and 2.43x, 35.5 dB on
48 unseen lines (bench/auto_knapsack.py, docs/benchmarks.md).

The knapsack's own greedy answer starts from the other end: units in ``_back_order`` over all of
them (no measured noise first, then most time per noise), the first ``j`` int8 and the rest
float, ``j`` as large as meets the target (binary search: noise adds up, near enough monotone);
then the rest are taken back one at a time where the target still holds (``_requantize``). Both
answers are recorded, and timing decides between them (``placement.place``). It is built only
where it may pay (``promising``: the additive noise model, no build, says it saves 3% more of
the fp32 time). Without a profile (no timing, a provider that cannot profile) there is no time
per noise, and no second candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["by_time", "promising"]

logger = logging.getLogger(__name__)

NAME = "int8 by time saved per noise"
RESOLUTION = 0.03  # of the units' fp32 time: less than auto's timing tells apart (the "3% faster" line)


def promising(search: Any, found: Any, order: list[str], noise: dict[str, float]) -> bool:
    """Whether the knapsack's answer may save ``RESOLUTION`` of the units' fp32 time more than
    ``found`` (the ranked prefix's answer) does, by the additive noise model and no build: each
    unit's ranking noise, scaled so that ``found``'s int8 units add up to its measured noise;
    units taken in ``order`` while their sum stays within the target's noise. An estimate: noise
    does not add exactly (MiniLM's per-token MatMuls: 29 units estimated, 26 built), so it only
    spares the builds where the prefix answer is already the knapsack's own, near enough."""
    ms = search.unit_ms()
    if not ms or not order:
        return False
    int8 = [u for u in order if u not in found.exclude]
    measured = 10.0 ** (-found.score.min_sqnr / 10.0)
    added = sum(max(noise.get(u, 0.0), 0.0) for u in int8)
    scale = measured / added if added > 0 else 1.0
    budget = 10.0 ** (-search.min_sqnr / 10.0) if search.min_sqnr is not None else measured
    total, chosen = 0.0, []
    for u in order:
        total += max(noise.get(u, 0.0), 0.0) * scale
        if total > budget:
            break
        chosen.append(u)
    saved = sum(ms.get(u, 0.0) for u in chosen) - sum(ms.get(u, 0.0) for u in int8)
    whole = sum(ms.get(u, 0.0) for u in order)
    logger.info("auto: the knapsack's answer would run %d units int8 (the ranked prefix's: %d), %.1f%% more of "
                "their fp32 time", len(chosen), len(int8), 100 * saved / max(whole, 1e-12))
    return saved > RESOLUTION * whole


def by_time(search: Any, best: Any, cal: Any, order: list[str], requantize: Callable[..., Any]) -> Any:
    """The configuration with the first ``j`` units of ``order`` (every ranked unit in
    ``search._back_order``) int8, the largest ``j`` that meets the target, and then the rest
    taken back where the target holds (``requantize``: ``search._requantize``); None without
    unit times, when no ``j`` meets the target, or over the time budget. Recorded in
    ``search.tried``."""
    if not order or not search.unit_ms():
        return None
    from edgeq.auto.chains import largest

    def build(j: int) -> dict[str, Any]:
        return dict(model=best.model, cal=cal, methods=best.methods, base=best.base,
                    exclude=best.exclude + tuple(order[j:]), bias=best.bias)

    state, found, length = largest(1, len(order)), None, 0
    while state is not None:
        if search.over_budget("int8 by time saved per noise"):
            return None
        search.run_ahead(state, largest.probe, largest.after, lambda s: build(largest.probe(s)),
                         lambda s: search.likely(build(largest.probe(s))["exclude"], best))
        j = largest.probe(state)
        trial = search.build(f"{NAME}: {j} of {len(order)} int8", **build(j), record=False)
        met = search.meets(trial)
        if met:
            found, length = trial, j
        state = largest.after(state, met)
    if found is None:
        return None
    answer = requantize(search, found, cal, order[length:])
    if answer is not found:  # (``_requantize`` recorded it under its own name)
        search.tried.remove(answer)
    same = next((c for c in search.tried if c.layout == answer.layout), None)
    if same is not None:  # the other path built it already: timed once
        return same
    answer.name = f"{NAME}, {len(answer.exclude) - len(best.exclude)} float"
    search.tried.append(answer)
    logger.info("auto: %s: %d of %d units int8 by time per noise, %d more taken back", NAME, length, len(order),
                len(found.exclude) - len(answer.exclude))
    return answer
