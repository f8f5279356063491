"""Stage 8, ``report``: the JSON-ready report of a quantized model (``edgeq.report``), and
``evaluate``: fidelity, accuracy and latency against the fp32 model on evaluation data; ``finish``:
the tail every mode handler shares (evaluate where asked, ``--min-sqnr``, the wall time)."""

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

__all__ = ["report", "plain_report", "evaluate", "finish"]


def report(model: ir.Model, planned: Planned, config: QuantConfig, prepared: Prepared, *,
           activations: dict, ranges_info: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    """What was quantized (with its scales), what was left float and why, sizes, calibration."""
    from edgeq.report.quant_report import build_report

    return build_report(
        planned.plan, planned.labels, config, activations, source=prepared.source,
        size_before=prepared.size_before, size_after=weights_nbytes(model), prepare_notes=prepared.notes,
        ranges_info=ranges_info, seconds=seconds,
    )


def plain_report(model: ir.Model, config: QuantConfig, prepared: Prepared, *, quantized_count: int,
                 quantized: list[dict[str, Any]], left_float: list[dict[str, Any]]) -> dict[str, Any]:
    """The report of a mode without int8 kernels or a plan (fp16, weight-only): its own
    per-node entries, the sizes, prepare's notes."""
    size_after = weights_nbytes(model)
    return {
        "format": "edgeq-quantize-report",
        "source": prepared.source,
        "config": config.to_dict(),
        "summary": {
            "nodes": len(model.graph),
            "quantized": quantized_count,
            "int8_kernels": 0,
            "left_float": len(left_float),
            "size_before_bytes": prepared.size_before,
            "size_after_bytes": size_after,
            "size_ratio": (size_after / prepared.size_before) if prepared.size_before else None,
        },
        "quantized": quantized,
        "float": left_float,
        "prepare": list(prepared.notes),
    }


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


def finish(result: QuantResult, prepared: Prepared, config: QuantConfig, eval_data: Any, labels: Any, start: float,
           *, layers: bool = False) -> QuantResult:
    """A mode handler's last step: with ``eval_data``, ``evaluate`` (``layers``: per-tensor errors
    too) and the ``--min-sqnr`` check; then the seconds since ``start`` in the summary."""
    import time

    from edgeq.stages.check import check_min_sqnr

    if eval_data is not None:
        evaluate(result, prepared.fp32, eval_data, labels, layers=layers)
        check_min_sqnr(result.report, config)
    result.report["summary"]["seconds"] = round(time.perf_counter() - start, 3)
    return result
