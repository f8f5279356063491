"""Identity and inference-mode Dropout removal in every graph; graph output names stay stable.

    x -> Identity -> y -> Conv      ==>  x -> Conv
    x -> Dropout(mask unused) -> y  ==>  x

Cases:
1. ``y`` is not a graph output: its users read ``x``.
2. ``y`` is a graph output and ``x`` is produced by a node of the same graph and is neither an
   input nor an output of any graph: ``x`` takes ``y``'s name so the model's outputs keep their
   names.
3. Otherwise (``x`` is a graph input, an initializer, an outer-scope value, or itself a graph
   output) the node stays.
4. Dropout stays when its mask output is used or when ``training_mode`` is not a constant false.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import ONNX_DOMAINS, initializer_tensor
from edgeq.prepare._base import NotingPass

__all__ = ["EliminateIdentityPass"]

logger = logging.getLogger(__name__)


def _dropout_is_identity(node: ir.Node) -> bool:  # case 4
    if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
        return False
    if len(node.inputs) >= 3 and node.inputs[2] is not None:
        training = initializer_tensor(node.inputs[2])
        if training is None or bool(np.asarray(training.numpy()).reshape(-1)[0]):
            return False
    return True


class EliminateIdentityPass(NotingPass):
    """Remove Identity and inference Dropout nodes everywhere, subgraphs included."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        removed: dict[str, int] = {}
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.domain not in ONNX_DOMAINS or node.op_type not in ("Identity", "Dropout"):
                continue
            if node.op_type == "Dropout" and not _dropout_is_identity(node):
                continue
            if self._eliminate(node):
                removed[node.op_type] = removed.get(node.op_type, 0) + 1
        for op, count in sorted(removed.items()):
            self.note(f"{count} {op} node(s) removed")
        return ir.passes.PassResult(model, modified=bool(removed))

    @staticmethod
    def _eliminate(node: ir.Node) -> bool:
        source, output = node.inputs[0], node.outputs[0]
        graph = node.graph
        if source is None or graph is None:
            return False
        if not output.is_graph_output():  # case 1
            output.replace_all_uses_with(source)
            graph.remove(node, safe=True)
            return True
        producer = source.producer()
        if (  # case 3
            producer is None
            or producer.graph is not graph
            or source.is_graph_input()
            or source.is_graph_output()
            or source.is_initializer()
        ):
            return False
        # case 2: the source takes the output's place and name
        name = output.name
        ir.convenience.replace_all_uses_with(output, source, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        output.name = None
        source.name = name
        if source.shape is None:
            source.shape = output.shape
        if source.type is None:
            source.type = output.type
        return True
