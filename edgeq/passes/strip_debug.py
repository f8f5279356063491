"""Drop exporters' per-node debug metadata from the quantized model.

torch.onnx writes five entries on every node (``namespace``, ``pkg.torch.onnx.stack_trace``,
``class_hierarchy``, ``fx_node``, ``name_scopes``): Python stack traces with the exporting
machine's file paths, about 1 KB a node (86 KB of tiny_transformer's 2.2 MB). The quantized model
is for deployment: they are dropped from every node (subgraphs included), other metadata keys and
the model's own ``metadata_props`` are kept.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["StripDebugMetadataPass", "DEBUG_PREFIXES"]

DEBUG_PREFIXES = ("pkg.torch.onnx.", "pkg.onnxscript.", "namespace")


class StripDebugMetadataPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        dropped = 0
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            keys = [k for k in node.metadata_props if k.startswith(DEBUG_PREFIXES)]
            for key in keys:
                del node.metadata_props[key]
            dropped += len(keys)
        return ir.passes.PassResult(model, modified=dropped > 0)
