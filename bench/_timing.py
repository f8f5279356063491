"""One-thread onnxruntime sessions and interleaved latency rounds, shared by the bench scripts.

    from _timing import session, interleaved_ms
    ms = interleaved_ms({"fp32": a, "int8": b}, feeds, runs=200, repeats=7, warmup=3)

Every model runs ``runs`` inferences (cycling over ``feeds``) per round, the models take turns
within a round (their order rotated from one round to the next, so that no model always runs
first) so that machine drift hits all alike, and the median over ``repeats`` rounds of
the per-inference time is returned. ``runs=None``: as many as fill about 0.2 s for the first
model, and at least one pass over ``feeds``. ``threads``: intra-op threads of every session (1
unless told).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

__all__ = ["session", "interleaved_ms"]

ROUND_S = 0.2  # runs=None: a round of about this long


def session(data: bytes, threads: int = 1) -> Any:
    """A CPU session with ``threads`` intra-op threads (one unless told), sequential execution,
    errors only in the log."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def interleaved_ms(models: dict[str, bytes], feeds: list[dict[str, np.ndarray]], *, runs: int | None,
                   repeats: int, warmup: int, threads: int = 1) -> dict[str, float]:
    """Median ms per inference of each model (see the module docstring)."""
    sessions = {k: session(v, threads) for k, v in models.items()}
    for sess in sessions.values():
        for i in range(warmup):
            sess.run(None, feeds[i % len(feeds)])
    if runs is None:
        start = time.perf_counter()
        next(iter(sessions.values())).run(None, feeds[0])
        runs = max(len(feeds), int(ROUND_S / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    names = list(sessions)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # the order rotated each round
            sess = sessions[name]
            start = time.perf_counter()
            for i in range(runs):
                sess.run(None, feeds[i % len(feeds)])
            times[name].append((time.perf_counter() - start) * 1e3 / runs)
    return {k: statistics.median(v) for k, v in times.items()}
