"""``edgeq.quantize``: an fp32 ONNX model in, a smaller, faster model and its report out.

The mode (``config.mode``, or ``default_mode`` when no config is given) picks a row of the mode
table, ``edgeq.config.MODES``; its handler runs the stages of ``edgeq.stages`` in order:

    load -> prepare -> plan -> calibrate -> rewrite -> (integer-only) -> check -> report

This module is the one place handlers are resolved: it sits above every layer that has one
(stages, auto), so none of them imports it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgeq.config import MODES, ModeSpec, QuantConfig, default_mode
from edgeq.errors import UsageError
from edgeq.stages.result import QuantResult

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

    from edgeq.calibrate.ranges import RangesTable

__all__ = ["quantize", "QuantResult", "handler"]


def handler(mode: ModeSpec) -> Callable[..., QuantResult]:
    """The function that runs ``mode`` (its row's ``"module:function"``)."""
    module, _, name = mode.handler.partition(":")
    return getattr(importlib.import_module(module), name)


def _check_inputs(mode: ModeSpec, data: Any, ranges: Any) -> None:
    if mode.data == "required" and data is None and not (mode.ranges_replace_data and ranges is not None):
        raise UsageError(mode.missing_data)


def _check_model(model: Any) -> None:
    """The one entry check of every mode: the model loads, passes onnx.checker and onnxruntime's
    own load (``stages.check.check_input``), before any handler starts."""
    from edgeq.io import as_model
    from edgeq.stages.check import check_input

    loaded, source = as_model(model, copy=False)
    check_input(loaded, source)


def quantize(
    model: str | os.PathLike | onnx.ModelProto | ir.Model,
    config: QuantConfig | None = None,
    data: Any = None,
    *,
    eval_data: Any = None,
    labels: Any = None,
    ranges: RangesTable | str | os.PathLike | None = None,
    progress: bool = True,
) -> QuantResult:
    """Quantize ``model`` (a path, onnx.ModelProto or onnx_ir.Model; the caller's is never changed).

    ``data``: calibration feeds (anything ``edgeq.calibrate.load_data`` takes). ``ranges``: a
    RangesTable or its JSON file (skips calibration for the tensors it covers). ``eval_data``
    (and ``labels``): adds fidelity, accuracy and latency vs fp32 to the report.

    Without ``config``, as on the command line: auto mode when there is calibration data (per-layer
    precision by measured error and speed, min output SQNR 30 dB, never slower than fp32 on the
    CPU provider at 1 thread), static mode with ``ranges`` only (``edgeq.config.default_mode``).
    A ``QuantConfig`` is taken as given (its ``mode`` defaults to static: uniform int8).
    """
    if config is None:
        config = QuantConfig(mode=default_mode(has_data=data is not None, has_ranges=ranges is not None))
    mode = MODES[config.mode]
    _check_inputs(mode, data, ranges)
    _check_model(model)
    result = handler(mode)(model, config, data, eval_data=eval_data, labels=labels, ranges=ranges,
                           progress=progress)
    return _never_bigger(result, model)


def _stored_bytes(model: Any) -> int:
    """Bytes of every constant tensor ``model`` stores: initializers and Constant nodes, subgraphs too."""
    from edgeq.graph import graphs_of
    from edgeq.io import weights_nbytes

    total = weights_nbytes(model)
    for graph in graphs_of(model):
        for node in graph:
            attr = node.attributes.get("value") if node.op_type == "Constant" and node.domain == "" else None
            if attr is not None and hasattr(attr.value, "nbytes"):
                total += attr.value.nbytes
    return total


def _never_bigger(result: QuantResult, model: Any) -> QuantResult:
    """A quantized model that stores more weight bytes than the fp32 one is no answer: the fp32
    model as given goes out instead, and the report says why."""
    from edgeq.io import as_model, weights_nbytes

    summary = result.report.get("summary", {})
    if weights_nbytes(result.model) <= (summary.get("size_before_bytes") or 0):
        return result  # the common case, without loading the fp32 model again
    fp32, _ = as_model(model)
    before, after = _stored_bytes(fp32), _stored_bytes(result.model)
    if after <= before:
        return result
    result.model = fp32
    summary["size_after_bytes"] = weights_nbytes(fp32)
    summary["size_ratio"] = summary["size_after_bytes"] / summary["size_before_bytes"] if summary.get("size_before_bytes") else None
    result.report.pop("evaluation", None)  # it measured the quantized model, which is not written
    result.report.setdefault("notes", []).append(
        f"kept float: the quantized model would store more weight bytes ({after:,}) than the fp32 one "
        f"({before:,}); the fp32 model is written unchanged")
    return result
