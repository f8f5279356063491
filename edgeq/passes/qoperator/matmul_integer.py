"""``DQ(a) -> MatMul(DQ(b))  ==>  MatMulInteger -> DQ(int32, s_a * s_b)``, when QLinearMatMul
does not apply (the output is not quantized per-tensor by a single Q, or is a graph output).

1. Inputs as for QLinearMatMul.
2. ``MatMul -> Add(bias)`` (how Linear layers on 3-D inputs export) takes the bias in too, as an
   int32 Add at scale s_a * s_b, when the bias is a constant vector over the last axis.
3. A following Q stays and meets the new DQ: a DQ(int32) -> Q requantization, which the integer
   reference runs in fixed point.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.passes.qoperator._integer_acc import dequantize_accumulator
from edgeq.passes.qoperator._rule import Match, Rule
from edgeq.passes.qoperator._weights import bias_input
from edgeq.passes.qoperator.qlinear_matmul import matmul_inputs

__all__ = ["MatMulIntegerRule"]


class MatMulIntegerRule(Rule):
    name = "MatMulInteger"
    op_types = ("MatMul",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        ab = matmul_inputs(node, graph)
        if isinstance(ab, str):
            return ab
        if node.outputs[0].dtype not in (ir.DataType.FLOAT, None):
            return "output is not float32"
        add, bias = _bias_add(node, graph, ab[0], ab[1])
        return Match({"a": ab[0], "b": ab[1], "add": add, "bias": bias})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        a, b = match["a"], match["b"]
        mmi = ir.Node("", "MatMulInteger", [a.value, b.value, a.zero_point, b.zero_point],
                      name=node.name)
        dequantize_accumulator(graph, node, mmi, a, b, match["bias"], -1, (-1,), also=match["add"])
        return mmi


def _bias_add(node: ir.Node, graph: ir.Graph, a, b) -> tuple[ir.Node | None, ir.Value | None]:
    """The ``Add(bias)`` after ``node`` and its int32 bias (case 2), or (None, None)."""
    out = node.outputs[0]
    uses = list(out.uses())
    if out.is_graph_output() or len(uses) != 1 or uses[0].node.op_type != "Add":
        return None, None
    add = uses[0].node
    other = add.inputs[1 - uses[0].idx]
    if other is None or other.shape is None or len(other.shape) != 1:
        return None, None
    bias = bias_input(other, graph, a, b, node.name)
    if isinstance(bias, str) or bias is None or bias.const_value is None:
        return None, None
    return add, bias
