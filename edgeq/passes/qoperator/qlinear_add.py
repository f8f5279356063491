"""``DQ(a) + DQ(b) [-> Relu|Clip] -> Q  ==>  com.microsoft.QLinearAdd`` (residual adds).

1. a and b per-tensor, of the output's dtype; broadcasting as in Add.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.passes.qoperator._rule import MS_DOMAIN, Match, Rule, replace_with
from edgeq.passes.qoperator._simple import per_tensor_io

__all__ = ["QLinearAddRule"]


class QLinearAddRule(Rule):
    name = "QLinearAdd"
    op_types = ("Add",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        io = per_tensor_io(node, graph)
        return io if isinstance(io, str) else Match({"in": io[0], "out": io[1]})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        (a, b), out = match["in"], match["out"]
        inputs = [a.value, a.scale, a.zero_point, b.value, b.scale, b.zero_point,
                  out.scale, out.zero_point]
        return replace_with(graph, node, out, self.name, inputs, domain=MS_DOMAIN)
