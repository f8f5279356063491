"""``QOperatorPass``: QDQ graph ==> integer operators, keeping what it rewrote and why not.

The rules run in graph order; for each node the first rule whose check matches rewrites it,
and the reasons of the rules that did not match are kept for the report. The rest of the
integer-only pipeline (names first; then dead Q/DQ pairs, float islands) is the literal list
``edgeq.passes.pipeline.integer_only_passes``; ``edgeq.stages.integer_only`` runs it and adds the
per-layer fixed-point parameters of the integer reference to the report section.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx_ir as ir

from edgeq.passes.qoperator._rule import Rule
from edgeq.passes.qoperator.conv_integer import ConvIntegerRule
from edgeq.passes.qoperator.int8_passthrough import Int8PassthroughRule
from edgeq.passes.qoperator.matmul_integer import MatMulIntegerRule
from edgeq.passes.qoperator.qgemm import QGemmRule
from edgeq.passes.qoperator.qlinear_add import QLinearAddRule
from edgeq.passes.qoperator.qlinear_average_pool import QLinearAveragePoolRule
from edgeq.passes.qoperator.qlinear_concat import QLinearConcatRule
from edgeq.passes.qoperator.qlinear_conv import QLinearConvRule
from edgeq.passes.qoperator.qlinear_global_average_pool import QLinearGlobalAveragePoolRule
from edgeq.passes.qoperator.qlinear_leaky_relu import QLinearLeakyReluRule
from edgeq.passes.qoperator.qlinear_matmul import QLinearMatMulRule
from edgeq.passes.qoperator.qlinear_mul import QLinearMulRule
from edgeq.passes.qoperator.qlinear_sigmoid import QLinearSigmoidRule

__all__ = ["rules", "QOperatorPass"]

logger = logging.getLogger(__name__)


def rules(integer_only: bool = False) -> list[Rule]:
    """Every rule, in the order tried for a node (QLinear forms before integer fallbacks).

    ``integer_only`` lets value-moving ops between different scales run on integers followed
    by a requantization, rather than stay float islands."""
    return [
        QLinearConvRule(),
        ConvIntegerRule(),
        QLinearMatMulRule(),
        MatMulIntegerRule(),
        QGemmRule(),
        QLinearAddRule(),
        QLinearMulRule(),
        QLinearSigmoidRule(),
        QLinearLeakyReluRule(),
        QLinearGlobalAveragePoolRule(),
        QLinearAveragePoolRule(),
        # before QLinearConcat: a same-scale Concat needs no rescaling
        Int8PassthroughRule(requantize=integer_only),
        QLinearConcatRule(),
    ]


class QOperatorPass(ir.passes.InPlacePass):
    """``DQ -> op -> Q  ==>  QLinear op`` for every node a rule matches.

    Keeps, for the report: ``rewritten`` (one record per rewrite, with the earlier rules that did
    not match and why) and ``not_rewritten`` (node -> its record, with every rule's reason). Run
    ``NameFixPass`` before it: the records name nodes.
    """

    def __init__(self, integer_only: bool = False) -> None:
        super().__init__()
        self.integer_only = integer_only
        self.rewritten: list[dict[str, Any]] = []
        self.not_rewritten: dict[ir.Node, dict[str, Any]] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        by_op: dict[str, list[Rule]] = {}
        for rule in rules(self.integer_only):
            for op in rule.op_types:
                by_op.setdefault(op, []).append(rule)
        self.rewritten, self.not_rewritten = [], {}
        for node in list(graph):
            if node.graph is None or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            why = []
            for rule in by_op.get(node.op_type, []) if node.domain in ("", "ai.onnx") else []:
                match = rule.check(node, graph)
                if isinstance(match, str):
                    why.append(f"{rule.name}: {match}")
                    continue
                name, op_type = node.name, node.op_type
                new = rule.rewrite(node, graph, match)
                record = {"rule": rule.name, "node": name, "op_type": op_type,
                          "new_op": new.op_type}
                if why:  # earlier rules (QLinear forms) that did not match, and why
                    record["not_matched"] = why
                self.rewritten.append(record)
                logger.debug("%s: %s %s -> %s", rule.name, op_type, name, new.op_type)
                break
            else:
                why = why or [f"no integer rule for {node.domain or 'ai.onnx'}.{node.op_type}"]
                self.not_rewritten[node] = {"node": node.name, "op_type": node.op_type, "reasons": why}
        logger.info("qoperator: %d nodes rewritten, %d not", len(self.rewritten), len(self.not_rewritten))
        return ir.passes.PassResult(model, modified=bool(self.rewritten))

