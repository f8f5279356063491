"""The int32 tail shared by MatMulInteger and ConvInteger: ``acc [+ bias] -> DQ(s_x * s_w)``."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer
from edgeq.passes.qoperator._match import QInput

__all__ = ["dequantize_accumulator"]


def dequantize_accumulator(
    graph: ir.Graph, node: ir.Node, integer: ir.Node, x: QInput, w: QInput,
    bias: ir.Value | None, channel_axis: int, bias_shape: tuple[int, ...],
    also: ir.Node | None = None,
) -> None:
    """Replace ``node`` by ``integer`` followed by an int32 bias Add and a DequantizeLinear
    at scale ``s_x * s_w`` (per channel on ``channel_axis`` when ``w`` is per channel). A Q
    after ``node`` stays: the DQ -> Q pair is then a requantization. ``also``: a bias Add after
    ``node`` that the int32 Add replaces (its output is the one taken over)."""
    nodes = [integer]
    acc = integer.outputs[0]
    if bias is not None:
        b = bias.const_value.numpy().reshape(bias_shape)
        b_value = add_initializer(graph, f"{node.name}_bias_acc", b.astype(np.int32))
        nodes.append(ir.Node("", "Add", [acc, b_value], name=f"{node.name}_bias"))
        acc = nodes[-1].outputs[0]
    scale = (x.scale_array.astype(np.float64) * w.scale_array.astype(np.float64)).astype(np.float32)
    shape = scale.shape if scale.size > 1 else ()
    scale_v = add_initializer(graph, f"{node.name}_acc_scale", scale.reshape(shape))
    zp_v = add_initializer(graph, f"{node.name}_acc_zero_point", np.zeros(shape, np.int32))
    attrs = [ir.AttrInt64("axis", channel_axis)] if scale.size > 1 else []
    nodes.append(ir.Node("", "DequantizeLinear", [acc, scale_v, zp_v], attributes=attrs,
                         name=f"{node.name}_dequantize"))
    for n in nodes[:-1]:
        n.outputs[0].dtype = ir.DataType.INT32
    old = [node] if also is None else [node, also]
    ir.convenience.replace_nodes_and_values(
        graph, old[-1], old, nodes, [old[-1].outputs[0]], [nodes[-1].outputs[0]]
    )
