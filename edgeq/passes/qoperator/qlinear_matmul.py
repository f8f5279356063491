"""``DQ(a) -> MatMul(DQ(b)) [-> Relu|Clip] -> Q  ==>  QLinearMatMul``.

1. a: per-tensor uint8/int8; b: a constant weight per-tensor or per column (last axis), or a
   per-tensor activation.
2. The output is quantized per-tensor (activation folding as in QLinearConv).
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.graph import const_array
from edgeq.passes.qoperator._match import QInput, dequantized, quantized_output
from edgeq.passes.qoperator._rule import Match, Rule, replace_with
from edgeq.passes.qoperator._weights import weight_input

__all__ = ["QLinearMatMulRule", "matmul_inputs"]


def matmul_inputs(node: ir.Node, graph: ir.Graph) -> tuple[QInput, QInput] | str:
    a = dequantized(node.inputs[0], graph)
    if isinstance(a, str):
        return a
    if not a.per_tensor:
        return "input A is not quantized per-tensor"
    b_dq = node.inputs[1].producer()
    is_dq = b_dq is not None and b_dq.op_type == "DequantizeLinear"
    if is_dq and const_array(b_dq.inputs[0]) is not None:
        rank = len(b_dq.inputs[0].shape) if b_dq.inputs[0].shape is not None else 2
        b = weight_input(node.inputs[1], graph, channels_axis=rank - 1)
        if not isinstance(b, str) and b.scale_array.size > 1 and rank != 2:
            return "per-column weight B must be 2-D"
    else:
        b = dequantized(node.inputs[1], graph)
        if not isinstance(b, str) and not b.per_tensor:
            return "input B is a per-axis activation"
    if isinstance(b, str):
        return b
    return a, b


class QLinearMatMulRule(Rule):
    name = "QLinearMatMul"
    op_types = ("MatMul",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        ab = matmul_inputs(node, graph)
        if isinstance(ab, str):
            return ab
        out = quantized_output(node.outputs[0], graph)
        if isinstance(out, str):
            return out
        return Match({"a": ab[0], "b": ab[1], "out": out})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        a, b, out = match["a"], match["b"], match["out"]
        inputs = [a.value, a.scale, a.zero_point, b.value, b.scale, b.zero_point,
                  out.scale, out.zero_point]
        return replace_with(graph, node, out, "QLinearMatMul", inputs)
