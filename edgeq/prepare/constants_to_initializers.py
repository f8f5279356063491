"""Constant nodes and Identity-of-initializer become initializers.

    Constant(value=W) -> Conv        ==>  Conv(W as an initializer)
    W (initializer) -> Identity -> Conv  ==>  Conv(W)

Cases:
1. ``Constant`` with ``value``, ``value_float(s)``, ``value_int(s)`` or ``value_string(s)``
   becomes an initializer of the graph that holds it (subgraphs included), whatever its size:
   quantizers find weights only among initializers, and constant folding needs them too.
2. A Constant whose output is also a graph output stays (an initializer cannot be renamed to
   it safely in every runtime); so does a ``sparse_value`` Constant, with a note.
3. ``Identity`` of a constant initializer is removed and its users read the initializer,
   unless the Identity's output is a graph output.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import ONNX_DOMAINS, initializer_tensor
from edgeq.prepare._base import NotingPass

__all__ = ["ConstantsToInitializersPass"]

logger = logging.getLogger(__name__)


def _tensor_of(node: ir.Node, name: str) -> ir.TensorProtocol | None:
    attr_name, attr = next(iter(node.attributes.items()))
    if attr_name == "value":
        return attr.as_tensor()
    if attr_name in ("value_int", "value_ints"):
        return ir.tensor(np.asarray(attr.value, dtype=np.int64), name=name)
    if attr_name in ("value_float", "value_floats"):
        return ir.tensor(np.asarray(attr.value, dtype=np.float32), name=name)
    if attr_name in ("value_string", "value_strings"):
        return ir.StringTensor(np.asarray(attr.value, dtype=np.bytes_), name=name)
    return None  # sparse_value: case 2


class ConstantsToInitializersPass(NotingPass):
    """Lift Constant nodes and Identity-of-initializer to initializers in every graph.

    ``source`` names where the Constant nodes come from in the notes (e.g. "the opset converter").
    """

    def __init__(self, source: str | None = None) -> None:
        super().__init__()
        self.source = source

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        lifted = skipped = identities = 0
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.domain not in ONNX_DOMAINS or node.graph is None:
                continue
            if node.op_type == "Constant":
                if self._lift(node):
                    lifted += 1
                else:
                    skipped += 1
            elif node.op_type == "Identity" and self._bypass_identity(node):
                identities += 1
        if lifted:
            origin = f" (added by {self.source})" if self.source else ""
            self.note(f"{lifted} Constant node(s){origin} became initializers (their weights are quantizable)")
        if skipped:
            self.note(f"{skipped} Constant node(s) kept (graph output or sparse value)")
        if identities:
            self.note(f"{identities} Identity node(s) of initializers removed")
        return ir.passes.PassResult(model, modified=bool(lifted or identities))

    @staticmethod
    def _lift(node: ir.Node) -> bool:
        output = node.outputs[0]
        if output.is_graph_output() or len(node.attributes) != 1:  # case 2
            return False
        tensor = _tensor_of(node, output.name or "")
        if tensor is None:
            return False
        graph = node.graph
        initializer = ir.Value(
            name=output.name,
            shape=ir.Shape(tensor.shape),
            type=ir.TensorType(tensor.dtype),
            const_value=tensor,
        )
        output.replace_all_uses_with(initializer)
        graph.remove(node, safe=True)
        output.name = None  # the initializer takes the name
        graph.register_initializer(initializer)
        logger.debug("lifted Constant %s to an initializer", output.name)
        return True

    @staticmethod
    def _bypass_identity(node: ir.Node) -> bool:  # case 3
        source, output = node.inputs[0], node.outputs[0]
        if initializer_tensor(source) is None or output.is_graph_output():
            return False
        output.replace_all_uses_with(source)
        node.graph.remove(node, safe=True)
        return True
