"""Fidelity metrics between a reference output and a candidate (numpy only).

A bottom layer: the runtime (``edgeq.runtime.compare``), the report and auto mode all read
these, so it imports nothing of edgeq.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["sqnr_db", "power_ratio_db", "cosine", "max_abs_error", "max_rel_error", "top1_agreement", "fidelity", "normal_tail",
           "feature", "spread"]


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10*log10(|ref|^2 / |ref - cand|^2).

    ``inf`` when identical; ``-inf`` when the reference is all zeros but the candidate is not.
    """
    ref, cand = _f64(reference), _f64(candidate)
    return power_ratio_db(float(np.sum(ref**2)), float(np.sum((ref - cand) ** 2)))


def power_ratio_db(signal: float, noise: float) -> float:
    """``10*log10(signal / noise)`` of two energies: ``inf`` without noise, ``-inf`` without signal."""
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors (1.0 when both are zero)."""
    ref, cand = _f64(reference), _f64(candidate)
    denom = float(np.linalg.norm(ref) * np.linalg.norm(cand))
    if denom == 0.0:
        return 1.0 if not ref.any() and not cand.any() else 0.0
    return float(np.dot(ref, cand) / denom)


def max_abs_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref, cand = _f64(reference), _f64(candidate)
    return float(np.max(np.abs(ref - cand))) if ref.size else 0.0


def max_rel_error(reference: np.ndarray, candidate: np.ndarray, eps: float = 1e-6) -> float:
    """Max |ref - cand| / (|ref| + eps), with eps relative to the reference's scale."""
    ref, cand = _f64(reference), _f64(candidate)
    if not ref.size:
        return 0.0
    floor = eps * max(float(np.max(np.abs(ref))), 1e-12)
    return float(np.max(np.abs(ref - cand) / (np.abs(ref) + floor)))


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of rows whose argmax over the last axis agrees (for classifier logits)."""
    ref = np.asarray(reference).reshape(-1, np.asarray(reference).shape[-1])
    cand = np.asarray(candidate).reshape(-1, np.asarray(candidate).shape[-1])
    return float(np.mean(np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1)))


def fidelity(reference: np.ndarray, candidate: np.ndarray, *, top1: bool | None = None) -> dict[str, float]:
    """All metrics for one output, as a JSON-ready dict. ``top1``: whether the last axis is a
    class axis (logits); None guesses from the shape (callers that flatten outputs should say,
    from the output's rank: a (batch, classes) output yes, a map or hidden states no)."""
    out = {
        "sqnr_db": sqnr_db(reference, candidate),
        "cosine": cosine(reference, candidate),
        "max_abs_error": max_abs_error(reference, candidate),
    }
    if top1 is None:
        top1 = np.asarray(reference).ndim >= 1 and np.asarray(reference).shape[-1] > 1
    if top1 and np.asarray(reference).shape[-1] > 1:
        out["top1_agreement"] = top1_agreement(reference, candidate)
    return out


_FAR = 8.0  # beyond this many sigma the tail is nothing (Phi(-8) ~ 6e-16)


def normal_tail(z: np.ndarray) -> np.ndarray:
    """Phi(-z) elementwise (0 where z is far)."""
    out = np.zeros(z.shape, np.float64)
    near = z < _FAR
    out[near] = [0.5 * math.erfc(x / math.sqrt(2.0)) for x in z[near]]
    return out


def feature(feed: Mapping[str, np.ndarray]) -> float:
    """One number per sample to stratify on: the sum over inputs of log10 of the mean square."""
    total = 0.0
    for array in feed.values():
        a = np.asarray(array)
        if a.size and a.dtype.kind in "fiub":
            total += math.log10(float(np.mean(np.square(a, dtype=np.float64))) + 1e-30)
    return total


def spread(values: Sequence[float], k: int) -> list[int]:
    """``k`` indices spread evenly over the order of ``values`` (ties by position), the lowest
    and the highest included; returned in position order. All of them when ``k >= len(values)``."""
    n = len(values)
    if k >= n:
        return list(range(n))
    if k <= 1:
        return [sorted(range(n), key=lambda i: (values[i], i))[n // 2]] if k == 1 else []
    order = sorted(range(n), key=lambda i: (values[i], i))
    return sorted({order[round(j * (n - 1) / (k - 1))] for j in range(k)})
