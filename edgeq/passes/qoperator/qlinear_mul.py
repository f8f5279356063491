"""``DQ(a) * DQ(b) [-> Relu|Clip] -> Q  ==>  com.microsoft.QLinearMul`` (gates, scales).

1. a and b per-tensor, of the output's dtype; broadcasting as in Mul (``BinaryQLinearRule``).
"""

from __future__ import annotations

from edgeq.passes.qoperator._simple import BinaryQLinearRule

__all__ = ["QLinearMulRule"]


class QLinearMulRule(BinaryQLinearRule):
    name = "QLinearMul"
    op_types = ("Mul",)
