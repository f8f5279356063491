"""GPTQ rounding (Frantar et al. 2023) for the int8 weights of MatMul/Gemm, on edgeq's own grid.

    q = gptq_round(W, scale, H)       # W [K, N], one scale per column, H = sum X^T X over [K, K]

Rounding each weight to its nearest level ignores what the layer computes. GPTQ rounds the input
rows of ``W`` one at a time and spreads each row's rounding error over the rows not yet rounded,
weighted by the inverse of ``H = X^T X`` (X: the layer's calibration inputs): the error left is
the one that moves ``X W`` least. The grid is edgeq's: the per-column scale ``max|W[:, n]| / 127``
of the original weights, levels clipped to [-127, 127]. ``passes.weights.gptq_rounding`` makes
``quantize_weight`` round this way for the weights it lists (auto's GPTQ step); ``on_grid``
returns float weights on the grid, each column's largest level pinned to +-127 so that quantizing
them again finds the same scale and exactly these levels.

``DAMPING`` (0.3 of the mean diagonal) keeps ``H`` invertible and the rounding from fitting the
calibration tokens: with 0.01, MiniLM's FFN weights (K = 1536 from about 1000 tokens) scored
2-3 dB better on the calibration data than on new data; with 0.1-0.3 the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["gptq_round", "gptq_blocks", "on_grid", "DAMPING", "BLOCK"]

DAMPING = 0.3
BLOCK = 128  # rows rounded together before the rest is updated (lazy batch updates)


def _inverse_cholesky(h: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor of ``H^-1`` (what GPTQ walks row by row)."""
    k = h.shape[0]
    h = h.astype(np.float64).copy()
    dead = np.diag(h) <= 0  # an input channel that is always zero: its rows do not matter
    h[dead, dead] = 1.0
    h += DAMPING * float(np.mean(np.diag(h))) * np.eye(k)
    # With P the reversal, P H P = L L^T gives H^-1 = U^T U for U = P L^-1 P (upper, positive
    # diagonal: the Cholesky factor): one factorisation and a triangular inverse instead of a
    # general inverse and a second factorisation (MiniLM's K = 1536: 0.32 -> 0.13 s; equal to 1e-15)
    flipped = np.linalg.cholesky(h[::-1, ::-1])
    return _lower_inverse(flipped)[::-1, ::-1]


def _lower_inverse(lower: np.ndarray, block: int = 128) -> np.ndarray:
    """The inverse of a lower-triangular matrix by halves ([[A, 0], [B, C]]^-1 is
    [[A^-1, 0], [-C^-1 B A^-1, C^-1]]): a third of a general inverse's work."""
    n = lower.shape[0]
    if n <= block:
        return np.linalg.inv(lower)
    m = n // 2
    a, c = _lower_inverse(lower[:m, :m], block), _lower_inverse(lower[m:, m:], block)
    out = np.zeros_like(lower)
    out[:m, :m], out[m:, m:] = a, c
    out[m:, :m] = -(c @ lower[m:, :m]) @ a
    return out


def _gptq(weight: np.ndarray, hessian: np.ndarray, round_row: Callable[[int, np.ndarray], tuple]) -> np.ndarray:
    """The GPTQ walk shared by both grids: rows of ``weight`` [K, N] rounded in order by
    ``round_row(k, row) -> (codes, dequantized row)``, each row's error spread over the rows after
    it through the inverse Cholesky factor of ``hessian`` (lazy updates every ``BLOCK`` rows).
    Returns the codes [K, N] (float64)."""
    w = weight.astype(np.float64).copy()
    k, n = w.shape
    u = _inverse_cholesky(hessian)
    codes = np.zeros((k, n), dtype=np.float64)
    for start in range(0, k, BLOCK):
        end = min(start + BLOCK, k)
        rows = w[start:end].copy()
        errors = np.zeros_like(rows)
        ub = u[start:end, start:end]
        for i in range(end - start):
            code, dequantized = round_row(start + i, rows[i])
            codes[start + i] = code
            err = (rows[i] - dequantized) / ub[i, i]
            rows[i + 1:] -= np.outer(ub[i, i + 1:], err)
            errors[i] = err
        w[end:] -= u[start:end, end:].T @ errors
    return codes


def gptq_round(weight: np.ndarray, scale: np.ndarray, hessian: np.ndarray, *, pin: bool = True,
               qmax: int = 127) -> np.ndarray:
    """int8 levels of ``weight`` [K, N] for per-column ``scale`` [N], rounded by GPTQ against
    ``hessian`` [K, K]; with ``pin``, each column's largest level is +-qmax (module docstring;
    ``qmax`` 63 where the CPU saturates 8-bit products: ``passes.weights.weight_qmax``)."""
    n = weight.shape[1]
    s = np.where(scale > 0, scale, 1.0).astype(np.float64)

    def round_row(_k: int, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        level = np.clip(np.rint(row / s), -qmax, qmax)
        return level, level * s

    levels = _gptq(weight, hessian, round_row).astype(np.int32)
    if not pin:
        return levels.astype(np.int8)
    top = np.argmax(np.abs(weight), axis=0)  # pin each column's largest original weight to +-127
    cols = np.arange(n)
    live = np.abs(weight[top, cols]) > 0  # an all-zero column stays zero
    levels[top[live], cols[live]] = np.where(weight[top[live], cols[live]] < 0, -qmax, qmax)
    return levels.astype(np.int8)


def on_grid(weight: np.ndarray, hessian: np.ndarray, qmax: int = 127) -> np.ndarray:
    """Float weights ``[K, N]`` exactly on the int8 grid GPTQ chose: ``scale * levels``."""
    absmax = np.max(np.abs(weight), axis=0).astype(np.float32)
    scale = np.where(absmax > 0, absmax / float(qmax), 1.0).astype(np.float32)
    levels = gptq_round(weight, scale, hessian, qmax=qmax)
    return (levels.astype(np.float32) * scale[None, :]).astype(np.float32)


def gptq_blocks(weight: np.ndarray, grid: Any, hessian: np.ndarray) -> Any:
    """``grid`` (a ``passes.blocks.BlockQuantized`` of ``weight`` [K, N]: its scales and zero
    points per block of K) with its codes rounded by GPTQ against ``hessian`` [K, K] instead of to
    the nearest level: row k of ``W`` on the grid of its block, its error spread over the rows
    after it. The grid itself (chosen on the original weights) is kept."""
    import dataclasses

    k, n = weight.shape
    block, qmax = grid.block, 2**grid.bits - 1
    scales = grid.scales.astype(np.float64)  # [N, k_blocks]
    zeros = grid.zero_points.astype(np.float64)

    def round_row(row_k: int, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, z = scales[:, row_k // block], zeros[:, row_k // block]
        code = np.clip(np.rint(row / s) + z, 0, qmax)
        return code, (code - z) * s

    codes = _gptq(weight, hessian, round_row)
    k_blocks = grid.codes.shape[1]
    padded = np.zeros((k_blocks * block, n), np.float64)
    padded[:k] = codes
    padded[k:] = grid.zero_points.T.repeat(block, axis=0)[k:]  # padding rows stay at zero
    return dataclasses.replace(grid, codes=padded.T.reshape(n, k_blocks, block).astype(np.uint8))
