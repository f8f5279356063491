"""Checks shared by the weight-carrying rules (Conv, MatMul, Gemm): an int8/uint8 constant
weight with zero zero points, and an int32 bias whose scale is input scale x weight scale."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, const_array
from edgeq.passes.qoperator._match import QInput, dequantized

__all__ = ["weight_input", "bias_input"]


def weight_input(value: ir.Value, graph: ir.Graph, channels_axis: int) -> QInput | str:
    """A constant quantized weight, per-tensor or per-channel along ``channels_axis``."""
    w = dequantized(value, graph)
    if isinstance(w, str):
        return f"weight: {w}"
    if const_array(w.value) is None:
        return f"weight {w.value.name!r} is not a constant"
    if w.scale_array.size > 1:
        rank = len(w.value.shape) if w.value.shape is not None else None
        axis = w.axis + rank if (rank is not None and w.axis < 0) else w.axis
        if axis != channels_axis:
            return f"weight {w.value.name!r} is per-channel on axis {w.axis}, not {channels_axis}"
    if np.any(w.zero_point_array != w.zero_point_array.ravel()[0]):
        return f"weight {w.value.name!r} has per-channel zero points that differ"
    return w


def bias_input(
    value: ir.Value | None, graph: ir.Graph, x: QInput, w: QInput, name: str
) -> ir.Value | None | str:
    """The int32 bias for an integer op with accumulator scale ``x.scale * w.scale``.

    Case 1: ``int32 -> DQ(scale == s_x * s_w, zp 0)``: used as is.
    Case 2: any other constant bias (float, or a DQ with another scale): requantized here to
    ``round(b / (s_x * s_w))`` as a new int32 initializer.
    """
    if value is None:
        return None
    acc_scale = (x.scale_array.astype(np.float64) * w.scale_array.astype(np.float64)).ravel()
    dq = value.producer()
    if dq is not None and dq.op_type == "DequantizeLinear" and dq.inputs[0].dtype == ir.DataType.INT32:
        q = const_array(dq.inputs[0])
        scale = const_array(dq.inputs[1])
        zp = const_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else 0
        if q is None or scale is None:
            return f"bias {value.name!r} is not constant"
        if np.all(zp == 0) and np.allclose(scale.ravel(), acc_scale, rtol=1e-5, atol=0):
            return dq.inputs[0]
        real = (q.astype(np.float64) - zp) * scale.astype(np.float64)
    else:
        real = const_array(value)
        if real is None:
            return f"bias {value.name!r} is neither constant nor DequantizeLinear(int32)"
    bias = np.round(real.astype(np.float64) / acc_scale)
    if np.any(np.abs(bias) > 2**31 - 1):
        return f"bias {value.name!r} overflows int32 at scale s_x * s_w"
    return add_initializer(graph, f"{name}_bias_int32", bias.astype(np.int32))
