"""Drop exporters' debug metadata from the quantized model.

torch.onnx writes:

1. five entries on every node (``namespace``, ``pkg.torch.onnx.stack_trace``,
   ``class_hierarchy``, ``fx_node``, ``name_scopes``): Python stack traces with the exporting
   machine's file paths, about 1 KB a node (86 KB of tiny_transformer's 2.2 MB);
2. on the graph, the ExportedProgram's signature and range constraints
   (``pkg.torch.export.*``): a line per parameter, 4.6 KB of the zoo's kws, a quarter of its
   2-bit file;
3. on each value (initializers above all), its parameter kind and original name
   (``pkg.torch.export.graph_signature.*``, ``pkg.torch.onnx.original_node_name``) and
   onnxscript's constant-folding record (``pkg.onnxscript.*``).

The quantized model is for deployment: these are dropped from every node, graph and value
(subgraphs included). Other keys, and the model's own ``metadata_props`` (a tokenizer, say), are
kept.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.graph import graphs_of

__all__ = ["StripDebugMetadataPass", "DEBUG_PREFIXES"]

DEBUG_PREFIXES = ("pkg.torch.onnx.", "pkg.torch.export.", "pkg.onnxscript.", "namespace")


def _strip(props: dict[str, str]) -> int:
    keys = [k for k in props if k.startswith(DEBUG_PREFIXES)]
    for key in keys:
        del props[key]
    return len(keys)


class StripDebugMetadataPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        dropped = 0
        for graph in graphs_of(model):
            dropped += _strip(graph.metadata_props)  # (2)
            values = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
            for node in graph:
                dropped += _strip(node.metadata_props)  # (1)
                values += node.outputs
            dropped += sum(_strip(v.metadata_props) for v in values)  # (3)
        return ir.passes.PassResult(model, modified=dropped > 0)
