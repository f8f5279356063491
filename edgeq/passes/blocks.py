"""Block-wise weight quantization (numpy): int4 or int8 codes, one scale per block of the input
dimension, for weight-only layers (``passes/weight_only.py``).

    W [K, N]  ==>  codes [N, k_blocks, block] (uint8, 0..2^bits-1), scales [N, k_blocks],
                   zero points [N, k_blocks] (asymmetric) or the mid level (symmetric)
    W ~= (codes - zero_point) * scale, block by block along K (K padded with zeros to a whole block)

1. Asymmetric (the default): each block's range is [min, max] shrunk toward the block's own
   zero by a clip ratio, the ratio chosen per block from ``CLIP_RATIOS`` by the squared error of
   the block's weights (round to nearest on that grid). The weights' outliers get clipped where
   that lowers the error of the rest: 16 levels are too few to spend on one large value.
2. Symmetric: zero point fixed at the mid level (8 for 4 bits, 128 for 8), scale = ratio x
   max|w| / (2^(bits-1) - 1), the ratio chosen the same way; codes use levels 1..15 (and 0 where
   the block's negative extreme needs it).
3. A block of zeros gets scale 1 and codes at the zero point: it dequantizes to zeros exactly.

This is round to nearest on an error-chosen grid (no data); layouts follow onnxruntime's
MatMulNBits (codes along K, low nibble first) and ONNX DequantizeLinear with ``block_size``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["BlockQuantized", "quantize_blocks", "pack_nibbles", "CLIP_RATIOS"]

CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)  # (1) shrink factors of the block range tried


@dataclasses.dataclass(frozen=True)
class BlockQuantized:
    codes: np.ndarray  # [N, k_blocks, block] uint8 in [0, 2^bits - 1]
    scales: np.ndarray  # [N, k_blocks] float32
    zero_points: np.ndarray  # [N, k_blocks] uint8 (the mid level everywhere when symmetric)
    bits: int
    block: int
    k: int  # K before padding
    symmetric: bool

    def dequantized(self) -> np.ndarray:
        """W as the runtime computes it: [K, N] float32."""
        w = (self.codes.astype(np.float32) - self.zero_points[..., None]) * self.scales[..., None]
        n = w.shape[0]
        return np.ascontiguousarray(w.reshape(n, -1)[:, : self.k].T)

    def stored_bytes(self) -> int:
        """Bytes of codes, scales and zero points as stored (codes and zero points packed)."""
        codes = self.codes.size * self.bits // 8
        zeros = 0 if self.symmetric else -(-self.zero_points.size * self.bits // 8)
        return codes + self.scales.size * 4 + zeros


def _blocks(weight: np.ndarray, block: int) -> np.ndarray:
    k, n = weight.shape
    k_blocks = -(-k // block)
    padded = np.zeros((k_blocks * block, n), np.float32)
    padded[:k] = weight
    return np.ascontiguousarray(padded.T.reshape(n, k_blocks, block))


def _grid(lo: np.ndarray, hi: np.ndarray, qmax: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    if symmetric:
        mid = (qmax + 1) // 2
        scale = np.maximum(np.abs(lo), np.abs(hi)) / (mid - 1)
        return np.where(scale > 0, scale, 1.0).astype(np.float32), np.full(scale.shape, mid, np.float32)
    scale = (hi - lo) / qmax
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # (3)
    zero = np.clip(np.round(-lo / scale), 0, qmax)
    return scale, zero


def _round(blocks: np.ndarray, scale: np.ndarray, zero: np.ndarray, qmax: int) -> np.ndarray:
    return np.clip(np.round(blocks / scale[..., None]) + zero[..., None], 0, qmax)


def quantize_blocks(weight: np.ndarray, bits: int = 4, block: int = 32, symmetric: bool = False,
                    ratios: tuple[float, ...] = CLIP_RATIOS) -> BlockQuantized:
    """``weight`` [K, N] quantized in blocks of ``block`` along K (see the module docstring)."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    weight = np.asarray(weight, np.float32)
    k = weight.shape[0]
    blocks = _blocks(weight, block)
    qmax = 2**bits - 1
    lo = np.minimum(blocks.min(axis=-1), 0.0)
    hi = np.maximum(blocks.max(axis=-1), 0.0)
    best_err = np.full(lo.shape, np.inf, np.float32)
    best_scale = np.ones(lo.shape, np.float32)
    best_zero = np.zeros(lo.shape, np.float32)
    for ratio in ratios:  # (1), (2)
        scale, zero = _grid(lo * ratio, hi * ratio, qmax, symmetric)
        codes = _round(blocks, scale, zero, qmax)
        err = np.square((codes - zero[..., None]) * scale[..., None] - blocks).sum(axis=-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
    codes = _round(blocks, best_scale, best_zero, qmax).astype(np.uint8)
    return BlockQuantized(codes, best_scale.astype(np.float32), best_zero.astype(np.uint8), bits, block, k, symmetric)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 codes in [0, 15] along the last axis (even length) -> bytes, the first of each pair
    in the low nibble (onnxruntime's MatMulNBits layout)."""
    codes = np.asarray(codes, np.uint8)
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], 1), np.uint8)], axis=-1)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
