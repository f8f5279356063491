"""``rewrite_qoperator``: QDQ graph ==> integer operators, with a report section.

The rules run in graph order; for each node the first rule whose check matches rewrites it,
and the reasons of the rules that did not match are kept for the report. Then identity and dead
Q/DQ pairs go (``RemoveDeadQDQPass``), float islands are found, and the per-layer fixed-point
multipliers and shifts are computed by the integer reference.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.errors import UnsupportedError
from edgeq.passes.qoperator._rule import Rule
from edgeq.passes.qoperator.cleanup import RemoveDeadQDQPass
from edgeq.passes.qoperator.conv_integer import ConvIntegerRule
from edgeq.passes.qoperator.int8_passthrough import Int8PassthroughRule
from edgeq.passes.qoperator.islands import find_islands, find_requantizations
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

__all__ = ["rules", "rewrite_qoperator", "QOperatorPass"]

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
    """``DQ -> op -> Q  ==>  QLinear op`` for every node a rule matches; keeps ``section``."""

    def __init__(self, integer_only: bool = False, strict: bool = False) -> None:
        super().__init__()
        self.integer_only = integer_only
        self.strict = strict
        self.section: dict[str, Any] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        common_passes.NameFixPass()(model)  # the report names nodes
        by_op: dict[str, list[Rule]] = {}
        for rule in rules(self.integer_only):
            for op in rule.op_types:
                by_op.setdefault(op, []).append(rule)
        rewritten: list[dict] = []
        not_rewritten: list[tuple[ir.Node, dict]] = []
        reasons: dict[ir.Node, list[str]] = {}
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
                rewritten.append(record)
                logger.debug("%s: %s %s -> %s", rule.name, op_type, name, new.op_type)
                break
            else:
                why = why or [f"no integer rule for {node.domain or 'ai.onnx'}.{node.op_type}"]
                reasons[node] = why
                not_rewritten.append(
                    (node, {"node": node.name, "op_type": node.op_type, "reasons": why}))
        RemoveDeadQDQPass()(model)
        islands = find_islands(graph, reasons)
        self.section = {
            "format": "qoperator",
            "integer_only": self.integer_only,
            "rewritten": rewritten,
            "not_rewritten": [r for node, r in not_rewritten if node.graph is graph],
            "float_islands": islands,
            "requantizations": find_requantizations(graph),
        }
        logger.info("qoperator: %d nodes rewritten, %d float islands", len(rewritten), len(islands))
        if islands and (self.strict or self.integer_only):
            names = ", ".join(f"{i['op_type']} {i['node']!r}" for i in islands)
            message = (f"{len(islands)} node(s) still run in float between integer ops: {names} "
                       f"({islands[0]['reasons'][0]})")
            if self.strict:
                raise UnsupportedError(message + "; drop --strict to keep them in float")
            logger.warning(message)
        self.section["layers"] = _layer_params(model)
        return ir.passes.PassResult(model, modified=bool(rewritten))


def _layer_params(model: ir.Model) -> list[dict]:
    """Fixed-point parameters of every integer layer (float islands are skipped)."""
    from edgeq.reference import export_params

    return export_params(model, partial=True)["layers"]


def rewrite_qoperator(model: ir.Model, config) -> dict[str, Any]:
    """Rewrite ``model`` (QDQ form) in place into integer operators; return the report section.

    ``config`` is an ``edgeq.config.QuantConfig``: ``integer_only`` also rewrites value-moving
    ops between different scales (with a requantization) and warns about float islands left;
    ``strict`` raises ``UnsupportedError`` naming them.
    """
    rewrite = QOperatorPass(integer_only=config.integer_only, strict=config.strict)
    rewrite(model)
    return rewrite.section
