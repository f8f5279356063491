"""``build_variant``: stages 3 to 6 and the report on one prepared model.

    prepared = prepare(load(model, data), config)
    result = build_variant(prepared, config)                 # plan, calibrate, rewrite, (integer-only)
    other = build_variant(prepared, config.with_precision({"conv3": "fp32"}), ranges=result.ranges)

A search (auto mode, sensitivity) builds many variants of one ``Prepared`` with a reused ranges
table: none of them loads, prepares or calibrates again. The onnx checker and the evaluation are
the caller's (``quantize`` runs them on its one result)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edgeq.config import MODES

if TYPE_CHECKING:
    from edgeq.calibrate.ranges import RangesTable
    from edgeq.config import QuantConfig
    from edgeq.stages.load import Prepared
    from edgeq.stages.result import QuantResult

__all__ = ["build_variant"]


def build_variant(prepared: Prepared, config: QuantConfig, ranges: RangesTable | str | None = None, *,
                  progress: bool = False, in_place: bool = False) -> QuantResult:
    """Quantize ``prepared.model`` as ``config`` says (an int8 mode: static or dynamic).

    ``ranges``: a RangesTable or its JSON file; calibration (on ``prepared.data``) fills only
    what it lacks. ``in_place``: rewrite ``prepared.model`` itself (a one-off quantize) instead
    of a copy (a search reusing it)."""
    from edgeq.graph import copy_model
    from edgeq.stages.calibrate import calibrate
    from edgeq.stages.integer_only import integer_only
    from edgeq.stages.plan import plan
    from edgeq.stages.report import report
    from edgeq.stages.result import QuantResult
    from edgeq.stages.rewrite import rewrite

    start = time.perf_counter()
    model = prepared.model if in_place else copy_model(prepared.model)
    planned = plan(model, config)
    table, ranges_info = None, None
    if MODES[config.mode].calibrated:
        table, ranges_info = calibrate(model, planned, config, prepared.data, ranges, progress)
    activations, tensors = planned.snapshot()
    rewrite(model, planned, config)
    extra: dict[str, Any] = {}
    if config.format == "qoperator":
        extra["qoperator"] = integer_only(model, config)
    section = report(model, planned, config, prepared, activations=activations, ranges_info=ranges_info,
                     seconds=time.perf_counter() - start)
    section.update(extra)
    return QuantResult(model=model, report=section, ranges=table, source=prepared.source, quantized_tensors=tensors)
