"""The shape of a QOperator rule: a pattern rooted at one op, a check that says why it does
not match, and a replacement built from the match."""

from __future__ import annotations

import dataclasses
from typing import Any

import onnx_ir as ir

from edgeq.passes.qoperator._match import QOutput

__all__ = ["Rule", "Match", "replace_with", "copy_attributes"]

@dataclasses.dataclass(frozen=True)
class Match:
    """What a rule's check found; ``data`` holds the rule's own pieces."""

    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


class Rule:
    """One rewrite. Subclasses set ``name`` (the new op), ``op_types`` and the two methods."""

    name: str = ""
    op_types: tuple[str, ...] = ()

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        """A Match, or a reason why ``node`` does not match this rule."""
        raise NotImplementedError

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        """Replace the matched nodes in ``graph``; return the new integer node."""
        raise NotImplementedError


def copy_attributes(node: ir.Node, names: tuple[str, ...] | None = None) -> list[ir.Attr]:
    """The node's attributes (those in ``names`` when given)."""
    return [a for k, a in node.attributes.items() if names is None or k in names]


def replace_with(
    graph: ir.Graph,
    node: ir.Node,
    out: QOutput | None,
    op_type: str,
    inputs: list[ir.Value | None],
    attributes: list[ir.Attr] = (),
    domain: str = "",
    old_output: ir.Value | None = None,
) -> ir.Node:
    """Put ``op_type(inputs)`` in place of ``node`` and its output Q (and folded activation).

    The new node's output takes over every use of the Q output (``out.value``), or of
    ``old_output`` when the op output stays float. The DequantizeLinear nodes feeding ``node``
    are left for the dead Q/DQ cleanup, since other nodes may share them.
    """
    new = ir.Node(domain, op_type, inputs, attributes=list(attributes), name=node.name)
    old_nodes = [node, *(out.nodes if out is not None else [])]
    old_value = out.value if out is not None else (old_output or node.outputs[0])
    new.outputs[0].dtype = (out.dtype if out is not None else old_value.dtype)
    ir.convenience.replace_nodes_and_values(
        graph, old_nodes[-1], old_nodes, [new], [old_value], [new.outputs[0]]
    )
    return new
