"""``DQ(a) -> MatMul(DQ(b))  ==>  MatMulInteger -> DQ(int32, s_a * s_b)``, when QLinearMatMul
does not apply (the output is not quantized per-tensor by a single Q, or is a graph output).

1. Inputs as for QLinearMatMul; b's zero points must be equal.
2. A following Q stays and meets the new DQ: a DQ(int32) -> Q requantization, which the integer
   reference runs in fixed point.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.passes.qoperator._integer_acc import dequantize_accumulator
from edgeq.passes.qoperator._rule import Match, Rule
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
        return Match({"a": ab[0], "b": ab[1]})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        a, b = match["a"], match["b"]
        mmi = ir.Node("", "MatMulInteger", [a.value, b.value, a.zero_point, b.zero_point],
                      name=node.name)
        dequantize_accumulator(graph, node, mmi, a, b, None, -1, ())
        return mmi
