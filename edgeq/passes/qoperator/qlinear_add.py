"""``DQ(a) + DQ(b) [-> Relu|Clip] -> Q  ==>  com.microsoft.QLinearAdd`` (residual adds).

1. a and b per-tensor, of the output's dtype; broadcasting as in Add (``BinaryQLinearRule``).
"""

from __future__ import annotations

from edgeq.passes.qoperator._simple import BinaryQLinearRule

__all__ = ["QLinearAddRule"]


class QLinearAddRule(BinaryQLinearRule):
    name = "QLinearAdd"
    op_types = ("Add",)
