"""The quantize modes that are not a plain pass list: ``fp16`` and ``auto``.

``edgeq.quantize`` dispatches here for ``config.mode`` in (``"fp16"``, ``"auto"``); both return
the same ``QuantResult`` (model, JSON report) as static and dynamic mode, so the CLI, ``save``
and the report renderers need no special case.

* fp16: prepare, then ``edgeq.passes.fp16.convert_fp16`` (inputs and outputs stay fp32; ops
  with fp16 range problems stay fp32, each with its reason in ``report["fp16"]``).
* auto: ``edgeq.auto.auto_quantize`` (per-layer precision by measured error and speed) with
  ``config.min_sqnr`` (default 30 dB) and/or ``config.metric`` + ``config.min_score``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edgeq.config import QuantConfig
from edgeq.errors import UsageError

if TYPE_CHECKING:
    from edgeq.quantizer import QuantResult

__all__ = ["quantize_fp16", "quantize_auto", "DEFAULT_AUTO_MIN_SQNR"]

DEFAULT_AUTO_MIN_SQNR = 30.0
AUTO_MAX_BYTES = 1_500_000_000  # weights over this: static mode (auto serializes each variant whole)


def quantize_fp16(model: Any, config: QuantConfig, *, data: Any = None, eval_data: Any = None,
                  labels: Any = None) -> "QuantResult":
    """fp16 weights and compute, fp32 at the graph boundary (what the CUDA provider runs fastest)."""
    from edgeq.io import weights_nbytes
    from edgeq.passes.fp16 import convert_fp16
    from edgeq.quantizer import QuantResult, _check, load_and_prepare

    start = time.perf_counter()
    prepared = load_and_prepare(model, config, data, keep_fp32=eval_data is not None)
    loaded, source, notes, size_before = prepared.model, prepared.source, prepared.notes, prepared.size_before
    section = convert_fp16(loaded)
    _check(loaded)
    size_after = weights_nbytes(loaded)
    kept = section.get("kept_fp32", [])
    report: dict[str, Any] = {
        "format": "edgeq-quantize-report",
        "source": source,
        "config": config.to_dict(),
        "summary": {
            "nodes": len(loaded.graph),
            "quantized": len(loaded.graph) - len(kept),
            "int8_kernels": 0,
            "left_float": len(kept),
            "size_before_bytes": size_before,
            "size_after_bytes": size_after,
            "size_ratio": (size_after / size_before) if size_before else None,
        },
        "quantized": [],
        "float": [{"node": k.get("node", ""), "op": k.get("op_type", ""), "reason": f"kept fp32: {k.get('reason', '')}"}
                  for k in kept if isinstance(k, dict)],
        "prepare": list(notes),
        "fp16": section,
    }
    if eval_data is not None:
        from edgeq.quantizer import _check_min_sqnr, evaluate_against_fp32

        evaluate_against_fp32(report, prepared.fp32_bytes, loaded, eval_data, labels)
        _check_min_sqnr(report, config)
    report["summary"]["seconds"] = round(time.perf_counter() - start, 3)
    return QuantResult(model=loaded, report=report, ranges=None, source=source)


def quantize_auto(model: Any, config: QuantConfig, data: Any, *, eval_data: Any = None, labels: Any = None,
                  progress: bool = True) -> "QuantResult":
    """Per-layer precision (int8 or fp32) meeting the fidelity target, never slower than fp32."""
    from edgeq.auto import auto_quantize
    from edgeq.io import model_bytes, weights_nbytes
    from edgeq.quantizer import evaluate_against_fp32, load_input

    if data is None:
        raise UsageError("--auto needs calibration data: pass --calib DATA (or data=...)")
    min_sqnr = config.min_sqnr
    if min_sqnr is None and config.min_score is None:
        min_sqnr = DEFAULT_AUTO_MIN_SQNR
    from edgeq.runtime.providers import resolve_chain

    resolve_chain(config.provider)  # an unknown or unavailable provider fails now, not after the search
    start = time.perf_counter()
    loaded, _ = load_input(model)
    if weights_nbytes(loaded) > AUTO_MAX_BYTES:
        from edgeq.quantizer import quantize

        del loaded
        result = quantize(model, config.replace(mode="static"), data, eval_data=eval_data, labels=labels,
                          progress=progress)
        result.report.setdefault("notes", []).append(
            f"auto mode builds and times many variants in memory, each a single protobuf (2 GB at most): "
            f"a model with over {AUTO_MAX_BYTES / 1e9:.1f} GB of weights gets static mode (uniform int8) instead")
        return result
    fp32_bytes = model_bytes(loaded) if eval_data is not None else None
    del loaded
    result = auto_quantize(model, data, min_sqnr=min_sqnr, metric=config.metric, min_score=config.min_score,
                           provider=config.provider, threads=config.threads, eval_data=eval_data,
                           config=config.replace(mode="static", min_sqnr=None), progress=progress)
    result.report["config"] = config.replace(min_sqnr=min_sqnr).to_dict()
    result.report["summary"]["seconds"] = round(time.perf_counter() - start, 3)  # the whole search
    if eval_data is not None:
        evaluate_against_fp32(result.report, fp32_bytes, result.model, eval_data, labels)
    return result
