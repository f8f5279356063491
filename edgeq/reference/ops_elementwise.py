"""Element-wise integer ops, and QuantizeLinear / DequantizeLinear at the edges.

QLinearAdd follows TFLite's int8 Add: both inputs are shifted left by 20 bits, rescaled to a
common scale ``2 * max(s_a, s_b)``, summed, and rescaled to the output. QLinearMul uses one
multiplier ``s_a * s_b / s_y``. QLinearLeakyRelu uses two (identity and alpha) for alpha >= 0.
QLinearSigmoid (and LeakyRelu with a negative alpha) use a 256-entry table computed once at
compile time, as onnxruntime and TFLite do; running them is a lookup.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference._kernel import Context, Kernel, attr, describe, multipliers, register

__all__: list[str] = []

_I64 = np.int64
_LEFT_SHIFT = 20


@register("QuantizeLinear")
def _quantize(ctx: Context) -> Kernel:
    scale, zp = ctx.need(1, "y_scale"), ctx.const(2)
    zp = np.zeros((), np.uint8) if zp is None else zp
    axis = attr(ctx.node, "axis", 1)

    def fn(inputs):
        x = inputs[0]
        s, z = scale, zp
        if scale.size > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            s, z = scale.reshape(shape), zp.reshape(shape)
        info = np.iinfo(zp.dtype)
        y = np.rint(x.astype(np.float32) / s.astype(np.float32)) + z.astype(np.float32)
        return [np.clip(y, info.min, info.max).astype(zp.dtype)]

    return Kernel(fn)


@register("DequantizeLinear")
def _dequantize(ctx: Context) -> Kernel:
    scale, zp = ctx.need(1, "x_scale"), ctx.const(2)
    axis = attr(ctx.node, "axis", 1)

    def fn(inputs):
        x = inputs[0]
        s, z = scale, (0 if zp is None else zp)
        if scale.size > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            s, z = scale.reshape(shape), np.asarray(z).reshape(shape) if np.ndim(z) else z
        return [((x.astype(_I64) - np.asarray(z, _I64)).astype(np.float32) * s).astype(np.float32)]

    return Kernel(fn)


def requantize_kernel(dq: Context, q: Context) -> Kernel:
    """``DQ(s1, z1) -> Q(s2, z2)`` in fixed point: ``z2 + (x - z1) * s1 / s2``."""
    s1, z1 = dq.need(1, "x_scale"), dq.const(2)
    s2, z2 = q.need(1, "y_scale"), q.const(2)
    z1 = np.zeros((), _I64) if z1 is None else z1
    z2 = np.zeros((), np.uint8) if z2 is None else z2
    axis = attr(dq.node, "axis", 1)
    real = (s1.astype(np.float64) / s2.astype(np.float64)).ravel()
    mult, shift = multipliers(real)

    def fn(inputs):
        x = inputs[0].astype(_I64)
        m, s, z = mult, shift, z1.astype(_I64)
        if real.size > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            m, s, z = m.reshape(shape), s.reshape(shape), z.reshape(shape) if z.size > 1 else z
        return [q.requantize(x - z, m, s, int(z2), z2.dtype)]

    return Kernel(fn, {"x_zero_point": z1.ravel().tolist(), "y_zero_point": int(z2),
                       **describe(real, mult, shift)})


@register("QLinearAdd", domain="com.microsoft")
def _qlinear_add(ctx: Context) -> Kernel:
    sa, za = ctx.need(1, "A_scale"), ctx.need(2, "A_zero_point")
    sb, zb = ctx.need(4, "B_scale"), ctx.need(5, "B_zero_point")
    sy, zy = ctx.need(6, "C_scale"), ctx.need(7, "C_zero_point")
    twice_max = 2.0 * max(float(sa), float(sb))
    reals = np.array([float(sa) / twice_max, float(sb) / twice_max,
                      twice_max / ((1 << _LEFT_SHIFT) * float(sy))])
    mult, shift = multipliers(reals)

    def fn(inputs):
        a = (inputs[0].astype(_I64) - _I64(za)) << _LEFT_SHIFT
        b = (inputs[3].astype(_I64) - _I64(zb)) << _LEFT_SHIFT
        a = ctx.scale(a, mult[0], shift[0])
        b = ctx.scale(b, mult[1], shift[1])
        return [ctx.requantize(a + b, mult[2], shift[2], int(zy), zy.dtype)]

    return Kernel(fn, {"left_shift": _LEFT_SHIFT, "a_zero_point": int(za), "b_zero_point": int(zb),
                       "y_zero_point": int(zy), **describe(reals, mult, shift)})


@register("QLinearMul", domain="com.microsoft")
def _qlinear_mul(ctx: Context) -> Kernel:
    sa, za = ctx.need(1, "A_scale"), ctx.need(2, "A_zero_point")
    sb, zb = ctx.need(4, "B_scale"), ctx.need(5, "B_zero_point")
    sy, zy = ctx.need(6, "C_scale"), ctx.need(7, "C_zero_point")
    real = np.array(float(sa) * float(sb) / float(sy))
    mult, shift = multipliers(real)

    def fn(inputs):
        acc = (inputs[0].astype(_I64) - _I64(za)) * (inputs[3].astype(_I64) - _I64(zb))
        return [ctx.requantize(acc, mult, shift, int(zy), zy.dtype)]

    return Kernel(fn, {"a_zero_point": int(za), "b_zero_point": int(zb), "y_zero_point": int(zy),
                       **describe(real, mult, shift)})


def _table(ctx: Context, f) -> tuple[np.ndarray, int]:
    sx, zx = ctx.need(1, "X_scale"), ctx.need(2, "X_zero_point")
    sy, zy = ctx.need(3, "Y_scale"), ctx.need(4, "Y_zero_point")
    info = np.iinfo(zx.dtype)
    q = np.arange(info.min, info.max + 1, dtype=np.float64)
    y = np.rint(f((q - float(zx)) * float(sx)) / float(sy)) + float(zy)
    return np.clip(y, info.min, info.max).astype(zy.dtype), int(info.min)


def _lookup(table: np.ndarray, offset: int) -> Kernel:
    def fn(inputs):
        return [table[inputs[0].astype(_I64) - offset]]

    return Kernel(fn, {"table": table.tolist(), "table_offset": offset})


@register("QLinearSigmoid", domain="com.microsoft")
def _qlinear_sigmoid(ctx: Context) -> Kernel:
    return _lookup(*_table(ctx, lambda v: 1.0 / (1.0 + np.exp(-v))))


@register("QLinearLeakyRelu", domain="com.microsoft")
def _qlinear_leaky_relu(ctx: Context) -> Kernel:
    alpha = float(attr(ctx.node, "alpha", 0.01))
    if alpha < 0:
        return _lookup(*_table(ctx, lambda v: np.where(v >= 0, v, alpha * v)))
    sx, zx = ctx.need(1, "X_scale"), ctx.need(2, "X_zero_point")
    sy, zy = ctx.need(3, "Y_scale"), ctx.need(4, "Y_zero_point")
    reals = np.array([float(sx) / float(sy), alpha * float(sx) / float(sy)])
    mult, shift = multipliers(reals)

    def fn(inputs):
        x = inputs[0].astype(_I64) - _I64(zx)
        pos = ctx.requantize(x, mult[0], shift[0], int(zy), zy.dtype)
        neg = ctx.requantize(x, mult[1], shift[1], int(zy), zy.dtype)
        return [np.where(x >= 0, pos, neg)]

    return Kernel(fn, {"x_zero_point": int(zx), "y_zero_point": int(zy),
                       **describe(reals, mult, shift)})


def _integer_inputs(ctx: Context, inputs) -> None:
    from edgeq.errors import UnsupportedError

    for x in inputs:
        if x is not None and not np.issubdtype(x.dtype, np.integer):
            raise UnsupportedError(
                f"{ctx.node.op_type} {ctx.node.name!r} runs on float {x.dtype} inside the "
                "integer path: it is a float island, which the integer reference does not run"
            )


@register("Add", "Max", "Min")
def _integer_binary(ctx: Context) -> Kernel:
    op = {"Add": np.add, "Max": np.maximum, "Min": np.minimum}[ctx.node.op_type]

    def fn(inputs):
        _integer_inputs(ctx, inputs)
        out = inputs[0]
        for x in inputs[1:]:
            out = op(out, x)
        return [out.astype(inputs[0].dtype)]

    return Kernel(fn)


@register("Clip")
def _integer_clip(ctx: Context) -> Kernel:
    def fn(inputs):
        _integer_inputs(ctx, inputs)
        x = inputs[0]
        lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else np.iinfo(x.dtype).min
        hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.iinfo(x.dtype).max
        return [np.clip(x, lo, hi).astype(x.dtype)]

    return Kernel(fn)
