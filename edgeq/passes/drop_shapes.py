"""Drop the recorded types and shapes of intermediate values (``value_info``) from a model file.

    value_info [intermediate values' and initializers' types and shapes]  ==>  (none; graph inputs
                                                                              and outputs keep theirs)

1. Initializers too: their tensors carry their type and dims already. Run last: a pass after it
   may need the types it drops.

ONNX does not need them, and runtimes infer them again when a session loads; on a small model
they are a tenth of the file (digits_mobilenet compressed to 2-bit codebooks: 8.8 of 78 KB). For
compress mode, whose point is the smallest file (``stages/compress.py``). Subgraphs too.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.graph import graphs_of

__all__ = ["DropShapesPass"]


class DropShapesPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        dropped = 0
        for graph in graphs_of(model):
            kept = set(graph.inputs) | set(graph.outputs)
            values = [v for node in graph for v in node.outputs] + list(graph.initializers.values())
            for value in values:  # an initializer's tensor carries its own type and shape (1)
                if value in kept or (value.type is None and value.shape is None):
                    continue
                value.type, value.shape = None, None
                dropped += 1
        return ir.passes.PassResult(model, modified=dropped > 0)
