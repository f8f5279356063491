"""Float islands: what still runs in float between the first Q and the last DQ.

A node is on an island when it is neither QuantizeLinear nor DequantizeLinear, computes on a
float tensor, is reachable from some QuantizeLinear and reaches the end of an integer region:
a DequantizeLinear, or an integer operator with a float output (QGemm with no output scale). A
``DQ -> Q`` pair (a requantization, e.g. after MatMulInteger) is listed apart: the integer
reference runs it in fixed point, though onnxruntime runs it in float.

``FloatIslandsPass`` finds both after the rewrite and its cleanup, and says so: an
``UnsupportedError`` naming the islands with ``strict``, a warning with ``integer_only``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import onnx_ir as ir

from edgeq.errors import UnsupportedError
from edgeq.graph import InspectPass
from edgeq.passes.qoperator.rewrite import QOperatorPass

__all__ = ["FloatIslandsPass", "find_islands", "find_requantizations"]

logger = logging.getLogger(__name__)

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def _reach(starts: list[ir.Node], forward: bool) -> set[ir.Node]:
    seen: set[ir.Node] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if forward:
            nxt = [u.node for v in node.outputs for u in v.uses()]
        else:
            nxt = [v.producer() for v in node.inputs if v is not None and v.producer() is not None]
        for n in nxt:
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return seen


def _is_float(node: ir.Node) -> bool:
    """Float tensors in or out (a DQ input or a Q consumer counts when types are unknown)."""
    values = [*node.inputs, *node.outputs]
    if any(v is not None and v.dtype in _FLOATS and v.const_value is None for v in values):
        return True
    from_dq = any(v is not None and v.producer() is not None
                  and v.producer().op_type == "DequantizeLinear" for v in node.inputs)
    to_q = any(u.node.op_type == "QuantizeLinear" for v in node.outputs for u in v.uses())
    return from_dq or to_q


_INTS = (ir.DataType.INT8, ir.DataType.UINT8)


def _ends_integer(node: ir.Node) -> bool:
    """DequantizeLinear, or an op reading a computed int8/uint8 tensor and writing a float one."""
    if node.op_type == "DequantizeLinear":
        return True
    if node.op_type in _QDQ:
        return False
    reads_int = any(v is not None and v.dtype in _INTS and v.const_value is None for v in node.inputs)
    return reads_int and any(v.dtype in _FLOATS for v in node.outputs)


def find_islands(graph: ir.Graph, reasons: Mapping[ir.Node, list[str]]) -> list[dict]:
    """Island nodes in graph order, each with why no rule rewrote it."""
    after_q = _reach([n for n in graph if n.op_type == "QuantizeLinear"], forward=True)
    before_dq = _reach([n for n in graph if _ends_integer(n)], forward=False)
    islands = []
    for node in graph:
        if node.op_type in _QDQ or node not in after_q or node not in before_dq:
            continue
        if not _is_float(node):
            continue
        why = reasons.get(node) or [f"no integer rule for {node.op_type}"]
        islands.append({"node": node.name, "op_type": node.op_type, "reasons": why})
    return islands


def find_requantizations(graph: ir.Graph) -> list[dict]:
    """``DQ -> Q`` pairs: the DQ output read only by QuantizeLinear nodes."""
    pairs = []
    for dq in graph:
        if dq.op_type != "DequantizeLinear":
            continue
        uses = [u.node for u in dq.outputs[0].uses()]
        if uses and all(u.op_type == "QuantizeLinear" for u in uses):
            pairs += [{"dequantize": dq.name, "quantize": q.name} for q in uses]
    return pairs


class FloatIslandsPass(InspectPass):
    """Inspect-only: float islands and requantizations left by ``rewrite``; the model is not changed.

    Keeps ``islands`` (each with why no rule rewrote it, from ``rewrite.not_rewritten``) and
    ``requantizations``. Islands raise ``UnsupportedError`` with ``strict``, and are logged as a
    warning with ``warn`` (integer-only mode); run it after ``RemoveDeadQDQPass``.
    """

    def __init__(self, rewrite: QOperatorPass, *, strict: bool = False, warn: bool = False) -> None:
        super().__init__()
        self.rewrite = rewrite
        self.strict = strict
        self.warn = warn
        self.islands: list[dict] = []
        self.requantizations: list[dict] = []

    def inspect(self, model: ir.Model) -> None:
        reasons = {node: record["reasons"] for node, record in self.rewrite.not_rewritten.items()}
        self.islands = find_islands(model.graph, reasons)
        self.requantizations = find_requantizations(model.graph)
        logger.info("qoperator: %d float islands, %d requantizations", len(self.islands), len(self.requantizations))
        if self.islands and (self.strict or self.warn):
            names = ", ".join(f"{i['op_type']} {i['node']!r}" for i in self.islands)
            message = (f"{len(self.islands)} node(s) still run in float between integer ops: {names} "
                       f"({self.islands[0]['reasons'][0]})")
            if self.strict:
                raise UnsupportedError(message + "; drop --strict to keep them in float")
            logger.warning(message)
