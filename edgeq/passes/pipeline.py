"""The quantize pipelines as literal lists: reordering is a one-line diff.

Two stages around calibration: ``analysis_passes`` put float ops into forms with int8 kernels
(still float, so calibration sees an equivalent float graph) and decide what is quantized;
``rewrite_passes`` then rewrite it using the calibrated scales in the plan.
``integer_only_passes`` turn the QDQ result into integer operators (``--format qoperator``).
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.config import QuantConfig
from edgeq.passes.canonicalize import CanonicalizePass
from edgeq.passes.channel_scales import ChannelScalesPass
from edgeq.passes.dynamic import DynamicQuantizePass
from edgeq.passes.float_weights import Float16WeightsPass
from edgeq.passes.fp16 import Float16NodesPass
from edgeq.passes.fuse_activations import FuseActivationsPass
from edgeq.passes.insert_qdq import InsertQDQPass
from edgeq.passes.int4_storage import Int4StoragePass
from edgeq.passes.per_token import PerTokenMatMulPass
from edgeq.passes.plan import QuantPlan
from edgeq.passes.qoperator.cleanup import RemoveDeadQDQPass
from edgeq.passes.qoperator.islands import FloatIslandsPass
from edgeq.passes.qoperator.rewrite import QOperatorPass
from edgeq.passes.quantize_embeddings import QuantizeEmbeddingsPass
from edgeq.passes.quantize_recurrent import QuantizeRecurrentPass
from edgeq.passes.quantize_weights import QuantizeWeightsPass
from edgeq.passes.select import SelectNodesPass
from edgeq.passes.share_scales import ShareScalesPass
from edgeq.passes.share_weights import ShareWeightsPass
from edgeq.passes.strip_debug import StripDebugMetadataPass

__all__ = ["analysis_passes", "rewrite_passes", "integer_only_passes"]


def analysis_passes(config: QuantConfig, plan: QuantPlan) -> list[ir.passes.PassBase]:
    return [
        CanonicalizePass(),
        FuseActivationsPass(),  # one float op per activation chain, before selection
        SelectNodesPass(config, plan),
        ShareScalesPass(plan),
    ]


def rewrite_passes(config: QuantConfig, plan: QuantPlan) -> list[ir.passes.PassBase]:
    fp16 = [Float16NodesPass(config.fp16_nodes, plan)] if config.fp16_nodes else []  # fp16.py (6): last
    # float_weights.py (4): after sharing (one copy each); QDQ only (integer-only targets run no Cast)
    stored = [Float16WeightsPass(plan)] if config.float_weights == "fp16" and config.format == "qdq" else []
    if config.mode == "dynamic":
        return [QuantizeRecurrentPass(config, plan), DynamicQuantizePass(config, plan),
                PerTokenMatMulPass(config, plan), QuantizeEmbeddingsPass(plan),
                *fp16, ShareWeightsPass(), *stored, StripDebugMetadataPass()]
    return [
        QuantizeWeightsPass(config, plan),
        InsertQDQPass(plan),  # int16 pairs too (insert_qdq.py (5))
        *([ChannelScalesPass(plan)] if config.channel_scales else []),  # needs the Q/DQ pairs above
        QuantizeRecurrentPass(config, plan),  # select.py (10): LSTM; before DynamicQuantizePass (both Role.DYNAMIC)
        DynamicQuantizePass(config, plan),  # select.py (5): weighted MatMul/Gemm between float ops
        PerTokenMatMulPass(config, plan),  # those of (5) in plan.per_token, and int8-per-token nodes (12)
        QuantizeEmbeddingsPass(plan),  # select.py (7): int8 Gather tables
        *fp16,
        ShareWeightsPass(),  # a weight many nodes read: quantized per reader above, stored once here
        *([Int4StoragePass()] if config.weights == "int4" else []),  # W4A8: one Cast per stored int4 weight
        *stored,  # float_weights.py: weights left float stored as fp16
        StripDebugMetadataPass(),  # exporters' stack traces: not for deployment
    ]


def integer_only_passes(config: QuantConfig) -> list[ir.passes.PassBase]:
    """QDQ ==> integer operators; the rewrite and islands passes keep what the report needs."""
    rewrite = QOperatorPass(integer_only=config.integer_only)
    return [
        common_passes.NameFixPass(),  # the report names nodes
        rewrite,
        RemoveDeadQDQPass(),
        ShareWeightsPass(),  # QLinear* weights of one shared weight: one copy
        FloatIslandsPass(rewrite, strict=config.strict, warn=config.integer_only),  # inspect-only
    ]
