"""``DQ(x) -> AveragePool -> Q  ==>  com.microsoft.QLinearAveragePool``.

1. Only unpadded pools (explicit zero pads, auto_pad NOTSET/VALID) and ceil_mode 0: the
   divisor is then the kernel size everywhere, which the integer reference reproduces exactly.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.graph import MS_DOMAIN
from edgeq.passes.qoperator._rule import Match, Rule, copy_attributes, replace_with
from edgeq.passes.qoperator._simple import per_tensor_io

__all__ = ["QLinearAveragePoolRule"]

_ATTRS = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides")


class QLinearAveragePoolRule(Rule):
    name = "QLinearAveragePool"
    op_types = ("AveragePool",)

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        attrs = node.attributes
        pads = attrs["pads"].as_ints() if "pads" in attrs else ()
        auto_pad = attrs["auto_pad"].as_string() if "auto_pad" in attrs else "NOTSET"
        if any(pads) or auto_pad not in ("NOTSET", "VALID"):
            return "padded AveragePool is not rewritten (divisor varies at the borders)"
        if "ceil_mode" in attrs and attrs["ceil_mode"].as_int():
            return "AveragePool ceil_mode=1 is not rewritten"
        if "dilations" in attrs and any(d != 1 for d in attrs["dilations"].as_ints()):
            return "dilated AveragePool has no QLinear form"
        io = per_tensor_io(node, graph, fold=False)
        return io if isinstance(io, str) else Match({"in": io[0], "out": io[1]})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        (x,), out = match["in"], match["out"]
        inputs = [x.value, x.scale, x.zero_point, out.scale, out.zero_point]
        attrs = copy_attributes(node, _ATTRS)
        return replace_with(graph, node, out, self.name, inputs, attrs, domain=MS_DOMAIN)
