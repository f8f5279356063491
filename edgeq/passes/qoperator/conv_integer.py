"""``DQ(x) -> Conv(DQ(w), b)  ==>  ConvInteger [-> Add(int32 bias)] -> DQ(int32, s_x * s_w)``,
when QLinearConv does not apply (the output is not quantized by a single per-tensor Q).

1. Inputs as for QLinearConv; the weight zero point becomes one scalar.
2. A following Q stays: DQ(int32) -> Q is a requantization (fixed point in the reference).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer
from edgeq.passes.qoperator._integer_acc import dequantize_accumulator
from edgeq.passes.qoperator._match import dequantized
from edgeq.passes.qoperator._rule import Match, Rule, copy_attributes
from edgeq.passes.qoperator._weights import bias_input, weight_input

__all__ = ["ConvIntegerRule"]


class ConvIntegerRule(Rule):
    name = "ConvInteger"
    op_types = ("Conv",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        x = dequantized(node.inputs[0], graph)
        if isinstance(x, str):
            return x
        if not x.per_tensor:
            return "input x is not quantized per-tensor"
        w = weight_input(node.inputs[1], graph, channels_axis=0)
        if isinstance(w, str):
            return w
        if node.outputs[0].dtype not in (ir.DataType.FLOAT, None):
            return "output is not float32"
        b = bias_input(node.inputs[2] if len(node.inputs) > 2 else None, graph, x, w, node.name)
        if isinstance(b, str):
            return b
        return Match({"x": x, "w": w, "b": b})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        x, w, b = match["x"], match["w"], match["b"]
        w_zp = add_initializer(graph, f"{node.name}_w_zero_point",
                               np.array(w.zero_point_array.ravel()[0], w.zero_point_array.dtype))
        conv = ir.Node("", "ConvInteger", [x.value, w.value, x.zero_point, w_zp],
                       attributes=copy_attributes(node), name=node.name)
        spatial = len(node.outputs[0].shape) - 2 if node.outputs[0].shape is not None else 2
        dequantize_accumulator(graph, node, conv, x, w, b, 1, (-1,) + (1,) * spatial)
        return conv
