"""What every QOperator rule matches on: quantized inputs (``DQ -> op``) and outputs
(``op [-> Relu/Clip] -> Q``), read from constant scales and zero points.

Helpers return a ``str`` reason instead of raising when the pattern does not hold, so that the
report can say why a node stayed in float.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, const_array

__all__ = [
    "QInput",
    "QOutput",
    "dequantized",
    "quantized_output",
    "same_quant",
    "QUANT_DTYPES",
]

QUANT_DTYPES = (ir.DataType.UINT8, ir.DataType.INT8)
_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class QInput:
    """A quantized tensor that reaches an op through ``DequantizeLinear``."""

    dq: ir.Node
    value: ir.Value  # the integer tensor
    scale: ir.Value
    zero_point: ir.Value
    scale_array: np.ndarray
    zero_point_array: np.ndarray
    axis: int

    @property
    def dtype(self) -> ir.DataType:
        return ir.DataType.from_numpy(self.zero_point_array.dtype)

    @property
    def per_tensor(self) -> bool:
        return self.scale_array.size == 1 and self.zero_point_array.size == 1


@dataclasses.dataclass(frozen=True)
class QOutput:
    """An op output that is quantized by ``QuantizeLinear``, maybe through a folded Relu/Clip."""

    q: ir.Node
    value: ir.Value  # the Q output, which the rewrite replaces
    scale: ir.Value
    zero_point: ir.Value
    scale_array: np.ndarray
    zero_point_array: np.ndarray
    fused: tuple[ir.Node, ...]

    @property
    def dtype(self) -> ir.DataType:
        return ir.DataType.from_numpy(self.zero_point_array.dtype)

    @property
    def nodes(self) -> list[ir.Node]:
        return [*self.fused, self.q]


def _zero_point(graph: ir.Graph, node: ir.Node, idx: int) -> tuple[ir.Value, np.ndarray] | str:
    zp = node.inputs[idx] if len(node.inputs) > idx else None
    if zp is None:  # ONNX default: uint8 zero
        zp = add_initializer(graph, f"{node.name}_zero_point", np.array(0, np.uint8))
    array = const_array(zp)
    if array is None:
        return f"{node.op_type} {node.name!r} has a zero point that is not a constant"
    return zp, array


def dequantized(value: ir.Value | None, graph: ir.Graph) -> QInput | str:
    """``value`` as the output of a DequantizeLinear of a uint8/int8 tensor, or why not."""
    if value is None:
        return "input is missing"
    dq = value.producer()
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain not in ("", "ai.onnx"):
        return f"input {value.name!r} does not come from DequantizeLinear"
    scale = const_array(dq.inputs[1])
    if scale is None:
        return f"DequantizeLinear {dq.name!r} has a scale that is not a constant"
    zp = _zero_point(graph, dq, 2)
    if isinstance(zp, str):
        return zp
    dtype = ir.DataType.from_numpy(zp[1].dtype)
    if dtype not in QUANT_DTYPES:
        return f"input {value.name!r} is dequantized from {dtype}, not uint8/int8"
    if "block_size" in dq.attributes and dq.attributes["block_size"].as_int() > 0:
        return f"DequantizeLinear {dq.name!r} is blocked (block_size), which QOperator lacks"
    axis = dq.attributes["axis"].as_int() if "axis" in dq.attributes else 1
    return QInput(dq, dq.inputs[0], dq.inputs[1], zp[0], scale.astype(np.float32), zp[1], axis)


def _qrange(dtype: ir.DataType) -> tuple[int, int]:
    info = np.iinfo(dtype.numpy())
    return int(info.min), int(info.max)


def _foldable(act: ir.Node, scale: float, zp: int, dtype: ir.DataType) -> str | None:
    """None when ``act`` (Relu or Clip) is implied by the Q range, else why not."""
    qmin, qmax = _qrange(dtype)
    if zp != qmin:
        return f"{act.op_type} {act.name!r} is not folded: its Q range does not start at 0"
    if act.op_type == "Relu":
        return None
    lo = const_array(act.inputs[1]) if len(act.inputs) > 1 and act.inputs[1] is not None else None
    hi = const_array(act.inputs[2]) if len(act.inputs) > 2 and act.inputs[2] is not None else None
    if lo is not None and float(lo) > 0:
        return f"Clip {act.name!r} min is above 0"
    if hi is not None and scale * (qmax - qmin) > float(hi) * (1 + 1e-4):
        return f"Clip {act.name!r} max is inside the Q range, so it cannot be folded"
    return None


def quantized_output(value: ir.Value, graph: ir.Graph) -> QOutput | str:
    """``value -> [Relu | Clip ->] QuantizeLinear`` with per-tensor constants, or why not."""
    fused: list[ir.Node] = []
    while True:
        if value.is_graph_output():
            return f"output {value.name!r} is a graph output, not quantized"
        uses = list(value.uses())
        if len(uses) != 1:
            return f"output {value.name!r} has {len(uses)} consumers, not one QuantizeLinear"
        consumer = uses[0].node
        if consumer.op_type in ("Relu", "Clip") and consumer.domain == "" and not fused:
            fused.append(consumer)
            value = consumer.outputs[0]
            continue
        break
    if consumer.op_type != "QuantizeLinear":
        return f"output {value.name!r} feeds {consumer.op_type}, not QuantizeLinear"
    scale = const_array(consumer.inputs[1])
    if scale is None or scale.size != 1:
        return f"QuantizeLinear {consumer.name!r} needs a constant per-tensor scale"
    zp = _zero_point(graph, consumer, 2)
    if isinstance(zp, str):
        return zp
    if ir.DataType.from_numpy(zp[1].dtype) not in QUANT_DTYPES or zp[1].size != 1:
        return f"QuantizeLinear {consumer.name!r} is not per-tensor uint8/int8"
    for act in fused:
        reason = _foldable(act, float(scale), int(zp[1]), ir.DataType.from_numpy(zp[1].dtype))
        if reason:
            return reason
    return QOutput(
        consumer, consumer.outputs[0], consumer.inputs[1], zp[0],
        scale.astype(np.float32), zp[1], tuple(fused),
    )


def same_quant(a: QInput | QOutput, b: QInput | QOutput) -> bool:
    """Same dtype, scale and zero point (to a relative 1e-6)."""
    return (
        a.dtype == b.dtype
        and a.scale_array.size == 1
        and b.scale_array.size == 1
        and np.allclose(a.scale_array, b.scale_array, rtol=_RTOL, atol=0)
        and np.array_equal(a.zero_point_array.ravel(), b.zero_point_array.ravel())
    )


