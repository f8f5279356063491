"""Ops that move or select integer values (exact), and QLinearConcat (per-input rescale)."""

from __future__ import annotations

import numpy as np

from edgeq.reference._kernel import Context, Kernel, attr, describe, multipliers, register

__all__: list[str] = []

_I64 = np.int64


def _axes(ctx: Context, inputs, idx: int) -> list[int] | None:
    if len(inputs) > idx and inputs[idx] is not None:
        return [int(a) for a in np.asarray(inputs[idx]).ravel()]
    a = attr(ctx.node, "axes", None)
    return None if a is None else list(a)


@register("Identity")
def _identity(ctx: Context) -> Kernel:
    return Kernel(lambda inputs: [inputs[0]])


@register("Reshape")
def _reshape(ctx: Context) -> Kernel:
    allowzero = attr(ctx.node, "allowzero", 0)

    def fn(inputs):
        x, shape = inputs[0], [int(d) for d in inputs[1]]
        if not allowzero:
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return [x.reshape(shape)]

    return Kernel(fn)


@register("Flatten")
def _flatten(ctx: Context) -> Kernel:
    axis = attr(ctx.node, "axis", 1)

    def fn(inputs):
        x = inputs[0]
        a = axis if axis >= 0 else axis + x.ndim
        return [x.reshape(int(np.prod(x.shape[:a])), -1)]

    return Kernel(fn)


@register("Transpose")
def _transpose(ctx: Context) -> Kernel:
    perm = attr(ctx.node, "perm", None)
    return Kernel(lambda inputs: [np.transpose(inputs[0], perm)])


@register("Squeeze")
def _squeeze(ctx: Context) -> Kernel:
    def fn(inputs):
        axes = _axes(ctx, inputs, 1)
        return [np.squeeze(inputs[0], axis=None if axes is None else tuple(axes))]

    return Kernel(fn)


@register("Unsqueeze")
def _unsqueeze(ctx: Context) -> Kernel:
    def fn(inputs):
        axes = _axes(ctx, inputs, 1)
        x = inputs[0]
        rank = x.ndim + len(axes)
        for a in sorted(a + rank if a < 0 else a for a in axes):
            x = np.expand_dims(x, a)
        return [x]

    return Kernel(fn)


@register("Slice")
def _slice(ctx: Context) -> Kernel:
    def fn(inputs):
        x = inputs[0]
        starts, ends = inputs[1].astype(_I64), inputs[2].astype(_I64)
        axes = _axes(ctx, inputs, 3) or list(range(len(starts)))
        steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else np.ones_like(starts)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[a] = slice(int(s), int(max(min(e, 2**62), -(2**62))), int(st))
        return [x[tuple(index)]]

    return Kernel(fn)


@register("Concat")
def _concat(ctx: Context) -> Kernel:
    axis = attr(ctx.node, "axis", 0)
    return Kernel(lambda inputs: [np.concatenate(inputs, axis=axis)])


@register("Shape")
def _shape(ctx: Context) -> Kernel:
    return Kernel(lambda inputs: [np.array(inputs[0].shape, _I64)])


@register("Gather")
def _gather(ctx: Context) -> Kernel:
    axis = attr(ctx.node, "axis", 0)
    return Kernel(lambda inputs: [np.take(inputs[0], inputs[1].astype(_I64), axis=axis)])


@register("QLinearConcat", domain="com.microsoft")
def _qlinear_concat(ctx: Context) -> Kernel:
    sy, zy = ctx.need(0, "Y_scale"), ctx.need(1, "Y_zero_point")
    n = (len(ctx.node.inputs) - 2) // 3
    scales = [ctx.need(2 + 3 * i + 1, "scale") for i in range(n)]
    zps = [ctx.need(2 + 3 * i + 2, "zero_point") for i in range(n)]
    reals = np.array([float(s) / float(sy) for s in scales])
    mult, shift = multipliers(reals)
    axis = attr(ctx.node, "axis", 0)

    def fn(inputs):
        parts = []
        for i in range(n):
            x = inputs[2 + 3 * i]
            if float(scales[i]) == float(sy) and int(zps[i]) == int(zy):
                parts.append(x.astype(zy.dtype))
            else:
                parts.append(ctx.requantize(x.astype(_I64) - _I64(zps[i]), mult[i], shift[i],
                                        int(zy), zy.dtype))
        return [np.concatenate(parts, axis=axis)]

    return Kernel(fn, {"x_zero_points": [int(z) for z in zps], "y_zero_point": int(zy),
                       **describe(reals, mult, shift)})
