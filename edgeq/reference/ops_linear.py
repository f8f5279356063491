"""Conv, MatMul and Gemm in integer form: int32 accumulation, fixed-point requantization.

QLinearConv / QLinearMatMul / QGemm: ``acc = sum((x - zx) * (w - zw)) [+ bias]`` (by shifts where
every constant weight level is 0 or +-2^e: ``shifts.py``) then
``y = zy + MultiplyByQuantizedMultiplier(acc, M)`` with ``M = s_x * s_w / s_y`` (per output
channel when the weight is). ConvInteger / MatMulInteger return the int32 accumulator.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference._kernel import Context, Kernel, attr, describe, multipliers, register
from edgeq.reference._windows import geometry, windows
from edgeq.reference.shifts import describe as describe_pot
from edgeq.reference.shifts import planes, shifted

__all__: list[str] = []

_I64 = np.int64


def _conv_acc(x: np.ndarray, w: np.ndarray, ctx: Context) -> np.ndarray:
    """Integer convolution of zero-point-free operands; int64 accumulator (N, M, *out)."""
    node = ctx.node
    group = attr(node, "group", 1)
    n_sp = w.ndim - 2
    geo = geometry(node, tuple(w.shape[2:]), tuple(x.shape[2:]))
    win = windows(x, geo, 0)  # (N, C, *out, *k)
    n, c = x.shape[:2]
    out_sp = win.shape[2 : 2 + n_sp]
    m = w.shape[0]
    cg, og = c // group, m // group
    win = win.reshape(n, group, cg, *out_sp, -1)
    wg = w.reshape(group, og, cg, -1)
    flat = win.reshape(n, group, cg, -1, win.shape[-1])  # (n, g, cg, P, K)
    acc = np.einsum("ngcpk,gock->ngop", flat, wg, optimize=True)
    return acc.reshape(n, m, *out_sp)


def _bias_shape(acc: np.ndarray, axis: int) -> tuple[int, ...]:
    shape = [1] * acc.ndim
    shape[axis] = -1
    return tuple(shape)


@register("QLinearConv")
def _qlinear_conv(ctx: Context) -> Kernel:
    sx, zx = ctx.need(1, "x_scale"), ctx.need(2, "x_zero_point")
    w, sw, zw = ctx.need(3, "w"), ctx.need(4, "w_scale"), ctx.need(5, "w_zero_point")
    sy, zy = ctx.need(6, "y_scale"), ctx.need(7, "y_zero_point")
    bias = ctx.const(8)
    real = (sx.astype(np.float64) * sw.astype(np.float64) / sy.astype(np.float64)).ravel()
    mult, shift = multipliers(real)
    wz = w.astype(_I64) - zw.astype(_I64).reshape(-1, *([1] * (w.ndim - 1)))
    zy_dtype = zy.dtype
    pot = planes(wz)  # levels 0 and +-2^e: shifts (shifts.py)

    def fn(inputs):
        x = inputs[0].astype(_I64) - _I64(zx)
        acc = _conv_acc(x, wz, ctx) if pot is None else shifted(lambda signs: _conv_acc(x, signs, ctx), pot)
        if bias is not None:
            acc = acc + bias.astype(_I64).reshape(_bias_shape(acc, 1))
        shape = _bias_shape(acc, 1)
        return [ctx.requantize(acc, mult.reshape(shape), shift.reshape(shape), int(zy), zy_dtype)]

    return Kernel(fn, {"x_zero_point": int(zx), "y_zero_point": int(zy), **describe(real, mult, shift),
                       **(describe_pot(pot) if pot is not None else {})})


@register("ConvInteger")
def _conv_integer(ctx: Context) -> Kernel:
    w = ctx.need(1, "w")
    zx = ctx.const(2)
    zw = ctx.const(3)
    wz = w.astype(_I64) - (0 if zw is None else zw.astype(_I64).reshape(-1, *([1] * (w.ndim - 1))))

    def fn(inputs):
        x = inputs[0].astype(_I64) - (0 if zx is None else _I64(zx))
        return [np.clip(_conv_acc(x, wz, ctx), -(2**31), 2**31 - 1).astype(np.int32)]

    return Kernel(fn)


def _matmul_operands(a, za, b, zb):
    a = a.astype(_I64) - za.astype(_I64)
    b = b.astype(_I64) - zb.astype(_I64)  # per-column zb broadcasts over the last axis
    return a, b


@register("QLinearMatMul")
def _qlinear_matmul(ctx: Context) -> Kernel:
    sa, za = ctx.need(1, "a_scale"), ctx.need(2, "a_zero_point")
    sb, zb = ctx.need(4, "b_scale"), ctx.need(5, "b_zero_point")
    sy, zy = ctx.need(6, "y_scale"), ctx.need(7, "y_zero_point")
    real = (sa.astype(np.float64) * sb.astype(np.float64) / sy.astype(np.float64)).ravel()
    mult, shift = multipliers(real)

    def fn(inputs):
        a, b = _matmul_operands(inputs[0], za, inputs[3], zb)
        acc = np.matmul(a, b)
        return [ctx.requantize(acc, mult, shift, int(zy), zy.dtype)]

    return Kernel(fn, {"a_zero_point": int(za), "y_zero_point": int(zy), **describe(real, mult, shift)})


@register("MatMulInteger")
def _matmul_integer(ctx: Context) -> Kernel:
    za = ctx.const(2)
    zb = ctx.const(3)

    def fn(inputs):
        a, b = _matmul_operands(inputs[0], np.zeros(()) if za is None else za,
                                inputs[1], np.zeros(()) if zb is None else zb)
        return [np.clip(np.matmul(a, b), -(2**31), 2**31 - 1).astype(np.int32)]

    return Kernel(fn)


@register("QGemm", domain="com.microsoft")
def _qgemm(ctx: Context) -> Kernel:
    node = ctx.node
    sa, za = ctx.need(1, "A_scale"), ctx.need(2, "A_zero_point")
    b, sb, zb = ctx.need(3, "B"), ctx.need(4, "B_scale"), ctx.need(5, "B_zero_point")
    c = ctx.const(6)
    sy, zy = ctx.const(7), ctx.const(8)
    alpha = float(attr(node, "alpha", 1.0))
    trans_a, trans_b = attr(node, "transA", 0), attr(node, "transB", 0)
    zb64 = zb.astype(_I64)
    bz = b.astype(_I64) - (zb64.reshape(-1, 1) if trans_b and zb.size > 1 else zb64)
    bz = bz.T if trans_b else bz
    pot = planes(bz)  # levels 0 and +-2^e: shifts (shifts.py)
    acc_scale = alpha * sa.astype(np.float64) * sb.astype(np.float64)

    def product(a: np.ndarray) -> np.ndarray:
        return np.matmul(a, bz) if pot is None else shifted(lambda signs: np.matmul(a, signs), pot)
    if sy is None:  # float output: the integer path ends here, like a DequantizeLinear
        def fn_float(inputs):
            a = inputs[0].astype(_I64) - _I64(za)
            acc = product(a.T if trans_a else a) + (0 if c is None else c.astype(_I64))
            return [(acc.astype(np.float64) * acc_scale.ravel()).astype(np.float32)]

        return Kernel(fn_float)
    real = (acc_scale / sy.astype(np.float64)).ravel()
    mult, shift = multipliers(real)

    def fn(inputs):
        a = inputs[0].astype(_I64) - _I64(za)
        acc = product(a.T if trans_a else a) + (0 if c is None else c.astype(_I64))
        return [ctx.requantize(acc, mult, shift, int(zy), zy.dtype)]

    return Kernel(fn, {"a_zero_point": int(za), "y_zero_point": int(zy), **describe(real, mult, shift),
                       **(describe_pot(pot) if pot is not None else {})})
