"""MatMulNBits' ``accuracy_level`` chosen by measurement (weight-only mode, ``accuracy_level=None``).

    note = choose_accuracy_level(model, feeds)   # sets the attribute on every MatMulNBits node

Level 0 computes in float (exactly the block grid); level 4 quantizes each row of the activations
to int8 and computes in integers: faster or slower depending on the CPU and the shape, and it moves
the outputs (on some models it flips greedy tokens). So both are run, on this machine:

1. Timing: where the model is a decoder with a KV cache (an input named ``past*``), on a decode
   step (every dynamic dim 1: one new token after one cached one), which is most of a
   generation's time; otherwise on the first calibration sample (or a feed with every dynamic
   dim 1 when there is none). Interleaved runs, median.
2. Fidelity: level 4's outputs against level 0's on up to ``MAX_FEEDS`` calibration samples (or
   that one feed): the lowest output SQNR.
3. Level 4 is kept where it is at least ``MIN_GAIN`` faster and within ``MIN_SQNR_DB`` of level 0;
   else level 0. The note says which, with both figures.

Measured on a 2-core AMD EPYC without VNNI, a 57M-parameter decoder: decode 2.07x faster at level 4
than at 0 (level 0 was slower than fp32 there), prefill 0.75x; tiny_lm's logits at level 4 were
49.6 dB from level 0's and its perplexity unchanged (docs/benchmarks.md, Language models).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import numpy as np

__all__ = ["choose_accuracy_level", "MIN_GAIN", "MIN_SQNR_DB"]

logger = logging.getLogger(__name__)

MIN_GAIN = 0.10
MIN_SQNR_DB = 30.0
MAX_FEEDS = 8
TIMING_S = 1.5  # seconds of interleaved runs


def _set_level(model: Any, level: int) -> None:
    import onnx_ir as ir

    for node in model.graph:
        if node.op_type == "MatMulNBits":
            node.attributes["accuracy_level"] = ir.AttrInt64("accuracy_level", level)


def _decode_feed(session: Any) -> dict[str, np.ndarray] | None:
    from edgeq.errors import UsageError
    from edgeq.runtime.feeds import random_feeds

    specs = session.input_specs
    dims = {d: 1 for s in specs for d in (s.shape or ()) if isinstance(d, str)}
    try:
        return random_feeds(specs, batch=1, dims=dims)
    except UsageError:
        return None  # an unnamed dynamic dim: no feed to be made up


def _time(sessions: dict[str, Any], feed: dict) -> dict[str, float]:
    for s in sessions.values():
        for _ in range(2):
            s.run(feed, checked=True)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    start = time.perf_counter()
    while time.perf_counter() - start < TIMING_S or len(times["0"]) < 5:
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(feed, checked=True)
            times[name].append(time.perf_counter() - t0)
        if len(times["0"]) >= 2000:
            break
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def choose_accuracy_level(model: Any, feeds: list[dict[str, np.ndarray]] | None) -> str:
    """Set the measured level on ``model``'s MatMulNBits nodes; return the report's note."""
    from edgeq.errors import EdgeqError
    from edgeq.metrics import sqnr_db
    from edgeq.runtime.memory import in_memory
    from edgeq.runtime.session import Session

    if not any(n.op_type == "MatMulNBits" for n in model.graph):
        return ""
    sessions = {}
    for level in (0, 4):
        _set_level(model, level)
        sessions[str(level)] = Session(in_memory(model), threads=1)
    decoder = any(s.name.startswith("past") for s in sessions["0"].input_specs)
    feed = _decode_feed(sessions["0"]) if decoder or not feeds else feeds[0]
    if feed is None:
        _set_level(model, 0)
        return "accuracy_level 0 (float compute): no input could be made up to time level 4 on (pass --calib)"
    checked = (feeds or [feed])[:MAX_FEEDS]
    worst = np.inf
    try:
        ms = _time(sessions, feed)
        for f in checked:
            a, b = sessions["0"].run(f, checked=True), sessions["4"].run(f, checked=True)
            for name, ref in a.items():
                if ref.dtype.kind == "f" and ref.size:
                    worst = min(worst, sqnr_db(ref, b[name]))
    except EdgeqError as e:  # a made-up feed the graph does not take (a fixed Reshape ...)
        _set_level(model, 0)
        return (f"accuracy_level 0 (float compute): level 4 could not be timed ({e}); pass --calib DATA to time it on "
                "your data, or --accuracy-level 4")
    gain = ms["0"] / ms["4"]
    where = "a decode step (one new token)" if decoder else ("the first calibration sample" if feeds else "a made-up feed")
    figures = (f"on {where}, level 4 (int8 compute) {ms['4']:.3f} ms vs level 0 (float) {ms['0']:.3f} ms ({gain:.2f}x); "
               f"its outputs {worst:.1f} dB from level 0's on {len(checked)} sample(s)")
    logger.info("accuracy_level: %s", figures)
    if gain >= 1 + MIN_GAIN and worst >= MIN_SQNR_DB:
        _set_level(model, 4)
        return f"accuracy_level 4, measured: {figures}"
    _set_level(model, 0)
    why = "not 10% faster" if gain < 1 + MIN_GAIN else f"under {MIN_SQNR_DB:g} dB"
    return f"accuracy_level 0, measured ({why}): {figures}"
