"""The ``fp16`` mode: fp16 weights and compute, fp32 at the graph boundary (what the CUDA
provider runs fastest).

    load -> prepare -> fp16 conversion (``edgeq.passes.fp16.convert_fp16``) -> check -> report

Ops with fp16 range problems stay fp32, each with its reason in ``report["fp16"]``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeq.config import QuantConfig
    from edgeq.stages.load import Prepared
    from edgeq.stages.result import QuantResult

__all__ = ["quantize_fp16", "build_fp16_variant"]


def build_fp16_variant(prepared: Prepared, config: QuantConfig, *, in_place: bool = False) -> QuantResult:
    """``prepared.model`` (a copy unless ``in_place``) converted to fp16, with its report."""
    from edgeq.graph import copy_model
    from edgeq.passes.fp16 import convert_fp16
    from edgeq.stages.report import plain_report
    from edgeq.stages.result import QuantResult

    model = prepared.model if in_place else copy_model(prepared.model)
    section = convert_fp16(model)
    kept = section.get("kept_fp32", [])  # dicts (passes/fp16.py)
    left_float = [{"node": k.get("node", ""), "op": k.get("op_type", ""), "reason": f"kept fp32: {k.get('reason', '')}"}
                  for k in kept]
    report = plain_report(model, config, prepared, quantized_count=len(model.graph) - len(kept), quantized=[],
                          left_float=left_float)
    report["fp16"] = section
    return QuantResult(model=model, report=report, ranges=None, source=prepared.source)


def quantize_fp16(model: Any, config: QuantConfig, data: Any = None, *, eval_data: Any = None,
                  labels: Any = None, ranges: Any = None, progress: bool = True) -> QuantResult:
    """Handler of the ``fp16`` row of the mode table (``data``: only for shape inference)."""
    from edgeq.stages.check import check
    from edgeq.stages.load import load, prepare
    from edgeq.stages.report import finish

    start = time.perf_counter()
    prepared = prepare(load(model, data, keep_fp32=eval_data is not None), config)
    result = build_fp16_variant(prepared, config, in_place=True)
    check(result.model)
    return finish(result, prepared, config, eval_data, labels, start)
