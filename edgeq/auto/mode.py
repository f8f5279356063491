"""The ``auto`` mode's handler: ``edgeq.auto.search.auto_quantize`` with the config's target.

Per-layer precision (int8, int16 activations, fp16, fp32) meeting ``config.min_sqnr`` (default
30 dB) and/or ``config.metric`` + ``config.min_score``, never slower than fp32 on
``config.provider`` at ``config.threads``. A model too big to build variants of in memory gets
the static mode's handler instead, with a note saying so.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edgeq.config import QuantConfig

if TYPE_CHECKING:
    from edgeq.stages.result import QuantResult

__all__ = ["quantize_auto", "DEFAULT_AUTO_MIN_SQNR", "AUTO_MAX_BYTES"]

DEFAULT_AUTO_MIN_SQNR = 30.0
AUTO_MAX_BYTES = 1_500_000_000  # weights over this: static mode (auto holds the int8 weights of each variant)


def quantize_auto(model: Any, config: QuantConfig, data: Any, *, eval_data: Any = None, labels: Any = None,
                  ranges: Any = None, progress: bool = True) -> QuantResult:
    """Handler of the ``auto`` row of the mode table (``ranges`` is not used: auto calibrates)."""
    from edgeq.auto.search import auto_quantize
    from edgeq.io import as_model, weights_nbytes
    from edgeq.runtime.memory import in_memory
    from edgeq.runtime.providers import resolve_chain
    from edgeq.stages.report import evaluate

    min_sqnr = config.min_sqnr
    if min_sqnr is None and config.min_score is None:
        min_sqnr = DEFAULT_AUTO_MIN_SQNR
    resolve_chain(config.provider)  # an unknown or unavailable provider fails now, not after the search
    start = time.perf_counter()
    loaded, _ = as_model(model)
    if weights_nbytes(loaded) > AUTO_MAX_BYTES:
        from edgeq.stages.int8 import quantize_int8

        if config.max_size is not None:
            from edgeq.errors import UsageError

            raise UsageError(f"--max-size with auto mode: a model with over {AUTO_MAX_BYTES / 1e9:.1f} GB of weights "
                             "gets static mode, which takes no size target: use --mode compress")

        del loaded
        result = quantize_int8(model, config.replace(mode="static"), data, eval_data=eval_data, labels=labels,
                               progress=progress)
        result.report.setdefault("notes", []).append(
            f"auto mode builds and times many variants in memory, each with its own quantized weights: "
            f"a model with over {AUTO_MAX_BYTES / 1e9:.1f} GB of weights gets static mode (uniform int8) instead")
        return result
    fp32 = in_memory(loaded) if eval_data is not None else None  # weights by reference
    del loaded
    from edgeq.passes.weights import reuse_quantized_weights

    with reuse_quantized_weights():  # each weight quantized once for all the variants
        result = auto_quantize(model, data, min_sqnr=min_sqnr, metric=config.metric, min_score=config.min_score,
                               provider=config.provider, threads=config.threads, eval_data=eval_data,
                               config=config.replace(mode="static", min_sqnr=None, max_size=None), progress=progress,
                               max_size=config.max_size)
    result.report["config"] = config.replace(min_sqnr=min_sqnr).to_dict()
    result.report["summary"]["seconds"] = round(time.perf_counter() - start, 3)  # the whole search
    if eval_data is not None:
        evaluate(result, fp32, eval_data, labels)
    return result
