"""Dead-node and unused-initializer removal in every graph; the model's signature stays.

    n -> (no user, not a graph output)  ==>  (removed)

Cases:
1. Nodes whose outputs are used by nobody and are not graph outputs go (onnx_ir's
   RemoveUnusedNodesPass, which also recurses into If/Loop/Scan bodies).
2. Initializers that nothing reads go, in the main graph and in subgraphs, unless they are
   graph inputs or outputs.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from edgeq.prepare._base import NotingPass

__all__ = ["RemoveDeadCodePass"]


class RemoveDeadCodePass(NotingPass):
    """Remove unused nodes and initializers everywhere."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        nodes_before = sum(1 for _ in model.graph.all_nodes())
        inits_before = sum(len(g.initializers) for g in model.graphs())
        RemoveUnusedNodesPass()(model)  # case 1
        for graph in model.graph.subgraphs():  # case 2 (the main graph was done above)
            keep = frozenset(graph.inputs) | frozenset(graph.outputs)
            for name, value in list(graph.initializers.items()):
                if not value.uses() and value not in keep:
                    del graph.initializers[name]
        nodes = nodes_before - sum(1 for _ in model.graph.all_nodes())
        inits = inits_before - sum(len(g.initializers) for g in model.graphs())
        if nodes or inits:
            self.note(f"removed {nodes} dead node(s) and {inits} unused initializer(s)")
        return ir.passes.PassResult(model, modified=bool(nodes or inits))
