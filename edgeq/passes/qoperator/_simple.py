"""Shared check for the com.microsoft QLinear activation ops: every float input comes from a
per-tensor DequantizeLinear and the output goes to one per-tensor QuantizeLinear, all of
one dtype (uint8 or int8)."""

from __future__ import annotations

import onnx_ir as ir

from edgeq.graph import MS_DOMAIN
from edgeq.passes.qoperator._match import QInput, QOutput, dequantized, quantized_output
from edgeq.passes.qoperator._rule import Match, Rule, replace_with

__all__ = ["per_tensor_io", "UnaryQLinearRule", "BinaryQLinearRule"]


def per_tensor_io(
    node: ir.Node, graph: ir.Graph, inputs: int | None = None, fold: bool = True
) -> tuple[list[QInput], QOutput] | str:
    values = node.inputs if inputs is None else node.inputs[:inputs]
    qins: list[QInput] = []
    for i, value in enumerate(values):
        q = dequantized(value, graph)
        if isinstance(q, str):
            return f"input {i}: {q}"
        if not q.per_tensor:
            return f"input {i} is not quantized per-tensor"
        qins.append(q)
    out = quantized_output(node.outputs[0], graph)
    if isinstance(out, str):
        return out
    if out.fused and not fold:
        return f"{out.fused[0].op_type} after {node.op_type} cannot be folded"
    dtypes = {q.dtype for q in qins} | {out.dtype}
    if len(dtypes) != 1:
        return f"inputs and output mix {sorted(str(d) for d in dtypes)}; the op needs one dtype"
    return qins, out



class BinaryQLinearRule(Rule):
    """``DQ(a) op DQ(b) [-> Relu|Clip] -> Q  ==>  com.microsoft.QLinear<op>``: a and b per-tensor,
    of the output's dtype, broadcasting as in the float op; subclasses name the op."""

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        io = per_tensor_io(node, graph)
        return io if isinstance(io, str) else Match({"in": io[0], "out": io[1]})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        (a, b), out = match["in"], match["out"]
        inputs = [a.value, a.scale, a.zero_point, b.value, b.scale, b.zero_point,
                  out.scale, out.zero_point]
        return replace_with(graph, node, out, self.name, inputs, domain=MS_DOMAIN)


class UnaryQLinearRule(Rule):
    """``DQ(x) -> op -> Q  ==>  com.microsoft.QLinear<op>``: x per-tensor, no Relu folded into
    the output; subclasses name the op and may carry attributes over (``attributes``)."""

    def attributes(self, node: ir.Node) -> list[ir.Attr]:
        return []

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        io = per_tensor_io(node, graph, fold=False)
        return io if isinstance(io, str) else Match({"in": io[0], "out": io[1]})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        (x,), out = match["in"], match["out"]
        inputs = [x.value, x.scale, x.zero_point, out.scale, out.zero_point]
        return replace_with(graph, node, out, self.name, inputs, self.attributes(node), domain=MS_DOMAIN)
