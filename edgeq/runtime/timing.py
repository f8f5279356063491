"""``measure``: median latency of several models on one provider and thread count, their runs
interleaved so that drift on a shared machine hits them alike (auto's search, the accuracy level
of MatMulNBits and a decoder's per-layer bits all time with it)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping

import numpy as np

__all__ = ["measure", "BUDGET_S"]

logger = logging.getLogger(__name__)

BUDGET_S = 6.0  # seconds of timed runs for one set of models (auto.latency.measure_in_groups shares it out)


def measure(models: Mapping[str, bytes], feed: Mapping[str, np.ndarray], *, provider: str = "cpu",
            threads: int = 1, runs: int = 25, budget_s: float = BUDGET_S, min_s: float = 0.25) -> dict[str, float]:
    """Median ms per run of each model (interleaved runs after 3 warm-up runs each; at least
    ``runs``, more for fast models so that each gets about ``min_s`` of runs, within ``budget_s``:
    25 runs of a 30-microsecond model are noise)."""
    from edgeq.runtime.session import Session

    sessions = {name: Session(data, providers=(provider,), threads=threads) for name, data in models.items()}
    feed = dict(feed)
    warm = time.perf_counter()
    for sess in sessions.values():
        for _ in range(3):
            sess.run(feed, checked=True)
    per_round = max((time.perf_counter() - warm) / 3, 1e-6)  # all models once
    runs = int(min(max(runs, min_s * len(sessions) / per_round), 2000))
    times: dict[str, list[float]] = {name: [] for name in sessions}
    start = time.perf_counter()
    for i in range(runs):
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(feed, checked=True)  # the feed is already validated: no checks in the timed call
            times[name].append((time.perf_counter() - t0) * 1e3)
        if i >= 6 and time.perf_counter() - start > budget_s:
            break
    result = {name: statistics.median(t) for name, t in times.items()}
    logger.info("latency (%s, %d thread(s)): %s", provider, threads,
                ", ".join(f"{k} {v:.3f} ms" for k, v in result.items()))
    return result
