"""Shared pieces of the prepare passes: a pass that keeps notes, and small value helpers."""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["NotingPass", "const_tensor", "is_constant", "graphs_of", "FLOAT_TYPES"]

FLOAT_TYPES = frozenset(
    {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}
)


class NotingPass(ir.passes.InPlacePass):
    """An in-place pass that records human-readable notes for the prepare report.

    ``notes`` is reset at the start of every run; the pipeline collects it afterwards.
    """

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def requires(self, model: ir.Model) -> None:
        self.notes = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def is_constant(value: ir.Value | None) -> bool:
    """True for an initializer with data that no caller can override (not a graph input)."""
    return (
        value is not None
        and value.is_initializer()
        and value.const_value is not None
        and not value.is_graph_input()
    )


def const_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The constant tensor behind ``value`` or None when it is not a constant initializer."""
    return value.const_value if is_constant(value) else None


def graphs_of(model: ir.Model) -> list[ir.Graph]:
    """The main graph followed by every subgraph (If/Loop/Scan bodies), recursively."""
    return [model.graph, *model.graph.subgraphs()]
