"""``DQ(x) -> Conv(DQ(w), DQ(b)) [-> Relu|Clip] -> Q  ==>  QLinearConv``.

1. x: uint8/int8 per-tensor; w: constant int8/uint8, per-tensor or per output channel (axis 0)
   with equal zero points; b: int32 at scale s_x * s_w (else requantized, see ``bias_input``).
2. The output is quantized per-tensor; a Relu, or a Clip whose bounds contain the Q range, is
   folded when the Q range starts at real 0.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.passes.qoperator._match import dequantized, quantized_output
from edgeq.passes.qoperator._rule import Match, Rule, copy_attributes, replace_with
from edgeq.passes.qoperator._weights import bias_input, weight_input

__all__ = ["QLinearConvRule"]


class QLinearConvRule(Rule):
    name = "QLinearConv"
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
        out = quantized_output(node.outputs[0], graph)
        if isinstance(out, str):
            return out
        b = bias_input(node.inputs[2] if len(node.inputs) > 2 else None, graph, x, w, node.name)
        if isinstance(b, str):
            return b
        return Match({"x": x, "w": w, "b": b, "out": out})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        x, w, out = match["x"], match["w"], match["out"]
        inputs = [x.value, x.scale, x.zero_point, w.value, w.scale, w.zero_point,
                  out.scale, out.zero_point]
        if match["b"] is not None:
            inputs.append(match["b"])
        return replace_with(graph, node, out, "QLinearConv", inputs, copy_attributes(node))
