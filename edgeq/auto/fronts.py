"""Per-tensor fronts: after per-token MatMuls meet the target, the inputs whose rows need no
scale of their own go back to one scale per tensor, as many as the target allows.

    found = per_tensor_fronts(search, best, cal)   # a Config meeting the target, or None

A per-token MatMul's input (its "front", shared by the MatMuls that read it: attention's Q, K and
V) costs some ten small ops and six passes over the input at run time (passes/per_token.py); one
scale per tensor costs onnxruntime's DynamicQuantizeMatMul alone, plus the outlier channels'
mask, gather and float product (passes/dynamic.py (6)). With the outlier channels out, a
LayerNorm output spreads about as much in one row as in the whole tensor (every token is
normalised), and one scale per tensor loses 1-4 dB there against one per row; other inputs (the
attention context, a GELU output) lose more. Measured on MiniLM (Xeon with VNNI, 1 thread, a
quiet host; docs/per_token.md): every MatMul per token 1.62x fp32 at 31.5 dB unseen; every
MatMul per tensor with outlier channels 1.96x at 29.2 dB; Q/K/V per token and the rest per
tensor 1.84x at 30.4 dB; auto's answer with this step (after GPTQ, see search.py (2)), 12 of 24
inputs per tensor, 1.75x at 31.3 dB.

1. Fronts: the per-token MatMul/Gemm units of ``best``, grouped by the input they read.
2. Order: each front's harm, the output noise that one scale per tensor adds over one per row at
   its own MatMuls, each output row's relative to that row's power (the float model's inputs on up
   to ``SAMPLES`` calibration samples, both grids applied in numpy to the input with its outlier
   channels out, through the float weights), divided by the work it saves (the input's size);
   least harm per unit of work first. A local
   estimate: how the noise grows on its way to the outputs is what the builds measure.
3. Binary search for the longest prefix of that order whose build meets the target (not the
   whole order: every input per tensor is the build the per-token repair replaced, which missed);
   every build is recorded, so timing decides between them and the all-per-token configuration.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeq.auto.state import Config, Search
from edgeq.graph import all_nodes

__all__ = ["per_tensor_fronts", "front_harm"]

logger = logging.getLogger(__name__)

SAMPLES = 8  # calibration samples the harm is estimated on


def per_tensor_fronts(search: Search, best: Config, cal: Any) -> Config | None:
    """(3) The configuration with the most fronts per tensor that meets the target; None where
    there is nothing to try (fewer than two fronts) or no prefix meets it."""
    if not search.meets(best) or search.over_budget("per-tensor fronts"):
        return None
    plan, copy = search.bench.plan(best.exclude, model=best.model)
    fronts: dict[str, list[Any]] = {}  # (1)
    for node in all_nodes(copy.graph):
        if node in plan.per_token and node.graph is copy.graph and node.inputs[0] is not None and node.inputs[0].name:
            fronts.setdefault(node.inputs[0].name, []).append(node)
    if len(fronts) < 2:
        return None
    from edgeq.passes.per_token import row_form

    harm = front_harm(copy, fronts, search.source, cal, search.bench.config.outlier_channels,
                      row_form(search.bench.config)[0])
    order = sorted(fronts, key=lambda name: harm[name][0] / max(harm[name][1], 1))  # (2)
    # every input per tensor is the build the per-token repair replaced: it missed the target
    lo, hi, found, most = 1, len(order) - 1, None, 0
    while lo <= hi:  # (3)
        if search.over_budget("per-tensor fronts"):
            break
        k = (lo + hi) // 2
        units = tuple(n.name for name in order[:k] for n in fronts[name])
        trial = search.build(f"int8, {k} of {len(order)} MatMul inputs per tensor, the rest per token", best.model,
                             cal, best.methods, best.base, best.exclude, bias=best.bias, int16=best.int16,
                             fp16=best.fp16, per_token=best.per_token, dynamic=units)
        if search.meets(trial):
            found, most, lo = trial, k, k + 1
        else:
            hi = k - 1
    logger.info("auto: %d of %d MatMul inputs per tensor meet the target", most, len(order))
    return found


def front_harm(model: Any, fronts: dict[str, list[Any]], source: Any, cal: Any,
               outliers: bool, half: int = 127) -> dict[str, tuple[float, int]]:
    """(2) {input name: (noise per tensor minus noise per row at its MatMuls' outputs, relative to
    each output row's power, mean over rows; the input's elements per sample)} on up to
    ``SAMPLES`` samples of ``source``; ``half``: a row's levels either side of its centre
    (``per_token.row_form``)."""
    from edgeq.calibrate import load_data
    from edgeq.calibrate.collect import ObservedModel
    from edgeq.passes.outliers import outlier_channels
    from edgeq.passes.smoothquant import weight_rows

    source = load_data(source, model)
    values = {v.name: v for nodes in fronts.values() for v in nodes[0].inputs[:1]}
    weights = {name: [weight_rows(n, n.inputs[0]) for n in nodes] for name, nodes in fronts.items()}
    masks = {}
    for name in fronts:
        absmax = cal.channel_absmax(name) if outliers else None
        chosen = outlier_channels(absmax) if absmax is not None else None
        masks[name] = chosen
    sums = {name: np.zeros(3) for name in fronts}  # rows, relative noise per tensor, per row
    sizes = dict.fromkeys(fronts, 0)
    session = ObservedModel(model, list(values.values()))
    try:
        for i, (label, feed) in enumerate(source.items()):
            if i >= SAMPLES:
                break
            for name, x in zip(session.names, session.run(feed, label)):
                x = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
                sizes[name] = max(sizes[name], x.size)
                sums[name] += _noise(x, masks[name], weights[name], half)
    finally:
        session.close()
    out = {}
    for name, (rows, tensor, row) in sums.items():
        out[name] = ((tensor - row) / rows if rows > 0 else 0.0, sizes[name])
    return out


def _noise(x: np.ndarray, outliers: np.ndarray | None, weights: list[np.ndarray | None], half: int = 127) -> np.ndarray:
    """(rows, noise with one scale per tensor, noise with one per row) at the MatMuls' outputs,
    each row's noise relative to that row's power: every token counts alike, as a LayerNorm after
    it makes them (the small tokens beside outlier ones are where one scale per tensor fails)."""
    masked = x.copy()
    if outliers is not None:
        masked[:, outliers] = 0.0
    lo, hi = min(float(masked.min()), 0.0), max(float(masked.max()), 0.0)  # DynamicQuantizeLinear's grid
    step = (hi - lo) / 255 or 1.0
    zero = np.round(-lo / step)
    per_tensor = (np.clip(np.round(masked / step) + zero, 0, 255) - zero) * step - masked
    rmax, rmin = masked.max(axis=1, keepdims=True), masked.min(axis=1, keepdims=True)
    mid, rstep = (rmax + rmin) / 2, np.maximum((rmax - rmin) / (2 * half), np.finfo(np.float32).tiny)
    per_row = np.round((masked - mid) / rstep) * rstep + mid - masked  # per_token.py (1)
    out = np.zeros(3)
    for w in weights:
        if w is None or w.shape[0] != x.shape[1]:
            continue
        power = np.maximum(np.square(x @ w).sum(axis=1), np.finfo(np.float32).tiny)
        out += [len(power), float((np.square(per_tensor @ w).sum(axis=1) / power).sum()),
                float((np.square(per_row @ w).sum(axis=1) / power).sum())]
    return out
