"""``DQ(x) -> Sigmoid -> Q  ==>  com.microsoft.QLinearSigmoid`` (a 256-entry table in ORT)."""

from __future__ import annotations

import onnx_ir as ir

from edgeq.passes.qoperator._rule import MS_DOMAIN, Match, Rule, replace_with
from edgeq.passes.qoperator._simple import per_tensor_io

__all__ = ["QLinearSigmoidRule"]


class QLinearSigmoidRule(Rule):
    name = "QLinearSigmoid"
    op_types = ("Sigmoid",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        io = per_tensor_io(node, graph, fold=False)
        return io if isinstance(io, str) else Match({"in": io[0], "out": io[1]})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        (x,), out = match["in"], match["out"]
        inputs = [x.value, x.scale, x.zero_point, out.scale, out.zero_point]
        return replace_with(graph, node, out, self.name, inputs, domain=MS_DOMAIN)
