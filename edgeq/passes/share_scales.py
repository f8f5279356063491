"""Share one scale through ops that only move data, so nothing is requantized around them.

    DQ(s) -> Reshape -> Q(s) -> DQ(s)      (same scale and zero point initializers)

ORT then drops the DQ/Q pair and runs the op on int8 data directly. Analysis only: the plan's
``values`` map points each shape-only output at its input (the root whose range calibration
observes), so calibration needs fewer tensors as well.

1. Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Slice, Gather, Expand, Tile, Split and
   Resize-nearest copy values: the output range is within the input range, sharing is exact.
2. MaxPool picks values: also exact.
3. Concat: an input whose only use is this Concat (and whose scale is its own) takes the
   Concat output's scale. Sound: the output range is the union of the input ranges, and the
   value is requantized to the output's scale anyway, so a finer input scale buys nothing; with
   equal scales QLinearConcat is a plain copy. Inputs read elsewhere keep their own scale.
4. A weight and bias read by several int8 Conv/Gemm nodes (an unrolled LSTM's 40 steps): the
   int32 bias is quantized with its reader's input scale times the weight's, so readers with
   their own input scales store one bias each. Their inputs' ranges are merged into one scale
   (``plan.unions``, applied after calibration: ``stages.calibrate``) so the bias is stored once
   per group: readers are grouped narrowest range first, each group's merged range at most
   ``MAX_WIDEN`` times its narrowest member's (a coarser scale costs a reader more than a bias per
   reader costs the file; an unrolled LSTM: step 0 reads the input, steps 1-39 the tanh state).
   Readers that differ in activation precision are left alone.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from edgeq.graph import InspectPass
from edgeq.passes.plan import QuantPlan, Role

__all__ = ["ShareScalesPass", "MAX_WIDEN"]

MAX_WIDEN = 2.0  # (4): a merged range at most this many times the narrowest reader's (one bit)
BIAS_INPUT = {"Conv": 2, "Gemm": 2}

logger = logging.getLogger(__name__)


class ShareScalesPass(InspectPass):
    """Point shape-only outputs at the value whose scale they reuse (an inspect pass)."""

    def __init__(self, plan: QuantPlan) -> None:
        super().__init__()
        self.plan = plan

    def inspect(self, model: ir.Model) -> None:
        plan = self.plan
        shared = 0
        for node in ir.traversal.RecursiveGraphIterator(model.graph):  # subgraphs too (select.py (11))
            if plan.role(node) != Role.PASSTHROUGH:
                if node.op_type == "Concat" and plan.role(node) == Role.COMPUTE:
                    shared += self._concat(node)
                continue
            source = node.inputs[0]
            if source not in plan.values:
                continue
            for out in node.outputs:
                if out in plan.values:
                    plan.values[out] = source  # (1), (2)
                    shared += 1
        logger.info("share_scales: %d values reuse another value's scale", shared)
        self._shared_bias(model)

    def _concat(self, node: ir.Node) -> int:
        """(3) single-use inputs with their own scale take the output's."""
        plan, out, count = self.plan, node.outputs[0], 0
        if out not in plan.values or plan.values[out] is not out:
            return 0
        for value in node.inputs:
            if (value is not None and plan.values.get(value) is value and len(value.uses()) == 1
                    and not value.is_graph_output() and value.producer() is not None
                    and plan.is_int8(value.producer())):
                plan.values[value] = out
                count += 1
        return count

    def _shared_bias(self, model: ir.Model) -> None:
        """(4) one scale group per weight + bias pair read by several int8 nodes."""
        plan = self.plan
        readers: dict[tuple[ir.Value, ir.Value], list[ir.Node]] = {}
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            index = BIAS_INPUT.get(node.op_type)
            if (index is None or plan.role(node) != Role.COMPUTE or len(node.inputs) <= index
                    or node.inputs[index] is None or node.inputs[0] not in plan.values):
                continue
            readers.setdefault((node.inputs[1], node.inputs[index]), []).append(node)
        for nodes in readers.values():
            roots = list(dict.fromkeys(plan.root(n.inputs[0]) for n in nodes))
            if len(roots) > 1 and len({n in plan.int16 for n in nodes}) == 1:
                plan.unions.append(roots)
                logger.info("share_scales: %d readers of one bias share their input scale", len(nodes))
