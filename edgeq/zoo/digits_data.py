"""scikit-learn's digits as 1x32x32 normalized images, with a fixed train / held-out split.

numpy and scikit-learn only (no torch), so quantizing a zoo ONNX model does not need torch.
The split: a seeded shuffle of all 1,797 images, the last 30% held out for evaluation.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["SIZE", "MEAN", "STD", "HELDOUT_FRACTION", "split", "upsample", "calibration_data", "eval_data", "eval_labels"]

SIZE = 32
MEAN = 0.3  # of the [0, 1]-scaled pixels, rounded; fixed so the preprocessing is data-independent
STD = 0.32
HELDOUT_FRACTION = 0.3
_SPLIT_SEED = 0


@functools.cache
def _interp_matrix(src: int, dst: int) -> np.ndarray:
    """Bilinear (align_corners=False) interpolation as a (dst, src) matrix."""
    pos = (np.arange(dst) + 0.5) * src / dst - 0.5
    pos = np.clip(pos, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    matrix = np.zeros((dst, src))
    matrix[np.arange(dst), lo] += 1 - frac
    matrix[np.arange(dst), hi] += frac
    return matrix


def upsample(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) raw digits in 0..16 -> (N, 1, 32, 32) float32, bilinear, normalized."""
    a = _interp_matrix(images.shape[-1], SIZE)
    big = np.einsum("ij,njk,lk->nil", a, images / 16.0, a)
    return ((big - MEAN) / STD).astype(np.float32)[:, None]


@functools.cache
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, heldout_x, heldout_y): images (N, 1, 32, 32) float32, labels int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(digits.target))
    n_train = len(order) - int(round(HELDOUT_FRACTION * len(order)))
    images = upsample(digits.images[order])
    labels = digits.target[order].astype(np.int64)
    for array in (images, labels):
        array.setflags(write=False)
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


def _pick(count: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(count)[: min(n, count)]


def calibration_data(n: int = 32, seed: int = 0, input_name: str = "input") -> list[dict[str, np.ndarray]]:
    """``n`` training images (without replacement), batch 1 each."""
    x, _, _, _ = split()
    return [{input_name: x[i : i + 1].copy()} for i in _pick(len(x), n, seed)]


def eval_data(n: int = 200, seed: int = 1, input_name: str = "input") -> list[dict[str, np.ndarray]]:
    """``n`` held-out images (capped at the split size), batch 1 each."""
    _, _, x, _ = split()
    return [{input_name: x[i : i + 1].copy()} for i in _pick(len(x), n, seed)]


def eval_labels(n: int = 200, seed: int = 1) -> np.ndarray:
    """True labels of ``eval_data(n, seed)``, in the same order."""
    _, _, _, y = split()
    return y[_pick(len(y), n, seed)].copy()
