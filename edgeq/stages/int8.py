"""The ``static`` and ``dynamic`` modes: uniform int8, every stage in order.

    load -> prepare -> plan -> calibrate (static only) -> rewrite -> (integer-only) -> check -> report

Static mode fixes activation scales offline from calibration data (or a reused ranges table);
dynamic mode quantizes weights only and lets onnxruntime quantize activations at run time. The
mode table (``edgeq.config.MODES``) says which calibrates; the passes read the rest from the
config."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeq.config import QuantConfig
    from edgeq.stages.result import QuantResult

__all__ = ["quantize_int8"]


def quantize_int8(model: Any, config: QuantConfig, data: Any = None, *, eval_data: Any = None,
                  labels: Any = None, ranges: Any = None, progress: bool = True) -> QuantResult:
    """Handler of the ``static`` and ``dynamic`` rows of the mode table."""
    from edgeq.stages.check import check
    from edgeq.stages.load import load, prepare
    from edgeq.stages.report import finish
    from edgeq.stages.variant import build_variant
    from edgeq.stages.weight_bits import build_choosing_weight_bits, weight_bits_to_choose

    start = time.perf_counter()
    prepared = prepare(load(model, data, keep_fp32=eval_data is not None), config)
    if weight_bits_to_choose(config, prepared):  # 7 or 8 bits where the CPU saturates 8-bit products
        result = build_choosing_weight_bits(prepared, config, ranges, progress)
    else:
        result = build_variant(prepared, config, ranges, progress=progress, in_place=True)
    check(result.model)
    return finish(result, prepared, config, eval_data, labels, start, layers=config.format == "qdq")
