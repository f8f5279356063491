"""Route values inside If/Loop/Scan bodies out to graph outputs, so calibration can observe them.

    If(then: ... v ...)    ==>  If(then: v -> Identity -> out,  else: Constant(empty) -> out) -> main output
    Loop(body: ... v ...)  ==>  Loop(body: v -> Identity -> scan output) -> main output (v of every iteration)
    Scan(body: ... v ...)  ==>  Scan(body: v -> Identity -> scan output) -> main output (likewise)

    copy, outputs = routed_copy(model, values)   # outputs[i]: the copy's graph output carrying values[i]

1. If: ``v`` becomes an extra output of its branch; the other branch outputs an empty tensor of
   ``v``'s type (a Constant with a zero-sized first axis, of ``v``'s rank where known). The
   observers skip empty arrays, so a sample that takes the other branch adds nothing, and a branch
   no sample takes leaves its tensors unobserved (no range: they stay float).
2. Loop: body outputs after the condition and the carried values are scan outputs, stacked over
   the iterations: the extra output holds ``v`` of every iteration, whose min/max/histogram is
   what ``v``'s range needs (none with zero trips: empty).
3. Scan: likewise after the state values; ``scan_output_axes``/``scan_output_directions``, when
   given, get a 0 for each extra output.
4. Nested bodies: the new output of the inner node is a value of the outer body, routed out in
   turn, up to the main graph. A value of an If branch inside a Loop/Scan body is not routed
   (``unroutable`` says why): iterations that take the other branch would output the empty tensor,
   and a Loop cannot stack outputs of different shapes.
5. Values are routed through an Identity, so a body input (a Loop's carried state) and a value
   that already is a body output work alike.

The rewrite happens on a clone (``ir.Model.clone``: new nodes and values, tensors shared, nothing
copied), so the caller's model is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

__all__ = ["routed_copy", "unroutable"]

CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


def unroutable(value: ir.Value, model: ir.Model) -> str | None:
    """Why ``value`` of ``model`` cannot be routed out (a subgraph of another op), else None."""
    holders = _holders(model.graph)
    graph, in_branch = value.graph, False
    while graph is not None and graph is not model.graph:
        node, _ = holders[graph]
        if node.op_type not in CONTROL_FLOW or node.domain not in ("", "ai.onnx"):
            return f"inside a subgraph of {node.domain or 'ai.onnx'}::{node.op_type} (only If/Loop/Scan bodies are observed)"
        if in_branch and node.op_type != "If":  # (4)
            return (f"inside an If branch within a {node.op_type} body (iterations may take either branch, "
                    "whose outputs a Loop/Scan cannot stack)")
        in_branch = in_branch or node.op_type == "If"
        graph = node.graph
    return None


def routed_copy(model: ir.Model, values: Sequence[ir.Value]) -> tuple[ir.Model, list[ir.Value]]:
    """A clone of ``model`` where every one of ``values`` (of ``model``) reaches a main-graph
    output; the clone and, in order, the output carrying each value."""
    copy = model.clone()
    twins = _twins(model, copy)
    holders = _holders(copy.graph)
    outputs = []
    for i, value in enumerate(values):
        twin = twins[value]
        while twin.graph is not copy.graph:  # (4) out one level at a time
            twin = _route(twin, *holders[twin.graph], f"edgeq_observed_{i}_{len(outputs)}")
        if not twin.is_graph_output():
            copy.graph.outputs.append(twin)
        outputs.append(twin)
    return copy, outputs


def _twins(model: ir.Model, copy: ir.Model) -> dict[ir.Value, ir.Value]:
    """Each value of ``model``'s graphs -> its clone (the clone keeps every order)."""
    twins: dict[ir.Value, ir.Value] = {}
    for graph, twin in zip(model.graphs(), copy.graphs()):
        twins.update(zip(graph.inputs, twin.inputs))
        twins.update(zip(graph.initializers.values(), twin.initializers.values()))
        for node, node_twin in zip(graph, twin):
            twins.update(zip(node.outputs, node_twin.outputs))
    return twins


def _holders(graph: ir.Graph) -> dict[ir.Graph, tuple[ir.Node, str]]:
    """Each subgraph -> (the node holding it, its attribute's name)."""
    holders = {}
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                holders[attr.as_graph()] = (node, attr.name)
    return holders


def _route(value: ir.Value, node: ir.Node, attr: str, name: str) -> ir.Value:
    """(1)-(3), (5): ``value`` of ``node``'s subgraph ``attr`` as a new output of ``node``."""
    body = node.attributes[attr].as_graph()
    identity = ir.node("Identity", [value], name=f"{name}_identity")
    out = identity.outputs[0]
    out.name, out.type, out.shape = f"{name}_{body.name or attr}", value.type, value.shape
    body.append(identity)
    body.outputs.append(out)
    if node.op_type == "If":  # (1)
        other = node.attributes["else_branch" if attr == "then_branch" else "then_branch"].as_graph()
        rank = len(value.shape) if value.shape is not None else 1
        dtype = value.dtype or ir.DataType.FLOAT
        empty = ir.node("Constant", [], {"value": ir.tensor(np.zeros((0,) + (1,) * (rank - 1), dtype.numpy()))},
                        name=f"{name}_empty")
        empty.outputs[0].name = f"{name}_empty"
        empty.outputs[0].type = ir.TensorType(dtype)
        other.append(empty)
        other.outputs.append(empty.outputs[0])
    elif node.op_type == "Scan":  # (3)
        for key in ("scan_output_axes", "scan_output_directions"):
            if key in node.attributes:
                node.attributes[key] = ir.AttrInt64s(key, [*node.attributes[key].value, 0])
    node.resize_outputs(len(node.outputs) + 1)  # (2), (3): after the carried/state values
    new = node.outputs[-1]
    new.name, new.type = name, value.type
    return new
