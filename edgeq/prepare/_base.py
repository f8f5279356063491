"""Shared pieces of the prepare passes: a pass that keeps notes, and the float dtypes."""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["NotingPass", "FLOAT_TYPES"]

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
