"""``Concat(DQ(x_i)...) -> Q  ==>  com.microsoft.QLinearConcat`` (inputs of different scales).

Concat whose inputs all share the output's scale is rewritten by ``Int8PassthroughRule``
instead, which needs no rescaling at all.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.graph import MS_DOMAIN
from edgeq.passes.qoperator._rule import Match, Rule, copy_attributes, replace_with
from edgeq.passes.qoperator._simple import per_tensor_io

__all__ = ["QLinearConcatRule"]


class QLinearConcatRule(Rule):
    name = "QLinearConcat"
    op_types = ("Concat",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        io = per_tensor_io(node, graph, fold=False)
        return io if isinstance(io, str) else Match({"in": io[0], "out": io[1]})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        qins, out = match["in"], match["out"]
        inputs: list[ir.Value] = [out.scale, out.zero_point]
        for q in qins:
            inputs += [q.value, q.scale, q.zero_point]
        attrs = copy_attributes(node, ("axis",))
        return replace_with(graph, node, out, self.name, inputs, attrs, domain=MS_DOMAIN)
