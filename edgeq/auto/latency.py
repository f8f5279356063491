"""Latency-aware placement: where int8 pays on the target provider, measured, not assumed.

* ``islands``: int8 compute nodes with no int8 compute neighbour (through shape-only and folded
  nodes): the Q and DQ around them often cost more than the int8 kernel saves.
* ``gaps``: float compute nodes with int8 compute neighbours on both sides: quantizing them back
  (when fidelity allows) merges two int8 regions, so precision changes fewer times.
* ``measure`` (``edgeq.runtime.timing``, re-exported: the stages time with it too): median
  latency of several models on one provider and thread count, runs interleaved so that drift on
  a shared machine hits them alike.
* ``measure_in_groups``: the same for many models, at most ``GROUP`` sessions alive at once, each
  group timed with the anchor (fp32) and scaled to it: timing MiniLM's 21 configurations and
  fp32 at once held 23 sessions and set auto's peak memory (1649 MB).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["islands", "gaps", "measure", "measure_in_groups", "precision_changes", "has_int8", "GROUP"]

from edgeq.runtime.timing import BUDGET_S, measure

logger = logging.getLogger(__name__)

GROUP = 6  # sessions alive at once in ``measure_in_groups`` (the anchor included)


def _compute_neighbours(plan: Any, node: Any, upstream: bool) -> list[Any]:
    """Nearest compute nodes up- or downstream of ``node``, walking through int8 passthrough
    and folded nodes (and through nothing else)."""
    from edgeq.passes.plan import Role

    found, seen = [], set()
    frontier = [v for v in (node.inputs if upstream else node.outputs) if v is not None]
    while frontier:
        value = frontier.pop()
        if value in seen or value.const_value is not None:
            continue
        seen.add(value)
        nodes = [value.producer()] if upstream else list(value.consumers())
        for other in nodes:
            if other is None or other is node:
                continue
            role = plan.role(other)
            if role == Role.COMPUTE:
                found.append(other)
            elif role in (Role.PASSTHROUGH, Role.FOLDED):
                frontier.extend(v for v in (other.inputs if upstream else other.outputs) if v is not None)
    return found


def islands(plan: Any, graph: Any) -> list[str]:
    """Names of int8 compute nodes whose nearest compute neighbours are all float."""
    from edgeq.passes.plan import Role

    out = []
    for node in graph:
        if plan.role(node) != Role.COMPUTE:
            continue
        around = _compute_neighbours(plan, node, True) + _compute_neighbours(plan, node, False)
        if not any(plan.role(n) == Role.COMPUTE for n in around):
            out.append(node.name)
    return out


def _float_neighbours(graph: Any, node: Any, upstream: bool) -> list[Any]:
    values = [v for v in (node.inputs if upstream else node.outputs) if v is not None and v.const_value is None]
    if upstream:
        return [v.producer() for v in values if v.producer() is not None]
    return [c for v in values for c in v.consumers()]


def gaps(plan: Any, graph: Any, candidates: Sequence[str]) -> list[str]:
    """Of ``candidates`` (float compute nodes), those between int8 compute nodes on both sides
    (at most one float Relu/Clip or shape op in between)."""
    from edgeq.passes.plan import Role

    wanted = set(candidates)

    def int8_near(node: Any, upstream: bool) -> bool:
        for other in _float_neighbours(graph, node, upstream):
            if plan.role(other) != Role.FLOAT:
                return True
            if other.op_type in ("Relu", "Clip", "Reshape", "Flatten", "MaxPool"):
                if any(plan.role(o) != Role.FLOAT for o in _float_neighbours(graph, other, upstream)):
                    return True
        return False

    return [n.name for n in graph if n.name in wanted and int8_near(n, True) and int8_near(n, False)]


def precision_changes(model: Any) -> int:
    """QuantizeLinear + DequantizeLinear nodes on activations: each is one precision change."""
    from edgeq.graph import all_nodes

    return sum(1 for n in all_nodes(model.graph) if n.op_type == "QuantizeLinear")


def has_int8(model: Any) -> bool:
    """Whether any node, in the main graph or an If/Loop/Scan body, runs or feeds an int8 kernel."""
    return any(_is_int8_op(n.op_type) for graph in [model.graph, *model.graph.subgraphs()] for n in graph)


def _is_int8_op(op: str) -> bool:
    # QuantizeLinear/DequantizeLinear, DynamicQuantizeLinear/DynamicQuantizeMatMul/DynamicQuantizeLSTM,
    # QLinear*, QGemm/QAttention, MatMulInteger/ConvInteger, MatMulIntegerToFloat
    return ("Quantize" in op or op.startswith(("QLinear", "QGemm", "QAttention")) or "Integer" in op)


def measure_in_groups(models: Mapping[str, Any], feed: Mapping[str, np.ndarray], *, anchor: str,
                      group: int = GROUP, budget_s: float = BUDGET_S, **kwargs: Any) -> dict[str, float]:
    """``measure`` over ``models`` in groups of at most ``group`` sessions, ``anchor`` in each, in
    the order given (put the ones to compare closely together); a group's times are scaled by the
    anchor's median over all groups divided by its time in that group (drift between groups
    cancels, as within one). The time budget is shared out by sessions, as one ``measure`` of
    them all would spend it (resnet224's 29 sessions in 6 groups each with the whole budget: 45 ->
    67 s of auto)."""
    others = [name for name in models if name != anchor]
    size = max(1, group - 1)
    if len(others) <= size:
        return measure(models, feed, budget_s=budget_s, **kwargs)
    chunks = [others[i : i + size] for i in range(0, len(others), size)]
    sessions = sum(len(c) + 1 for c in chunks)
    groups = [measure({anchor: models[anchor], **{n: models[n] for n in c}}, feed,
                      budget_s=budget_s * (len(c) + 1) / sessions, **kwargs) for c in chunks]
    base = statistics.median(g[anchor] for g in groups)
    out = {anchor: base}
    for g in groups:
        scale = base / g[anchor] if g[anchor] > 0 else 1.0
        out.update({n: t * scale for n, t in g.items() if n != anchor})
    return out
