"""Stage 8, ``report``: the JSON-ready report of a quantized model (``edgeq.report``), and
``evaluate``: fidelity, accuracy and latency against the fp32 model on evaluation data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeq.io import weights_nbytes

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.config import QuantConfig
    from edgeq.runtime.memory import InMemoryModel
    from edgeq.stages.load import Prepared
    from edgeq.stages.plan import Planned
    from edgeq.stages.result import QuantResult

__all__ = ["report", "evaluate"]


def report(model: ir.Model, planned: Planned, config: QuantConfig, prepared: Prepared, *,
           activations: dict, ranges_info: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    """What was quantized (with its scales), what was left float and why, sizes, calibration."""
    from edgeq.report.quant_report import build_report

    return build_report(
        planned.plan, planned.labels, config, activations, source=prepared.source,
        size_before=prepared.size_before, size_after=weights_nbytes(model), prepare_notes=prepared.notes,
        ranges_info=ranges_info, seconds=seconds,
    )


def evaluate(result: QuantResult, fp32: InMemoryModel, eval_data: Any, labels: Any = None, *,
             layers: bool = False) -> tuple[Any, InMemoryModel]:
    """Put fidelity, accuracy and latency of ``result.model`` vs the fp32 model in
    ``result.report["evaluation"]`` (and, with ``layers``, the error of every quantized tensor);
    return the evaluation feeds and the model as onnxruntime took it, for further comparisons."""
    from edgeq.calibrate import load_data
    from edgeq.report.evaluate import evaluate as evaluate_models
    from edgeq.report.evaluate import layer_errors
    from edgeq.runtime.memory import in_memory

    feeds = load_data(eval_data, fp32.proto())
    candidate = in_memory(result.model)
    result.report["evaluation"] = evaluate_models(fp32, candidate, feeds, labels=labels)
    if layers and result.quantized_tensors:
        result.report["evaluation"]["layers"] = layer_errors(fp32, candidate, result.quantized_tensors, feeds)
    return feeds, candidate
