"""``DQ(x) -> LeakyRelu(alpha) -> Q  ==>  com.microsoft.QLinearLeakyRelu(alpha)``."""

from __future__ import annotations

import onnx_ir as ir

from edgeq.passes.qoperator._rule import copy_attributes
from edgeq.passes.qoperator._simple import UnaryQLinearRule

__all__ = ["QLinearLeakyReluRule"]


class QLinearLeakyReluRule(UnaryQLinearRule):
    name = "QLinearLeakyRelu"
    op_types = ("LeakyRelu",)

    def attributes(self, node: ir.Node) -> list[ir.Attr]:
        return copy_attributes(node, ("alpha",))
