"""One exception family for edgeq.

Every message names the file, node, tensor or input concerned and says what to do. The CLI prints
``str(error)`` on one line and exits with ``error.exit_code``: 2 for a user's mistake in how edgeq
was called (usage), 1 for a failure while doing the work.
"""

from __future__ import annotations

import re

__all__ = [
    "EdgeqError",
    "UsageError",
    "ModelLoadError",
    "InputError",
    "DataError",
    "ProviderError",
    "ExportError",
    "UnsupportedError",
    "FidelityError",
    "ClusterError",
    "one_line",
]


class EdgeqError(Exception):
    """Base of all edgeq errors: a failure while doing the work (exit code 1)."""

    exit_code = 1


class UsageError(EdgeqError):
    """edgeq was called wrongly: a bad option, path, spec or combination (exit code 2)."""

    exit_code = 2


class ModelLoadError(UsageError):
    """A model file is missing, truncated, corrupt, or points outside its folder."""


class InputError(UsageError):
    """Feeds do not match the model: wrong names, dtypes, ranks or fixed dimensions."""


class DataError(UsageError):
    """Calibration or evaluation data is empty, unreadable, or holds NaN/Inf."""


class ProviderError(UsageError):
    """An execution provider was asked for that is unknown or not available here."""


class ExportError(EdgeqError):
    """Exporting a PyTorch model to ONNX failed, or its outputs disagree with torch's."""


class UnsupportedError(EdgeqError):
    """The model uses something edgeq cannot handle (an operator, an opset, a dtype)."""


class FidelityError(EdgeqError):
    """A result misses a fidelity target (SQNR, tolerance) the user asked for."""


class ClusterError(EdgeqError):
    """Work sent to a cluster failed: no cluster at the address, a node's versions differ, a task
    died on every try or ran past its time limit, no node offers a device."""


def one_line(error: BaseException) -> str:
    """A library's error message on one line, without onnxruntime's status prefix, source path
    and C++ signature (what a user can act on is the sentence after them)."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ", "", text)
    return re.sub(r"/onnxruntime_src/\S+:\d+ .*?\) (?=[A-Z])", "", text)
