"""Numpy helpers to quantize weights and biases (shared by the static and dynamic passes).

    with reuse_quantized_weights():   # a search building many variants of one float model
        ... quantize_weight(w, axis) ...  # the same read-only array, axis and min_scale: one result

The reuse is keyed on the memory the array reads, so it applies to read-only arrays only
(``graph.freeze_constants``: no pass can change them under the key), and lasts as long as the
``with`` block (a context variable: nothing outlives the search).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["QuantizedWeight", "quantize_weight", "limit_pairs", "paired_qmax", "PAIR_QMAX", "weight_qmax", "QMAX", "REDUCED_QMAX", "note_reduced", "quantize_bias", "bias_safe_min_scale", "INT32_MAX",
           "reuse_quantized_weights", "gptq_rounding", "weight_key", "shared_result"]

INT32_MAX = 2**31 - 1
QMAX = 127  # int8 weights: symmetric levels in [-127, 127]
REDUCED_QMAX = 63  # 7 bits, where onnxruntime's u8s8 kernels saturate (runtime/cpu.py): 255 * 63 * 2 < 2^15

_REUSE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("edgeq_quantized_weights", default=None)
_GPTQ: contextvars.ContextVar[dict | None] = contextvars.ContextVar("edgeq_gptq_hessians", default=None)


@contextlib.contextmanager
def gptq_rounding(hessians: dict) -> Iterator[None]:
    """Within the block, a 2-D weight listed in ``hessians`` (``weight_key(array)`` -> ``X^T X`` of
    its layer's input) is rounded by GPTQ (``passes/gptq.py``) on its per-channel grid, instead of
    to the nearest level; weights not listed, and float layers (never quantized), are unchanged."""
    token = _GPTQ.set(hessians)
    try:
        yield
    finally:
        _GPTQ.reset(token)


def weight_key(array: np.ndarray) -> tuple:
    """The key ``gptq_rounding`` looks a weight up by: the memory it reads (a read-only array)."""
    return _where(np.asarray(array, dtype=np.float32))


@contextlib.contextmanager
def reuse_quantized_weights() -> Iterator[None]:
    """Within the block, ``quantize_weight`` of the same read-only array (and axis, min_scale)
    returns the same ``QuantizedWeight``, and its ``summary`` is computed once."""
    token = _REUSE.set({})
    try:
        yield
    finally:
        _REUSE.reset(token)


def shared_result(weight: np.ndarray, kind: str, compute: Callable[[np.ndarray], Any]) -> Any:
    """``compute(weight)``, computed once per read-only array and ``kind`` within
    ``reuse_quantized_weights`` (every call otherwise)."""
    cache = _REUSE.get()
    if cache is None or weight.flags.writeable:
        return compute(weight)
    key = (kind, _where(weight))
    if key not in cache:
        cache[key] = (weight, compute(weight))  # the array kept: its memory stays its own
    return cache[key][1]


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    values: np.ndarray  # int8, same shape as the weight
    scale: np.ndarray  # float32, [C] (per channel) or [] (per tensor)
    zero_point: np.ndarray  # int8 zeros, same shape as scale
    axis: int | None  # None for per tensor

    def dequantize(self) -> np.ndarray:
        scale = self.scale
        if self.axis is not None:
            shape = [1] * self.values.ndim
            shape[self.axis] = -1
            scale = scale.reshape(shape)
        return self.values.astype(np.float32) * scale

    def summary(self, weight: np.ndarray) -> dict:
        cache = _REUSE.get()
        key = ("summary", id(self), _where(weight))
        if cache is not None and key in cache:
            return dict(cache[key][2])
        out = self._summary(weight)
        if cache is not None and not weight.flags.writeable:
            cache[key] = (self, weight, out)
        return dict(out)

    def _summary(self, weight: np.ndarray) -> dict:
        return {
            "granularity": "per-tensor" if self.axis is None else f"per-channel:{self.axis}",
            "channels": int(self.scale.size),
            "scale_min": float(self.scale.min()),
            "scale_max": float(self.scale.max()),
            "max_abs_error": float(np.max(np.abs(weight - self.dequantize()))) if weight.size else 0.0,
        }


def _scale_shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def weight_qmax(config: Any) -> int:
    """The largest weight level for kernels that multiply uint8 activations by int8 weights:
    ``REDUCED_QMAX`` where ``config.reduce_range`` says so, or where it is None (the default), the
    provider is the CPU and this CPU's onnxruntime saturates 8-bit products (measured); else ``QMAX``.
    Depthwise convolutions, Gather tables and int16-activation MatMuls keep ``QMAX`` (no such kernel)."""
    reduce = getattr(config, "reduce_range", None)
    if reduce is None:
        from edgeq.runtime.cpu import int8_saturates

        reduce = getattr(config, "provider", "cpu") == "cpu" and int8_saturates()
    return REDUCED_QMAX if reduce else QMAX


def note_reduced(notes: list[str], config: Any) -> None:
    """Add (once) the report's note that weights of u8s8 kernels keep 7 bits, and why."""
    why = ("this CPU's onnxruntime saturates products of 8-bit weights (x86 without VNNI, measured); "
           "--no-reduce-range for a target with VNNI or ARM dot products" if getattr(config, "reduce_range", None) is None
           else "reduce_range (--reduce-range): for x86 CPUs without VNNI, whose onnxruntime kernels saturate "
                "products of 8-bit weights")
    note = f"weights of u8s8 kernels (Conv, MatMul, Gemm, LSTM) use 7 bits, [-63, 63]: {why}"
    if note not in notes:
        notes.append(note)


def quantize_weight(
    weight: np.ndarray, axis: int | None, *, min_scale: np.ndarray | None = None, qmax: int | np.ndarray = QMAX
) -> QuantizedWeight:
    """Symmetric int8 in [-qmax, qmax]: one scale per slice along ``axis`` (or one in all).

    ``min_scale`` raises the scale where needed (so that a bias stays within int32); ``qmax``:
    ``weight_qmax(config)`` for u8s8 kernels (7 bits where the CPU saturates 8-bit products), or
    one per slice along ``axis`` (``paired_qmax``).
    """
    weight = np.asarray(weight, dtype=np.float32)
    hessians = _GPTQ.get()
    hessian = None
    if hessians is not None and axis is not None and weight.ndim == 2 and not weight.flags.writeable:
        hessian = hessians.get(_where(weight))
        if hessian is not None and hessian.shape[0] != weight.shape[1 - axis % 2]:
            hessian = None
    cache = _REUSE.get()
    if cache is None or weight.flags.writeable:
        return _quantize_weight(weight, axis, min_scale, hessian, qmax)
    key = (_where(weight), axis, qmax if np.ndim(qmax) == 0 else np.asarray(qmax, np.int16).tobytes(),
           None if min_scale is None else (min_scale.shape, min_scale.astype(np.float32).tobytes()),
           None if hessian is None else id(hessian))
    if key not in cache:
        qw = _quantize_weight(weight, axis, min_scale, hessian, qmax)
        for array in (qw.values, qw.scale, qw.zero_point):
            if isinstance(array, np.ndarray):  # (a numpy scalar is immutable already)
                array.flags.writeable = False  # shared by every variant's model
        cache[key] = (weight, qw)  # the array kept: its memory stays its own
    return cache[key][1]


def _where(array: np.ndarray) -> tuple:
    """The memory an array reads (address, shape, strides, dtype): two views of one read-only
    buffer are one weight (``np.asarray(a, np.float32)`` may return a new view of ``a``)."""
    return (array.__array_interface__["data"][0], array.shape, array.strides, array.dtype.str)


def _quantize_weight(weight: np.ndarray, axis: int | None, min_scale: np.ndarray | None,
                     hessian: np.ndarray | None = None, qmax: int | np.ndarray = QMAX) -> QuantizedWeight:
    if axis is None:
        absmax = np.asarray(np.max(np.abs(weight)) if weight.size else 0.0, dtype=np.float32)
    else:
        axis = axis % weight.ndim
        reduce = tuple(i for i in range(weight.ndim) if i != axis)
        absmax = np.max(np.abs(weight), axis=reduce).astype(np.float32)
    top = np.asarray(qmax, np.float32)  # one level for all, or one per slice along ``axis``
    scale = np.where(absmax > 0, absmax / top, 1.0).astype(np.float32)
    if min_scale is not None:
        scale = np.maximum(scale, min_scale.astype(np.float32))
    if hessian is not None:  # [K, N] with the channels N along ``axis``
        from edgeq.passes.gptq import gptq_round

        rows = weight if axis == 1 else weight.T
        levels = gptq_round(rows, scale, hessian, pin=False, qmax=qmax)
        return QuantizedWeight(levels if axis == 1 else np.ascontiguousarray(levels.T), scale,
                               np.zeros(scale.shape, dtype=np.int8), axis)
    shaped = scale if axis is None else scale.reshape(_scale_shape(weight.ndim, axis))
    top = top if axis is None or top.ndim == 0 else top.reshape(_scale_shape(weight.ndim, axis))
    values = np.clip(np.rint(weight / shaped), -top, top).astype(np.int8)
    return QuantizedWeight(values, scale, np.zeros(scale.shape, dtype=np.int8), axis)


PAIR_QMAX = (127, 119, 111, 103, 95, 87, 79, 71, 63)  # the largest levels ``paired_qmax`` tries


def paired_qmax(weight: np.ndarray, limit: int) -> np.ndarray:
    """For each column of ``weight`` [K, N] (float), the largest level (of ``PAIR_QMAX``) whose
    grid, its same-sign pairs of rows 2i, 2i + 1 then held within ``limit`` (``limit_pairs``),
    leaves the least squared error: a column with a few large weights side by side gives up a
    little of its range rather than cut them (weight error over 36 MiniLM MatMuls: 8-bit grid
    -40.2 dB, limited pairs -37.5, this choice -40.1; tiny_transformer -43.4, -35.0, -43.2). A
    column with no pair to cut on the 127 grid keeps 127 (only the others are searched). Returns
    int16 [N]."""
    w = np.asarray(weight, np.float32)
    absmax = np.max(np.abs(w), axis=0)
    best = np.full(w.shape[1], PAIR_QMAX[0], np.int16)
    first = np.clip(np.rint(w / np.where(absmax > 0, absmax / PAIR_QMAX[0], 1.0)), -PAIR_QMAX[0], PAIR_QMAX[0])
    pairs = first[: w.shape[0] // 2 * 2].reshape(-1, 2, w.shape[1])
    cut = np.any((pairs[:, 0] * pairs[:, 1] > 0) & (np.abs(pairs[:, 0]) + np.abs(pairs[:, 1]) > limit), axis=0)
    if not cut.any():
        return best
    w, absmax = w[:, cut], absmax[cut]  # only the columns with a pair to cut
    chosen = np.full(w.shape[1], PAIR_QMAX[0], np.int16)
    best_err = np.full(w.shape[1], np.inf)
    for top in PAIR_QMAX:
        scale = np.where(absmax > 0, absmax / top, 1.0).astype(np.float32)
        levels = np.clip(np.rint(w / scale), -top, top).astype(np.int8)
        err = np.sum(np.square(limit_pairs(levels, limit).astype(np.float32) * scale - w), axis=0)
        better = err < best_err
        chosen, best_err = np.where(better, top, chosen).astype(np.int16), np.where(better, err, best_err)
    best[cut] = chosen
    return best


def limit_pairs(values: np.ndarray, limit: int) -> np.ndarray:
    """``values`` [K, N] (int8 levels) with every pair of same-sign levels in rows 2i, 2i + 1
    brought within ``limit`` in sum: the excess taken from both, the larger one's half first (the
    nearest such pair). A kernel that adds pairs of uint8 x int8 products in int16 is exact with
    them for activations up to 32767 // ``limit`` (runtime/cpu.py, per_token.py (2))."""
    v = np.asarray(values, np.int32)
    k = v.shape[0]
    padded = np.vstack([v, np.zeros((1, v.shape[1]), np.int32)]) if k % 2 else v.copy()
    pairs = padded.reshape(-1, 2, v.shape[1])
    a, b = pairs[:, 0], pairs[:, 1]
    excess = np.where(a * b > 0, np.maximum(np.abs(a) + np.abs(b) - limit, 0), 0)
    small, large = excess // 2, excess - excess // 2
    a_first = np.abs(a) >= np.abs(b)
    pairs[:, 0] = a - np.sign(a) * np.where(a_first, large, small)
    pairs[:, 1] = b - np.sign(b) * np.where(a_first, small, large)
    return pairs.reshape(-1, v.shape[1])[:k].astype(np.int8)


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias with scale ``input_scale * weight_scale`` (per channel); returns (values, scale)."""
    scale = (np.float32(input_scale) * weight_scale.astype(np.float32)).astype(np.float32)
    scale = np.broadcast_to(scale, bias.shape).astype(np.float32) if scale.ndim else scale
    values = np.rint(bias.astype(np.float64) / scale.astype(np.float64))
    return np.clip(values, -INT32_MAX, INT32_MAX).astype(np.int32), scale


def bias_safe_min_scale(bias: np.ndarray, input_scale: float, per_channel: bool) -> np.ndarray:
    """The smallest weight scale that keeps ``bias / (input_scale * w_scale)`` within int32."""
    need = np.abs(bias.astype(np.float64)) / (float(input_scale) * (INT32_MAX - 1))
    need = need * (1 + 1e-6)
    return (need if per_channel else np.asarray(need.max() if need.size else 0.0)).astype(np.float32)
