"""``DQ(x) -> GlobalAveragePool -> Q  ==>  com.microsoft.QLinearGlobalAveragePool`` (NCHW)."""

from __future__ import annotations

import onnx_ir as ir

from edgeq.passes.qoperator._rule import MS_DOMAIN, Match, Rule, replace_with
from edgeq.passes.qoperator._simple import per_tensor_io

__all__ = ["QLinearGlobalAveragePoolRule"]


class QLinearGlobalAveragePoolRule(Rule):
    name = "QLinearGlobalAveragePool"
    op_types = ("GlobalAveragePool",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        io = per_tensor_io(node, graph, fold=False)
        return io if isinstance(io, str) else Match({"in": io[0], "out": io[1]})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        (x,), out = match["in"], match["out"]
        inputs = [x.value, x.scale, x.zero_point, out.scale, out.zero_point]
        attrs = [ir.AttrInt64("channels_last", 0)]
        return replace_with(graph, node, out, self.name, inputs, attrs, domain=MS_DOMAIN)
