"""Pooling on integer tensors: MaxPool (exact), QLinear[Global]AveragePool (sum of
``x - zx`` over the window, then one multiplier ``s_x / (s_y * window size)``)."""

from __future__ import annotations

import numpy as np

from edgeq.reference._kernel import Context, Kernel, attr, describe, multipliers, register
from edgeq.reference._windows import geometry, windows

__all__: list[str] = []

_I64 = np.int64


@register("MaxPool")
def _max_pool(ctx: Context) -> Kernel:
    kernel = tuple(attr(ctx.node, "kernel_shape"))

    def fn(inputs):
        x = inputs[0]
        geo = geometry(ctx.node, kernel, x.shape[2:])
        win = windows(x, geo, int(np.iinfo(x.dtype).min))
        axes = tuple(range(win.ndim - len(kernel), win.ndim))
        return [win.max(axis=axes).astype(x.dtype)]

    return Kernel(fn)


def _pool_scales(ctx: Context):
    sx, zx = ctx.need(1, "x_scale"), ctx.need(2, "x_zero_point")
    sy, zy = ctx.need(3, "y_scale"), ctx.need(4, "y_zero_point")
    return sx, zx, sy, zy


@register("QLinearGlobalAveragePool", domain="com.microsoft")
def _qlinear_gap(ctx: Context) -> Kernel:
    from edgeq.errors import UnsupportedError

    if attr(ctx.node, "channels_last", 0):
        raise UnsupportedError(f"QLinearGlobalAveragePool {ctx.node.name!r}: channels_last=1")
    sx, zx, sy, zy = _pool_scales(ctx)
    cache: dict[int, tuple] = {}

    def fn(inputs):
        x = inputs[0]
        count = int(np.prod(x.shape[2:]))
        if count not in cache:
            real = np.array(float(sx) / (float(sy) * count))
            cache[count] = (real, *multipliers(real))
        real, m, s = cache[count]
        acc = (x.astype(_I64) - _I64(zx)).sum(axis=tuple(range(2, x.ndim)), keepdims=True)
        return [ctx.requantize(acc, m, s, int(zy), zy.dtype)]

    real = np.array(float(sx) / float(sy))
    m, s = multipliers(real)
    return Kernel(fn, {"x_zero_point": int(zx), "y_zero_point": int(zy),
                       "note": "multiplier is s_x / s_y; divided by H*W at run time",
                       **describe(real, m, s)})


@register("QLinearAveragePool", domain="com.microsoft")
def _qlinear_avg_pool(ctx: Context) -> Kernel:
    from edgeq.errors import UnsupportedError

    kernel = tuple(attr(ctx.node, "kernel_shape"))
    if any(attr(ctx.node, "pads", None) or ()):
        raise UnsupportedError(f"QLinearAveragePool {ctx.node.name!r}: padding is not supported")
    sx, zx, sy, zy = _pool_scales(ctx)
    real = np.array(float(sx) / (float(sy) * int(np.prod(kernel))))
    m, s = multipliers(real)

    def fn(inputs):
        x = inputs[0]
        geo = geometry(ctx.node, kernel, x.shape[2:])
        win = windows(x.astype(_I64) - _I64(zx), geo, 0)
        axes = tuple(range(win.ndim - len(kernel), win.ndim))
        return [ctx.requantize(win.sum(axis=axes), m, s, int(zy), zy.dtype)]

    return Kernel(fn, {"x_zero_point": int(zx), "y_zero_point": int(zy), **describe(real, m, s)})
