"""Share one scale through ops that only move data, so nothing is requantized around them.

    DQ(s) -> Reshape -> Q(s) -> DQ(s)      (same scale and zero point initializers)

ORT then drops the DQ/Q pair and runs the op on int8 data directly. Analysis only: the plan's
``values`` map points each shape-only output at its input (the root whose range calibration
observes), so calibration needs fewer tensors as well.

1. Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Slice, Gather, Expand, Tile, Split and
   Resize-nearest copy values: the output range is within the input range, sharing is exact.
2. MaxPool picks values: also exact.
3. Concat keeps its own scale: its inputs come from different producers with different ranges,
   and onnxruntime's QLinearConcat requantizes each input for the price of a copy.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from edgeq.passes.plan import QuantPlan, Role

__all__ = ["ShareScales"]

logger = logging.getLogger(__name__)


class ShareScales(ir.passes.InPlacePass):
    def __init__(self, plan: QuantPlan) -> None:
        super().__init__()
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        plan = self.plan
        shared = 0
        for node in model.graph:
            if plan.role(node) != Role.PASSTHROUGH:
                continue
            source = node.inputs[0]
            if source not in plan.values:
                continue
            for out in node.outputs:
                if out in plan.values:
                    plan.values[out] = source  # (1), (2)
                    shared += 1
        logger.info("share_scales: %d values reuse their input's scale", shared)
        return ir.passes.PassResult(model, modified=False)
