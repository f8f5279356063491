"""Range methods: turn an observer into the clipping range ``(lo, hi)`` and a small summary.

All work on the histogram of ``HistogramObserver`` with numpy, no per-element loops:

* ``percentile``: symmetric -> the ``p``-th percentile of ``|x|``, range ``[-t, t]``;
  asymmetric -> ``(100 - p) / 2`` % cut from each tail, or ``100 - p`` % from the far tail of a
  one-sided (e.g. post-ReLU) tensor. Linear interpolation inside a bin.
* ``entropy``: TensorRT's KL-divergence calibration. For a threshold bin count ``i >= levels``,
  P is the ``|x|`` histogram cut at ``i`` with the outliers added to its last bin, Q is P merged
  into ``levels`` groups and expanded back (each group's mass spread over its non-empty bins); the
  ``i`` minimizing KL(P||Q) gives ``t = i * width``. ``levels`` is 128 (a signed tensor, or a
  symmetric int8 target) or 256 for a non-negative tensor on an asymmetric 8-bit target (the
  one-sided form). Candidates: every 16th bin count, then every bin around the best.
* ``mse``: the range minimizing the expected quantization MSE for the target dtype,
  ``step**2 / 12`` per value inside the range plus the squared clipping error outside it,
  over a grid of candidate ranges (``[-t, t]`` when symmetric, ``lo`` x ``hi`` otherwise).

Every method returns a range inside ``[min, max]``; ``finalize_range`` then makes sure it is not
degenerate (a constant tensor gets a range that includes 0, an all-zero one ``[-eps, eps]``).
The quantizer is expected to extend the range to include 0 as usual.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeq.calibrate.observers import HistogramObserver, MinMaxObserver

__all__ = ["choose_range", "finalize_range", "percentile_range", "entropy_range", "mse_range", "EPS"]

EPS = 2.0**-20

_LEVELS = {"int8": 256, "uint8": 256, "int16": 65536}


def finalize_range(lo: float, hi: float) -> tuple[float, float]:
    """Make ``[lo, hi]`` usable for a scale > 0: widen constant and (near-)zero ranges."""
    lo, hi = float(lo), float(hi)
    if hi - lo < EPS:
        if lo != hi or abs(lo) < EPS:
            mid = 0.5 * (lo + hi)
            lo, hi = min(lo, mid - EPS), max(hi, mid + EPS)
        if lo == hi:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
    return lo, hi


def _interp(cum: np.ndarray, target: float, width: float, origin: float) -> float:
    """The x where the cumulative count ``cum`` (per bin end) reaches ``target``."""
    j = int(np.searchsorted(cum, target, side="left"))
    j = min(j, cum.size - 1)
    before = cum[j - 1] if j > 0 else 0.0
    inside = cum[j] - before
    frac = 0.0 if inside <= 0 else (target - before) / inside
    return origin + (j + min(max(frac, 0.0), 1.0)) * width


def percentile_range(obs: HistogramObserver, percentile: float, symmetric: bool) -> tuple[float, float, dict[str, Any]]:
    if symmetric:
        counts, width = obs.abs_histogram()
        cum = np.cumsum(counts)
        t = _interp(cum, cum[-1] * percentile / 100.0, width, 0.0)
        lo, hi = max(-t, obs.min), min(t, obs.max)
        return lo, hi, {"threshold": t}
    counts, width = obs.signed_histogram()
    cum = np.cumsum(counts)
    if obs.min >= 0.0 or obs.max <= 0.0:  # one-sided tensor (post-ReLU): cut only the far tail
        if obs.min >= 0.0:
            return obs.min, min(_interp(cum, cum[-1] * percentile / 100.0, width, -obs.radius), obs.max), {}
        return max(_interp(cum, cum[-1] * (100.0 - percentile) / 100.0, width, -obs.radius), obs.min), obs.max, {}
    tail = cum[-1] * (100.0 - percentile) / 200.0
    lo = _interp(cum, tail, width, -obs.radius)
    hi = _interp(cum, cum[-1] - tail, width, -obs.radius)
    return max(lo, obs.min), min(hi, obs.max), {}


def _kl_candidates(hist: np.ndarray, candidates: np.ndarray, levels: int, eps: float = 1e-4) -> np.ndarray:
    """KL(P||Q) for each threshold bin count in ``candidates``, vectorized (C x N).

    P: ``hist[:i]`` with the outliers ``hist[i:]`` added to its last bin. Q: ``hist[:i]`` (no
    outliers) merged into ``levels`` groups, each group's mass spread evenly over the bins where
    P is non-zero. Zeros are smoothed with ``eps`` counts (as MXNet/TVM do) so KL stays finite.
    """
    n = hist.size
    j = np.arange(n)
    inside = j[None, :] < candidates[:, None]  # C x N
    sliced = np.where(inside, hist[None, :], 0.0)
    rows = np.arange(candidates.size)
    p = sliced.copy()
    p[rows, candidates - 1] += hist.sum() - np.cumsum(hist)[candidates - 1]  # outliers
    groups = np.where(inside, (j[None, :] * levels) // candidates[:, None], levels)  # dump group
    flat = (rows[:, None] * (levels + 1) + groups).ravel()
    nonzero = p > 0
    size = candidates.size * (levels + 1)
    group_sum = np.bincount(flat, weights=sliced.ravel(), minlength=size).reshape(-1, levels + 1)
    group_cnt = np.bincount(flat, weights=nonzero.ravel(), minlength=size).reshape(-1, levels + 1)
    spread = group_sum / np.maximum(group_cnt, 1)
    q = np.where(nonzero, np.take_along_axis(spread, groups, axis=1), 0.0)
    q = np.where(nonzero & (q <= 0), eps, q)
    p_sum = p.sum(axis=1, keepdims=True)
    q_sum = q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(nonzero, (p / p_sum) * np.log((p * q_sum) / (q * p_sum)), 0.0)
    return terms.sum(axis=1)


def entropy_range(obs: HistogramObserver, activations: str, symmetric: bool) -> tuple[float, float, dict[str, Any]]:
    hist, width = obs.abs_histogram()
    n = hist.size
    one_sided = obs.min >= 0.0 and not symmetric
    levels = 256 if one_sided and activations != "int16" else 128
    if activations == "int16":
        levels = max(levels, n)  # finer than the histogram: KL cannot beat no clipping
    if levels >= n or hist.sum() == 0:
        t = obs.max if one_sided else max(-obs.min, obs.max)
        return max(-t, obs.min), min(t, obs.max), {"threshold": t, "levels": levels}
    coarse = np.unique(np.append(np.arange(levels, n + 1, 16), n))
    kl = _kl_candidates(hist, coarse, levels)
    best = int(coarse[int(np.argmin(kl))])
    fine = np.arange(max(levels, best - 16), min(n, best + 16) + 1)
    kl_fine = _kl_candidates(hist, fine, levels)
    best = int(fine[int(np.argmin(kl_fine))])
    t = min(best * width, max(-obs.min, obs.max))
    return max(-t, obs.min), min(t, obs.max), {"threshold": t, "levels": levels, "kl": float(kl_fine.min())}


def mse_range(
    obs: HistogramObserver, activations: str, symmetric: bool, candidates: int = 128
) -> tuple[float, float, dict[str, Any]]:
    levels = _LEVELS[activations]
    if symmetric:
        counts, width = obs.abs_histogram()
        centers = (np.arange(counts.size) + 0.5) * width
        amax = max(-obs.min, obs.max)
        t = amax * np.arange(1, candidates + 1) / candidates  # C
        step = 2.0 * t / (levels - 1)
        over = np.clip(centers[None, :] - t[:, None], 0.0, None)
        clip_err = (counts[None, :] * over**2).sum(axis=1)
        n_in = (counts[None, :] * (centers[None, :] <= t[:, None])).sum(axis=1)
        err = n_in * step**2 / 12.0 + clip_err
        best = int(np.argmin(err))
        tb = float(t[best])
        return max(-tb, obs.min), min(tb, obs.max), {"threshold": tb}
    counts, width = obs.signed_histogram()
    centers = -obs.radius + (np.arange(counts.size) + 0.5) * width
    frac = np.arange(1, candidates + 1) / candidates
    lo_c = min(obs.min, 0.0) * frac  # A
    hi_c = max(obs.max, 0.0) * frac  # B
    below = np.clip(lo_c[:, None] - centers[None, :], 0.0, None)  # A x N
    above = np.clip(centers[None, :] - hi_c[:, None], 0.0, None)  # B x N
    low_err = (counts * below**2).sum(axis=1)
    high_err = (counts * above**2).sum(axis=1)
    n_low = (counts * (below > 0)).sum(axis=1)
    n_high = (counts * (above > 0)).sum(axis=1)
    step = (hi_c[None, :] - lo_c[:, None]) / (levels - 1)  # A x B
    n_in = counts.sum() - n_low[:, None] - n_high[None, :]
    err = low_err[:, None] + high_err[None, :] + n_in * step**2 / 12.0
    a, b = np.unravel_index(int(np.argmin(err)), err.shape)
    lo, hi = float(lo_c[a]), float(hi_c[b])
    return max(lo, obs.min), min(hi, obs.max), {"lo_threshold": lo, "hi_threshold": hi}


def choose_range(obs: MinMaxObserver, method: str, *, percentile: float = 99.99, activations: str = "uint8", symmetric: bool = False) -> tuple[float, float, dict[str, Any]]:
    """``(lo, hi, summary)`` for ``obs`` by ``method`` (minmax | percentile | entropy | mse)."""
    if method == "minmax" or not isinstance(obs, HistogramObserver):
        lo, hi, summary = obs.min, obs.max, {}
    elif method == "percentile":
        lo, hi, summary = percentile_range(obs, percentile, symmetric)
        summary["percentile"] = percentile
    elif method == "entropy":
        lo, hi, summary = entropy_range(obs, activations, symmetric)
    elif method == "mse":
        lo, hi, summary = mse_range(obs, activations, symmetric)
    else:
        raise ValueError(f"unknown method {method!r}")
    if isinstance(obs, HistogramObserver):
        summary["bins"] = obs.num_bins
    lo, hi = finalize_range(lo, hi)
    summary = {k: (float(f"{v:.7g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in summary.items()}
    return lo, hi, summary
