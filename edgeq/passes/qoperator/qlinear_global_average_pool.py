"""``DQ(x) -> GlobalAveragePool -> Q  ==>  com.microsoft.QLinearGlobalAveragePool`` (NCHW)."""

from __future__ import annotations

import onnx_ir as ir

from edgeq.passes.qoperator._simple import UnaryQLinearRule

__all__ = ["QLinearGlobalAveragePoolRule"]


class QLinearGlobalAveragePoolRule(UnaryQLinearRule):
    name = "QLinearGlobalAveragePool"
    op_types = ("GlobalAveragePool",)

    def attributes(self, node: ir.Node) -> list[ir.Attr]:
        return [ir.AttrInt64("channels_last", 0)]
