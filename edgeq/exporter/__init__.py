"""PyTorch -> ONNX export (dynamo first, TorchScript fallback), checked against torch.

    from edgeq.exporter import export
    result = export("digits_mobilenet", "out/digits.onnx")
    result.exporter, result.max_abs_error, result.fallback_reason

Importing this package does not import torch; ``export`` does.
"""

from __future__ import annotations

from edgeq.exporter.axes import merge_dynamic_axes, parse_dynamic, parse_input_shapes
from edgeq.exporter.core import DEFAULT_OPSET, EXPORTERS, ExportResult, export
from edgeq.exporter.spec import InputShape, ResolvedModel, resolve_spec

__all__ = [
    "export",
    "ExportResult",
    "DEFAULT_OPSET",
    "EXPORTERS",
    "InputShape",
    "ResolvedModel",
    "resolve_spec",
    "parse_input_shapes",
    "parse_dynamic",
    "merge_dynamic_axes",
]
