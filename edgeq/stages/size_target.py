"""Compress mode with a size target (``--max-size MB`` or ``--max-size Nx``): per layer, the
codebook width that makes the most faithful file within the size.

    plan = size_plan(model, config, feeds, cache, limit_bytes, build)   # {weight name: (scheme, bits)}

1. Candidates: each weight compress mode stores (``codebook_weights.compressible``) at ``WIDTHS``
   bits of the config's scheme; a weight whose reader the precision map names keeps that width
   (or fp32), and is not searched. Each weight is clustered once per width (``cache``, which the
   final build reads too).
2. Bytes: a weight's indices at its width plus its codebooks (``codebook_weights.stored_bytes``),
   exact; the rest of the file (graph, the other weights) is the file built at 8 bits less its
   weights' bytes.
3. Noise: a weight at b bits moves the outputs by about alpha_w * E_w(b), E_w(b) its squared
   rounding error, alpha_w the output noise (relative to the outputs' power) per unit of it.
   With data, alpha_w is measured: the model with that weight alone replaced by its ``PROBE_BITS``
   rebuild, run on up to ``MAX_FEEDS`` samples. Without data, alpha_w = 1 / ||W||^2: each
   layer's relative error counts the same. Noise from different layers is taken to add.
4. Allocation: every searched weight at 8 bits, then, while the estimate is over the limit, the one
   step down (to the next width) adding least noise per byte saved; then, into the room the last
   (large) steps left, steps back up that fit, most noise taken out per byte first. The file is
   then built and
   measured. The rest of the file moves with the widths chosen (each width in use adds its own
   unpacking to the graph), so where the estimate missed by more than ``SLACK`` of the limit it is
   corrected by the miss and the allocation made again (``CORRECTIONS`` times at most). Still
   over the limit by a little, the step adding least noise among those that save that much (not
   the best noise per byte, which may be the largest weight's whole step), the room it frees
   refilled, until it fits. A limit below the
   file with every searched weight at ``WIDTHS[-1]`` bits is a UsageError naming that size.
5. ``predicted_sqnr_db``: -10 log10 of the summed noise, from (3), the search's own forecast;
   with data, ``measured_sqnr`` is what the built file gives on the same samples (each output's
   SQNR over them all, the lowest output's), the figure the report states. Samples the search
   did not see are ``--eval``'s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["size_plan", "allocate", "measured_sqnr", "WIDTHS", "PROBE_BITS", "MAX_FEEDS"]

logger = logging.getLogger(__name__)

WIDTHS = (8, 6, 5, 4, 3, 2)  # (1)
PROBE_BITS = 4  # (3)
MAX_FEEDS = 8
CORRECTIONS = 3  # (4) allocations on a corrected estimate of the rest of the file
SLACK = 0.005  # (4) an estimate within this share of the limit is taken as it is


def _alphas(model: Any, weights: dict, codes: dict, scheme: str, errors: dict[str, float],
            feeds: list[dict[str, np.ndarray]] | None, progress: bool) -> dict[str, float]:
    """(3) Output noise per unit of squared weight error, per weight name (``errors``: each
    weight's squared error at ``PROBE_BITS``)."""
    if not feeds:
        return {v.name: 1.0 / max(float(np.square(np.asarray(v.const_value.numpy(), np.float64)).sum()), 1e-30)
                for v in weights}
    from edgeq.calibrate.collect import progress_bar
    from edgeq.io import model_bytes
    from edgeq.report.evaluate import cpu_session

    feeds = feeds[:MAX_FEEDS]
    session = cpu_session(model_bytes(model), 0)
    reference = [session.run(None, feed) for feed in feeds]
    power = sum(float(np.square(o.astype(np.float64)).sum()) for outs in reference for o in outs) or 1e-30
    alphas = {}
    with progress_bar(progress) as bar:
        task = bar.add_task("--max-size: each layer's effect on the outputs", total=len(weights))
        for value, transposed in weights.items():
            rows, book, indices = codes[(value.name, scheme, PROBE_BITS)]
            float_tensor = value.const_value
            probe = _rebuild(rows, book, indices)
            probe = probe.T if transposed else probe.reshape(float_tensor.shape)
            value.const_value = _tensor(np.ascontiguousarray(probe, np.float32), float_tensor.name)
            try:
                moved = cpu_session(model_bytes(model), 0)
                noise = sum(float(np.square(a.astype(np.float64) - b.astype(np.float64)).sum())
                            for feed, outs in zip(feeds, reference) for a, b in zip(moved.run(None, feed), outs))
            finally:
                value.const_value = float_tensor
            alphas[value.name] = (noise / power) / max(errors[value.name], 1e-30)
            bar.advance(task)
    return alphas


def measured_sqnr(fp32: bytes, built: bytes, feeds: list[dict[str, np.ndarray]]) -> float:
    """(5) The lowest output's SQNR of ``built`` against ``fp32`` over ``feeds`` (dB)."""
    from edgeq.metrics import sqnr_db
    from edgeq.report.evaluate import cpu_session

    ref, got = cpu_session(fp32, 0), cpu_session(built, 0)
    pairs = [(ref.run(None, feed), got.run(None, feed)) for feed in feeds[:MAX_FEEDS]]
    return min(sqnr_db(np.concatenate([a[i].ravel() for a, _ in pairs]), np.concatenate([b[i].ravel() for _, b in pairs]))
               for i in range(len(pairs[0][0])))


def _rebuild(rows: np.ndarray, book: np.ndarray, indices: np.ndarray) -> np.ndarray:
    from edgeq.passes.codebook_weights import rebuilt

    return rebuilt(rows, book, indices).astype(np.float64)


def _tensor(array: np.ndarray, name: str | None) -> Any:
    import onnx_ir as ir

    return ir.Tensor(array, name=name)


def size_plan(model: Any, scheme: str, keep: frozenset[str], fixed: dict[str, Any], feeds: list | None,
              cache: dict, limit: float, build: Callable[[dict[str, tuple[str, int]]], int],
              progress: bool = True, widths: tuple[int, ...] = WIDTHS) -> tuple[dict[str, tuple[str, int]], dict[str, Any]]:
    """(4) The per-weight widths for a file of at most ``limit`` bytes, and the search's summary.

    ``fixed``: reader names (or op types) the precision map gives a width, not searched;
    ``build(per_weight)``: the file's size in bytes with those widths (the caller builds it);
    ``widths``: the candidates, widest first (--weights kmeans:N caps them at N)."""
    WIDTHS = widths  # noqa: N806 - the module's candidates, narrowed
    from edgeq.errors import UsageError
    from edgeq.passes.codebook_weights import compressible, encode, stored_bytes

    weights = {v: t for v, t in compressible(model.graph, keep).items()
               if not any(user.name in fixed or user.op_type in fixed for user, _ in v.uses())}
    if not weights:
        raise UsageError("--max-size: no weight left to choose a width for (all kept fp32 or given one)")
    for value, transposed in weights.items():  # (1) every width of every weight, clustered once
        array = np.asarray(value.const_value.numpy(), np.float32)
        for bits in sorted(set(WIDTHS) | {PROBE_BITS}):
            key = (value.name, scheme, bits)
            if key not in cache:
                cache[key] = encode(array, transposed, scheme, bits)
    cost = {(v.name, b): stored_bytes(cache[(v.name, scheme, b)][1], cache[(v.name, scheme, b)][2], b)
            for v in weights for b in WIDTHS}
    error = {}
    for v in weights:
        for b in sorted(set(WIDTHS) | {PROBE_BITS}):
            rows, book, indices = cache[(v.name, scheme, b)]
            error[(v.name, b)] = float(np.square(rows.astype(np.float64) - _rebuild(rows, book, indices)).sum())
    alphas = _alphas(model, weights, cache, scheme, {v.name: error[(v.name, PROBE_BITS)] for v in weights}, feeds,
                     progress)
    names = [v.name for v in weights]
    ladders = {n: [((scheme, b), cost[(n, b)], error[(n, b)]) for b in WIDTHS] for n in names}

    def refuse(smallest: float) -> Exception:
        return UsageError(f"--max-size {limit / 1e6:.3f} MB cannot be met: with every weight at {WIDTHS[-1]} bits "
                          f"the file is about {smallest / 1e6:.3f} MB (the graph and the weights kept float count too)")

    plan, size, noise = allocate(ladders, alphas, limit, build, refuse)
    summary = {"limit_bytes": int(limit), "bytes": int(size), "searched": len(names),
               "widths": {str(b): sum(1 for n in names if plan[n][1] == b) for b in WIDTHS},
               "plan": {n: plan[n][1] for n in names},
               "sensitivity": (f"each layer's effect on the outputs measured on {len(feeds[:MAX_FEEDS])} sample(s)" if feeds
                               else "layers weighed by their relative weight error (pass --calib to measure each "
                                    "layer's effect on the outputs)"),
               "predicted_sqnr_db": round(-10 * math.log10(noise), 1) if noise > 0 and feeds else None}
    logger.info("size target: %s", summary)
    return plan, summary


def allocate(ladders: dict[str, list[tuple[Any, float, float]]], alphas: dict[str, float], limit: float,
             build: Callable[[dict[str, Any]], int], refuse: Callable[[float], Exception]
             ) -> tuple[dict[str, Any], int, float]:
    """(4) For each name, one option of its ladder (``(key, bytes, squared error)``, widest first)
    so that the built file is at most ``limit`` bytes with the least forecast noise
    (``alphas[name]`` x error, summed). ``build({name: key})`` builds the file and returns its
    size. Returns (that plan, its size, the forecast noise); ``refuse(smallest)`` is raised where
    every name at its last option is still over the limit."""
    names = list(ladders)
    width = dict.fromkeys(names, 0)  # index into each ladder

    def cost(n: str, i: int) -> float:
        return ladders[n][i][1]

    def error(n: str, i: int) -> float:
        return ladders[n][i][2]

    def current() -> dict[str, Any]:
        return {n: ladders[n][width[n]][0] for n in names}

    rest = build(current()) - sum(cost(n, 0) for n in names)  # (2)

    def estimate() -> float:
        return rest + sum(cost(n, width[n]) for n in names)

    smallest = rest + sum(cost(n, len(ladders[n]) - 1) for n in names)
    if smallest > limit:
        raise refuse(smallest)

    def step() -> bool:
        best, best_rate = None, math.inf
        for n in names:
            i = width[n]
            if i + 1 >= len(ladders[n]):
                continue
            saved = cost(n, i) - cost(n, i + 1)
            rate = alphas[n] * (error(n, i + 1) - error(n, i)) / max(saved, 1e-9)
            if rate < best_rate:
                best, best_rate = n, rate
        if best is None:
            return False
        width[best] += 1
        return True

    def trim(deficit: float) -> bool:
        """(4) The step down adding least noise among those saving at least ``deficit`` bytes (a
        small overshoot is not worth the largest weight's step), else ``step``."""
        best, best_noise = None, math.inf
        for n in names:
            i = width[n]
            if i + 1 >= len(ladders[n]) or cost(n, i) - cost(n, i + 1) < deficit:
                continue
            noise = alphas[n] * (error(n, i + 1) - error(n, i))
            if noise < best_noise:
                best, best_noise = n, noise
        if best is None:
            return step()
        width[best] += 1
        return True

    def refill(room: float) -> bool:
        """(4) One step back up (the most noise taken out per byte) that still fits in ``room``."""
        best, best_rate = None, 0.0
        for n in names:
            i = width[n]
            if i == 0:
                continue
            added = cost(n, i - 1) - cost(n, i)
            if added > room:
                continue
            rate = alphas[n] * (error(n, i) - error(n, i - 1)) / max(added, 1e-9)
            if rate > best_rate:
                best, best_rate = n, rate
        if best is None:
            return False
        width[best] -= 1
        return True

    for _ in range(CORRECTIONS):  # (4) allocate on the estimate, build, correct the estimate's rest
        for n in names:
            width[n] = 0
        while estimate() > limit and step():
            pass
        while refill(limit - estimate()):
            pass
        size = build(current())
        missed = size - estimate()
        if abs(missed) <= SLACK * limit:
            break
        rest += missed
    rest += size - estimate()  # the estimate now is the measured size
    while size > limit and trim(size - limit):  # still over: the cheapest step that covers it, then
        while refill(limit - estimate()):  # back up into what that step freed
            pass
        size = build(current())
        rest += size - estimate()
    return current(), int(size), sum(alphas[n] * error(n, width[n]) for n in names)
