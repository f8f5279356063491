"""``DQ(A) -> Gemm(DQ(B), DQ(C)) [-> Relu|Clip] [-> Q]  ==>  com.microsoft.QGemm``.

1. A: per-tensor; B: a constant weight, per-tensor or per output column (axis 0 when
   transB=1, else axis 1); C: int32 bias at scale s_A * s_B (requantized otherwise), beta=1.
2. With a Q after it the output is quantized (y_scale, y_zero_point); without one QGemm
   returns float, which ends the integer path as a DequantizeLinear would.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.graph import MS_DOMAIN
from edgeq.passes.plan import attr_value
from edgeq.passes.qoperator._match import dequantized, quantized_output
from edgeq.passes.qoperator._rule import Match, Rule, copy_attributes, replace_with
from edgeq.passes.qoperator._weights import bias_input, weight_input

__all__ = ["QGemmRule"]


class QGemmRule(Rule):
    name = "QGemm"
    op_types = ("Gemm",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        a = dequantized(node.inputs[0], graph)
        if isinstance(a, str):
            return a
        if not a.per_tensor:
            return "input A is not quantized per-tensor"
        trans_b = attr_value(node, "transB", 0)
        b = weight_input(node.inputs[1], graph, channels_axis=0 if trans_b else 1)
        if isinstance(b, str):
            return b
        c = node.inputs[2] if len(node.inputs) > 2 else None
        if c is not None and attr_value(node, "beta", 1.0) != 1.0:
            return "Gemm beta is not 1"
        bias = bias_input(c, graph, a, b, node.name)
        if isinstance(bias, str):
            return bias
        if bias is not None and bias.shape is not None and len(bias.shape) == 2:
            return "bias C is 2-D; QGemm needs it per column"
        out = quantized_output(node.outputs[0], graph)
        if isinstance(out, str):
            if node.outputs[0].dtype != ir.DataType.FLOAT:
                return out
            out = None  # float output (case 2)
        return Match({"a": a, "b": b, "c": bias, "out": out})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        a, b, out = match["a"], match["b"], match["out"]
        inputs = [a.value, a.scale, a.zero_point, b.value, b.scale, b.zero_point, match["c"]]
        if out is not None:
            inputs += [out.scale, out.zero_point]
        attrs = copy_attributes(node, ("alpha", "transA", "transB"))
        return replace_with(graph, node, out, "QGemm", inputs, attrs, domain=MS_DOMAIN)
