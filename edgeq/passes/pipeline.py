"""The quantize pipelines as literal lists: reordering is a one-line diff.

Two stages around calibration: ``analysis_passes`` put float ops into forms with int8 kernels
(still float, so calibration sees an equivalent float graph) and decide what is quantized;
``rewrite_passes`` then rewrite it using the calibrated scales in the plan.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.config import QuantConfig
from edgeq.errors import EdgeqError
from edgeq.passes.canonicalize import Canonicalize
from edgeq.passes.dynamic import DynamicQuantize
from edgeq.passes.fp16 import Float16Nodes
from edgeq.passes.insert_qdq import InsertQDQ
from edgeq.passes.plan import QuantPlan
from edgeq.passes.quantize_embeddings import QuantizeEmbeddings
from edgeq.passes.quantize_weights import QuantizeWeights
from edgeq.passes.select import SelectNodes
from edgeq.passes.share_scales import ShareScales

__all__ = ["analysis_passes", "rewrite_passes", "run_passes"]


def analysis_passes(config: QuantConfig, plan: QuantPlan) -> list[ir.passes.PassBase]:
    return [
        Canonicalize(),
        SelectNodes(config, plan),
        ShareScales(plan),
    ]


def rewrite_passes(config: QuantConfig, plan: QuantPlan) -> list[ir.passes.PassBase]:
    fp16 = [Float16Nodes(config.fp16_nodes, plan)] if config.fp16_nodes else []  # fp16.py (6): last
    if config.mode == "dynamic":
        return [DynamicQuantize(config, plan), QuantizeEmbeddings(plan), *fp16]
    return [
        QuantizeWeights(config, plan),
        InsertQDQ(plan),  # int16 pairs too (insert_qdq.py (5))
        DynamicQuantize(config, plan),  # select.py (5): weighted MatMul/Gemm between float ops
        QuantizeEmbeddings(plan),  # select.py (7): int8 Gather tables
        *fp16,
    ]


def run_passes(model: ir.Model, passes: list[ir.passes.PassBase]) -> ir.Model:
    """Run ``passes``; an EdgeqError a pass raises (a user mistake) comes out as itself, not
    wrapped in onnx_ir's PassError."""
    try:
        return ir.passes.PassManager(passes)(model).model
    except ir.passes.PassError as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, EdgeqError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
