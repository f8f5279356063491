"""Codebooks for weights stored in N bits: k-means, uniform and power-of-two, and their packing.

    W [O, ...] (groups of output channels: rows of ``values`` [G, m])
      ==> codebook [G, 2^N] (fp16) + indices [G, m] < 2^N, packed as N bit planes [N, ceil(G*m/8)] uint8

1. ``kmeans``: 1-D k-means (Lloyd) per group, ``ITERATIONS`` rounds, started twice: at the
   quantiles (best for few levels) and at the uniform grid (2), which a Lloyd round never makes
   worse; each group keeps the run with the smaller squared error, so k-means is never worse
   than uniform at the same size. An empty cluster keeps its centre. Weights are bell-shaped:
   k-means puts more levels near 0 than a uniform grid does.
2. ``uniform``: 2^N levels evenly over the group's [min, max] (an asymmetric int-N grid with one
   scale and zero point per group): the baseline k-means must beat at the same size.
3. ``pot``: power-of-two levels ``{0, +-s 2^-e}``, e = 0 .. 2^(N-1) - 2, s = max |w| of the
   group (sign and exponent: shift-based integer kernels multiply by them with shifts).
4. Every codebook is rounded to fp16 (what is stored) before the assignment, so the indices are
   the nearest entries of the stored codebook.
5. Packing: bit plane b holds bit b of every index, 8 indices a byte (little bit order), so any
   N from 1 to 8 costs exactly N bits per weight plus the codebooks; ``unpack`` inverts it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCHEMES", "codebook", "assign", "pack", "unpack"]

SCHEMES = ("kmeans", "uniform", "pot")
ITERATIONS = 25  # (1)


def codebook(values: np.ndarray, bits: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(codebook [G, 2^bits] float16, indices [G, m] uint8) for ``values`` [G, m]."""
    values = np.asarray(values, np.float32)
    levels = 1 << bits
    if scheme == "uniform":  # (2)
        book = _uniform(values, levels)
    elif scheme == "pot":  # (3)
        scale = np.abs(values).max(axis=1, keepdims=True)
        powers = 2.0 ** -np.arange(levels // 2 - 1, dtype=np.float32)
        book = np.concatenate([np.zeros((1,), np.float32), powers, -powers,
                               np.zeros(levels - 1 - 2 * powers.size, np.float32)])[None, :] * scale
    elif scheme == "kmeans":  # (1)
        quantiles = np.quantile(values, (np.arange(levels) + 0.5) / levels, axis=1).T.astype(np.float32)
        runs = [_kmeans(values, start) for start in (quantiles, _uniform(values, levels))]
        errors = [_error(values, run) for run in runs]
        book = np.where((errors[0] <= errors[1])[:, None], runs[0], runs[1])
    else:
        raise ValueError(f"unknown codebook scheme {scheme!r}: one of {', '.join(SCHEMES)}")
    book = book.astype(np.float16)  # (4)
    return book, assign(values, book.astype(np.float32))


def assign(values: np.ndarray, book: np.ndarray) -> np.ndarray:
    """The index of the nearest codebook entry for each value (values [G, m], book [G, k]): one
    ``searchsorted`` over every group's midpoints, each group shifted apart by an offset."""
    groups, members = values.shape
    order = np.argsort(book, axis=1, kind="stable")
    ordered = np.take_along_axis(book, order, axis=1).astype(np.float64)
    span = float(max(np.abs(ordered).max(), np.abs(values).max(), 1e-30)) * 4.0
    shift = (np.arange(groups, dtype=np.float64) * span)[:, None]
    mids = ((ordered[:, 1:] + ordered[:, :-1]) / 2.0 + shift).ravel()
    rank = np.searchsorted(mids, (values.astype(np.float64) + shift).ravel()).reshape(groups, members)
    rank -= (np.arange(groups) * (book.shape[1] - 1))[:, None]
    return np.take_along_axis(order, rank, axis=1).astype(np.uint8)


def _uniform(values: np.ndarray, levels: int) -> np.ndarray:
    lo, hi = values.min(axis=1, keepdims=True), values.max(axis=1, keepdims=True)
    return (lo + (hi - lo) * (np.arange(levels, dtype=np.float32) / (levels - 1))).astype(np.float32)


def _error(values: np.ndarray, book: np.ndarray) -> np.ndarray:
    """Squared error per group of ``values`` on the fp16-rounded ``book`` (4)."""
    stored = book.astype(np.float16).astype(np.float32)
    rec = np.take_along_axis(stored, assign(values, stored).astype(np.int64), axis=1)
    return ((values - rec) ** 2).sum(axis=1)


def _kmeans(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(1) Lloyd on each group's sorted values: a round finds the cluster boundaries (one
    ``searchsorted`` of every group's midpoints) and the centres from cumulative sums, so it costs
    groups x levels, not the number of weights."""
    groups, members = values.shape
    levels = start.shape[1]
    ordered = np.sort(values.astype(np.float64), axis=1)
    sums = np.concatenate([np.zeros((groups, 1)), np.cumsum(ordered, axis=1)], axis=1)
    span = float(max(np.abs(ordered).max(), 1e-30)) * 4.0
    shift = (np.arange(groups, dtype=np.float64) * span)[:, None]
    flat = (ordered + shift).ravel()
    base = (np.arange(groups) * members)[:, None]
    rows = np.arange(groups)[:, None]
    book = np.sort(start.astype(np.float64), axis=1)
    for _ in range(ITERATIONS):
        mids = (book[:, 1:] + book[:, :-1]) / 2.0 + shift
        cuts = np.searchsorted(flat, mids.ravel()).reshape(groups, levels - 1) - base
        edges = np.concatenate([np.zeros((groups, 1), np.int64), np.clip(cuts, 0, members),
                                np.full((groups, 1), members, np.int64)], axis=1)
        counts = np.diff(edges, axis=1)
        totals = sums[rows, edges[:, 1:]] - sums[rows, edges[:, :-1]]
        moved = np.where(counts > 0, totals / np.maximum(counts, 1), book)
        if np.allclose(moved, book, rtol=0, atol=1e-9):
            break
        book = np.sort(moved, axis=1)
    return book.astype(np.float32)


def pack(indices: np.ndarray, bits: int) -> np.ndarray:
    """(5) ``indices`` (any shape, values < 2^bits) as bit planes [bits, ceil(n / 8)] uint8."""
    flat = np.asarray(indices, np.uint8).ravel()
    return np.stack([np.packbits((flat >> b) & 1, bitorder="little") for b in range(bits)])


def unpack(planes: np.ndarray, count: int) -> np.ndarray:
    """(5) The first ``count`` indices back from ``pack``'s planes."""
    bits = np.unpackbits(planes, axis=1, bitorder="little")[:, :count].astype(np.uint16)
    return (bits << np.arange(planes.shape[0], dtype=np.uint16)[:, None]).sum(axis=0).astype(np.uint8)
