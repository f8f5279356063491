"""Sensitivity analysis and auto mode: per-layer precision chosen by measured error and speed.

    from edgeq.auto import sensitivity, auto_quantize
    report = sensitivity("model.onnx", calib, eval_data=feeds)        # SensitivityReport (analysis.py)
    result = auto_quantize("model.onnx", calib, min_sqnr=30.0)        # edgeq.QuantResult

Names are imported lazily (no torch, no onnxruntime on ``import edgeq.auto``).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "sensitivity": "edgeq.auto.analysis",
    "SensitivityReport": "edgeq.auto.analysis",
    "auto_quantize": "edgeq.auto.search",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeq.auto' has no attribute {name!r}")
