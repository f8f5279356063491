"""Sliding windows for Conv and pooling on integer tensors (N, C, *spatial)."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from edgeq.reference._kernel import attr

__all__ = ["PoolGeometry", "geometry", "windows"]


class PoolGeometry:
    def __init__(self, kernel, strides, dilations, pads):
        self.kernel, self.strides, self.dilations, self.pads = kernel, strides, dilations, pads


def geometry(node: ir.Node, kernel: tuple[int, ...], spatial_in: tuple[int, ...]) -> PoolGeometry:
    """Kernel, strides, dilations and explicit pads, resolving auto_pad."""
    from edgeq.errors import UnsupportedError

    n = len(kernel)
    strides = tuple(attr(node, "strides", None) or (1,) * n)
    dilations = tuple(attr(node, "dilations", None) or (1,) * n)
    pads = list(attr(node, "pads", None) or (0,) * (2 * n))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if attr(node, "ceil_mode", 0):
        raise UnsupportedError(f"{node.op_type} {node.name!r}: ceil_mode=1 is not supported")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(n):
            out = math.ceil(spatial_in[i] / strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial_in[i], 0)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + n] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    return PoolGeometry(tuple(kernel), strides, dilations, tuple(pads))


def windows(x: np.ndarray, geo: PoolGeometry, pad_value: int) -> np.ndarray:
    """``(N, C, *out, *kernel)`` view of ``x`` padded with ``pad_value``."""
    n = len(geo.kernel)
    pad = [(0, 0), (0, 0)] + [(geo.pads[i], geo.pads[i + n]) for i in range(n)]
    xp = np.pad(x, pad, constant_values=pad_value)
    span = tuple((k - 1) * d + 1 for k, d in zip(geo.kernel, geo.dilations))
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + n)))
    index = (slice(None), slice(None))
    index += tuple(slice(None, None, s) for s in geo.strides)
    index += tuple(slice(None, None, d) for d in geo.dilations)
    return win[index]
