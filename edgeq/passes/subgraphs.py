"""Subgraph bodies that calibration never ran: their int8 nodes go back to float, with the reason.

    If(then: Conv -> Relu -> Conv, else: ...)   a calibration set where every sample took ``else``
    ==>  then's Conv, Relu, Conv: float ("never ran on the calibration data")

Selection (select.py (11)) treats If branches and Loop/Scan bodies like the main graph, before
calibration. Calibration observes a body's values only in the samples that run it
(``calibrate.subgraph_outputs``): a branch no sample took (or a Loop that never iterated) has no
range for any of its tensors.

1. Every int8 node (compute, passthrough, folded) of a graph holding a root without a range goes
   back to float; dynamic and weight-only nodes need no range and stay.
2. ``plan.values`` then keeps only values that an int8 node still reads or produces, so a value of
   an outer graph read by the demoted body keeps its pair only where outer int8 nodes need it.
3. Roots of the main graph without a range are not this pass's business: the caller reports them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import onnx_ir as ir

from edgeq.passes.plan import QuantPlan, Role

__all__ = ["demote_unobserved"]

logger = logging.getLogger(__name__)


def demote_unobserved(plan: QuantPlan, model: ir.Model, roots: Iterable[ir.Value],
                      skipped: Mapping[str, str]) -> list[ir.Value]:
    """Demote the bodies holding ``roots`` (roots with no range; ``skipped``: calibration's reason
    per name); return the roots left (3)."""
    left, bodies = [], {}
    for root in roots:
        if root.graph is None or root.graph is model.graph:
            left.append(root)
        else:
            bodies.setdefault(root.graph, root)
    for body, root in bodies.items():  # (1)
        demoted = 0
        for node in body:
            if plan.is_int8(node):
                plan.decide(node, Role.FLOAT, _reason(body, root, skipped.get(root.name, "")))
                plan.int16.discard(node)
                demoted += 1
        logger.info("subgraph %r never ran in calibration: %d int8 nodes left float", body.name, demoted)
    if bodies:  # (2)
        for value in list(plan.values):
            if not plan.is_int8(value.producer()) and not any(plan.is_int8(u.node) for u in value.uses()):
                del plan.values[value]
        kept = set(plan.roots())
        plan.unions[:] = [[r for r in group if r in kept] for group in plan.unions]
        plan.unions[:] = [group for group in plan.unions if len(group) > 1]
    return left


def _reason(body: ir.Graph, root: ir.Value, skipped: str) -> str:
    if not skipped or skipped.startswith("empty"):
        return (f"inside a subgraph ({body.name or 'body'}) that never ran on the calibration data (no range "
                f"for {root.name!r}): calibrate with samples that take it")
    return f"inside a subgraph ({body.name or 'body'}) without calibrated ranges ({root.name!r}: {skipped})"
