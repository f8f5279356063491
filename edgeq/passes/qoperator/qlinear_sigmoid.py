"""``DQ(x) -> Sigmoid -> Q  ==>  com.microsoft.QLinearSigmoid`` (a 256-entry table in ORT)."""

from __future__ import annotations

from edgeq.passes.qoperator._simple import UnaryQLinearRule

__all__ = ["QLinearSigmoidRule"]


class QLinearSigmoidRule(UnaryQLinearRule):
    name = "QLinearSigmoid"
    op_types = ("Sigmoid",)
