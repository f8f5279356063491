"""``QuantResult``: what every quantize mode returns (the model, its JSON-ready report, the ranges)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.calibrate.ranges import RangesTable

__all__ = ["QuantResult"]


@dataclasses.dataclass
class QuantResult:
    """The quantized model (onnx_ir), its JSON-ready report, and the ranges used (static).

    ``quantized_tensors``: the float tensors the plan gave int8 ranges (graph outputs and
    constants left out), the per-layer error of the evaluation stage probes them."""

    model: ir.Model
    report: dict[str, Any]
    ranges: RangesTable | None = None
    source: str | None = None
    quantized_tensors: list[str] = dataclasses.field(default_factory=list, repr=False)

    def save(self, path: str | os.PathLike, report: str | os.PathLike | None = None, *,
             external_data: bool | None = None) -> str:
        """Write the model atomically (never over the input) and, if asked, the JSON report
        and its Markdown rendering beside it. ``external_data``: weights in ``<path>.data``
        beside the model (True), inside it (False), or by size (None: above 2 GB)."""
        from edgeq.io import save_model
        from edgeq.report.quant_report import write_report

        inputs = [self.source] if self.source else []
        if report is not None:
            write_report(self.report, report, inputs=[*inputs, path])
        return save_model(self.model, path, inputs=inputs, external_data=external_data)
