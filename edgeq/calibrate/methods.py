"""Range methods: turn an observer into the clipping range ``(lo, hi)`` and a small summary.

All work on the histogram of ``HistogramObserver`` with numpy, no per-element loops:

* ``percentile``: symmetric -> the ``p``-th percentile of ``|x|``, range ``[-t, t]``;
  asymmetric -> ``(100 - p) / 2`` % cut from each tail, or ``100 - p`` % from the far tail of a
  one-sided (e.g. post-ReLU) tensor. Linear interpolation inside a bin.
* ``entropy``: TensorRT's KL-divergence calibration (as in NVIDIA's pytorch-quantization, the
  first bin takes the second's count, so a spike of exact zeros does not decide). For a
  threshold bin count ``i >= levels``,
  P is the ``|x|`` histogram cut at ``i`` with the outliers added to its last bin, Q is P merged
  into ``levels`` groups and expanded back (each group's mass spread over its non-empty bins); the
  ``i`` minimizing KL(P||Q) gives ``t = i * width``. ``levels`` is 128 (a signed tensor, or a
  symmetric int8 target) or 256 for a non-negative tensor on an asymmetric 8-bit target (the
  one-sided form). Candidates: every 4th bin count; the minimum is taken on the KL curve averaged
  over +-16 bin counts, since on spiky histograms (few samples, discrete inputs) single candidates
  dip where bins happen to fall well into groups.
* ``mse``: the range minimizing the expected quantization MSE for the target dtype,
  ``step**2 / 12`` per value inside the range plus the squared clipping error outside it,
  over a grid of candidate ranges (256 thresholds ``[-t, t]`` when symmetric, 256 ``lo`` x 256
  ``hi`` otherwise); prefix sums over the histogram make each candidate O(1).

* ``tail``: min/max extrapolated to data calibration has not seen. Each batch's max (and min)
  is one draw of an extreme; a Gumbel fitted to them by moments (``beta = sd * sqrt(6) / pi``,
  ``mu = mean - 0.5772 beta``) gives ``mean + beta * ln(2 n)``, the expected max over twice the
  ``n`` batches seen; the range is widened to it where it lies beyond the max seen (never
  narrowed). 32 samples' maxima understate the next 100's: resnet224's late layers reached 1.75x
  their calibrated max on unseen photos, and clipping those few samples cost 5 dB of the output
  SQNR over all of them. The widening costs resolution on every sample: it pays on some models
  and not on others (docs/calibration.md, ``bench/tail_ranges.py``), so it is an option, not a
  default, and auto does not try it.

Every method but ``tail`` returns a range inside ``[min, max]``; ``finalize_range`` then makes sure it is not
degenerate (a constant tensor gets a range that includes 0, an all-zero one ``[-eps, eps]``).
The quantizer is expected to extend the range to include 0 as usual.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeq.calibrate.observers import HistogramObserver, MinMaxObserver

__all__ = ["choose_range", "finalize_range", "percentile_range", "entropy_range", "mse_range", "tail_range", "EPS"]

EPS = 2.0**-20
_KL_STRIDE = 4  # candidate bin counts: levels, levels + 4, ...
_KL_SMOOTH = 8  # KL is averaged over this many neighbouring candidates (+-16 bin counts)

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
    """KL(P||Q) for each threshold bin count ``i`` in ``candidates`` (TensorRT's definition).

    P: ``hist[:i]`` with the outliers ``hist[i:]`` added to its last bin. Q: ``hist[:i]`` (no
    outliers) merged into ``levels`` groups, each group's mass spread evenly over the bins where P
    is non-zero; where that leaves Q zero under P's outliers, Q is ``eps`` (MXNet/TVM smoothing).
    Within a group Q is constant, so ``sum p log q`` is a per-group sum: with prefix sums of
    ``h``, ``h > 0`` and ``h log h`` this costs O(candidates x levels), not x bins.
    """
    total = hist.sum()
    cum = np.concatenate([[0.0], np.cumsum(hist)])
    cum_nonzero = np.concatenate([[0.0], np.cumsum(hist > 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        cum_hlogh = np.concatenate([[0.0], np.cumsum(np.where(hist > 0, hist * np.log(hist), 0.0))])
    i = candidates.astype(np.int64)
    edges = (np.arange(levels + 1)[None, :] * i[:, None] + levels - 1) // levels  # group starts; last == i
    group_sum = cum[edges[:, 1:]] - cum[edges[:, :-1]]  # C x levels, without outliers
    group_cnt = cum_nonzero[edges[:, 1:]] - cum_nonzero[edges[:, :-1]]
    tail = total - cum[i]
    last = hist[i - 1]
    group_cnt[:, -1] += (last == 0) & (tail > 0)  # the outliers make P's last bin non-zero
    p_last = last + tail
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = cum_hlogh[i - 1] + np.where(p_last > 0, p_last * np.log(p_last), 0.0)
        q = np.where(group_cnt > 0, group_sum / np.maximum(group_cnt, 1), 0.0)
        log_q = np.log(np.where(q > 0, q, 1.0))
    p_mass = group_sum.copy()
    p_mass[:, -1] += tail
    plogq = (p_mass * log_q).sum(axis=1)
    smoothed = (group_sum[:, -1] <= 0) & (tail > 0)
    plogq = np.where(smoothed, plogq + tail * math.log(eps), plogq)
    q_sum = cum[i] + np.where(smoothed, eps, 0.0)
    return (plogp - plogq) / total + np.log(q_sum / total)


def entropy_range(obs: HistogramObserver, activations: str, symmetric: bool) -> tuple[float, float, dict[str, Any]]:
    hist, width = obs.abs_histogram()
    hist = hist.copy()
    hist[0] = hist[1]  # as pytorch-quantization: 0 is exact in any range, so a spike of zeros
    # (post-ReLU) must not steer the threshold; left in, it drives KL to the smallest candidate
    n = hist.size
    one_sided = obs.min >= 0.0 and not symmetric
    levels = 256 if one_sided else 128
    if activations == "int16":
        levels = n  # finer than the histogram: KL cannot beat no clipping
    amax = obs.max if one_sided else max(-obs.min, obs.max)
    if levels >= n or hist.sum() == 0:
        return max(-amax, obs.min), min(amax, obs.max), {"threshold": amax, "levels": levels}
    candidates = np.arange(levels, n + 1, _KL_STRIDE)
    kl = _kl_candidates(hist, candidates, levels)
    # KL of a spiky histogram (few samples, discrete inputs) jumps from one bin count to the
    # next; a lone dip there is an artefact of how bins fall into groups, not a good range.
    # Take the minimum of the curve averaged over +-16 bin counts.
    half = min(_KL_SMOOTH // 2, (kl.size - 1) // 2)
    padded = np.pad(kl, half, mode="edge")
    smooth = np.convolve(padded, np.full(2 * half + 1, 1.0 / (2 * half + 1)), mode="valid")
    best = int(np.argmin(smooth))
    t = min(int(candidates[best]) * width, amax)
    return max(-t, obs.min), min(t, obs.max), {"threshold": t, "levels": levels, "kl": float(kl[best])}


def _tail_errors(counts: np.ndarray, centers: np.ndarray, bounds: np.ndarray, upper: bool) -> tuple[np.ndarray, np.ndarray]:
    """Clipping error ``sum n (c - bound)**2`` and count of the bins beyond each bound."""
    s0 = np.concatenate([[0.0], np.cumsum(counts)])
    s1 = np.concatenate([[0.0], np.cumsum(counts * centers)])
    s2 = np.concatenate([[0.0], np.cumsum(counts * centers**2)])
    if upper:  # bins with center > bound
        k = np.searchsorted(centers, bounds, side="right")
        n, m1, m2 = s0[-1] - s0[k], s1[-1] - s1[k], s2[-1] - s2[k]
    else:  # bins with center < bound
        k = np.searchsorted(centers, bounds, side="left")
        n, m1, m2 = s0[k], s1[k], s2[k]
    return np.maximum(m2 - 2.0 * bounds * m1 + bounds**2 * n, 0.0), n


def mse_range(
    obs: HistogramObserver, activations: str, symmetric: bool, candidates: int = 256
) -> tuple[float, float, dict[str, Any]]:
    levels = _LEVELS[activations]
    frac = np.arange(1, candidates + 1) / candidates
    if symmetric:
        counts, width = obs.abs_histogram()
        centers = (np.arange(counts.size) + 0.5) * width
        t = max(-obs.min, obs.max) * frac
        clip_err, n_out = _tail_errors(counts, centers, t, upper=True)
        step = 2.0 * t / (levels - 1)
        err = (counts.sum() - n_out) * step**2 / 12.0 + clip_err
        tb = float(t[int(np.argmin(err))])
        return max(-tb, obs.min), min(tb, obs.max), {"threshold": tb}
    counts, width = obs.signed_histogram()
    centers = -obs.radius + (np.arange(counts.size) + 0.5) * width
    lo_c = min(obs.min, 0.0) * frac  # A candidates
    hi_c = max(obs.max, 0.0) * frac  # B candidates
    low_err, n_low = _tail_errors(counts, centers, lo_c, upper=False)
    high_err, n_high = _tail_errors(counts, centers, hi_c, upper=True)
    step = (hi_c[None, :] - lo_c[:, None]) / (levels - 1)  # A x B
    n_in = counts.sum() - n_low[:, None] - n_high[None, :]
    err = low_err[:, None] + high_err[None, :] + n_in * step**2 / 12.0
    a, b = np.unravel_index(int(np.argmin(err)), err.shape)
    lo, hi = float(lo_c[a]), float(hi_c[b])
    return max(lo, obs.min), min(hi, obs.max), {"lo_threshold": lo, "hi_threshold": hi}


TAIL_HORIZON = 2.0  # ``tail``: the expected max over this many times the batches seen


def _gumbel_beyond(moments: Any, seen: float) -> float:
    """The expected max over ``TAIL_HORIZON * n`` draws of a Gumbel fitted to ``n`` batch
    extremes by moments, or ``seen`` where that is not beyond it (or there are under 4)."""
    if moments.count < 4:
        return seen
    beta = moments.std * math.sqrt(6.0) / math.pi
    # Gumbel(mu, beta) with mu = mean - EULER * beta: the max of k draws is Gumbel(mu + beta ln k,
    # beta), whose mean is mu + beta (ln k + EULER) = mean + beta ln k
    expected = moments.mean + beta * math.log(TAIL_HORIZON * moments.count)
    return max(seen, expected) if math.isfinite(expected) else seen


def tail_range(obs: MinMaxObserver) -> tuple[float, float, dict[str, Any]]:
    hi = _gumbel_beyond(obs.batch_max, obs.max) if obs.max > 0 else obs.max
    lo = -_gumbel_beyond(obs.batch_neg_min, -obs.min) if obs.min < 0 else obs.min
    summary = {"batches": obs.batch_max.count}
    if obs.max > 0:
        summary["hi_widened"] = hi / obs.max
    if obs.min < 0:
        summary["lo_widened"] = lo / obs.min
    return lo, hi, summary


def choose_range(obs: MinMaxObserver, method: str, *, percentile: float = 99.99, activations: str = "uint8", symmetric: bool = False) -> tuple[float, float, dict[str, Any]]:
    """``(lo, hi, summary)`` for ``obs`` by ``method`` (minmax | percentile | entropy | mse | tail)."""
    if method == "tail" and obs.min != obs.max:
        lo, hi, summary = tail_range(obs)
    elif method == "minmax" or not isinstance(obs, HistogramObserver) or obs.min == obs.max:
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
    if lo > hi:  # all data beyond a threshold on one side: the range is [0, t] (or [-t, 0])
        lo, hi = (hi, hi) if obs.min > 0 else (lo, lo)
    lo, hi = finalize_range(lo, hi)
    summary = {k: (float(f"{v:.7g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in summary.items()}
    return lo, hi, summary
