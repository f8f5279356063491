"""edgeq: export, quantize and deploy ONNX models for edge targets.

The public API is re-exported here lazily, so ``import edgeq`` stays light and never imports
torch; each name is imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeq._version import __version__ as __version__
from edgeq.config import NodePrecision, PerBlock, PerChannel, PerTensor, PerToken, QuantConfig
from edgeq.errors import (
    DataError,
    EdgeqError,
    ExportError,
    FidelityError,
    InputError,
    ModelLoadError,
    ProviderError,
    UnsupportedError,
    UsageError,
)

_LAZY: dict[str, str] = {
    "quantize": "edgeq.quantizer",
    "QuantResult": "edgeq.stages.result",
    "export": "edgeq.exporter",
    "prepare_model": "edgeq.prepare",
    "load_model": "edgeq.io",
    "save_model": "edgeq.io",
    "Session": "edgeq.runtime",
}

__all__ = [
    "QuantConfig",
    "NodePrecision",
    "PerTensor",
    "PerChannel",
    "PerBlock",
    "PerToken",
    "EdgeqError",
    "UsageError",
    "ModelLoadError",
    "InputError",
    "DataError",
    "ProviderError",
    "ExportError",
    "UnsupportedError",
    "FidelityError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeq' has no attribute {name!r}")
