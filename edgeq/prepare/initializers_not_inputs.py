"""Initializers that old exporters also list as graph inputs become plain constants.

    graph(x, W) with initializer W  ==>  graph(x), initializer W

Before IR version 4 every initializer had to be a graph input too; old torch, Keras and Caffe
converters still write models that way. onnxruntime treats such an initializer as a default a
caller may override, so neither BatchNorm folding nor weight quantization may treat it as a
constant. No user feeds a weight, so they are removed from the inputs (with a note), and the IR
version is raised to 4 where needed.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.prepare._base import NotingPass

__all__ = ["InitializersNotInputsPass"]


class InitializersNotInputsPass(NotingPass):
    """Remove initializers from the main graph's inputs."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        weights = [v for v in graph.inputs if v.name in graph.initializers and v.const_value is not None]
        if not weights:
            return ir.passes.PassResult(model, modified=False)
        kept = [v for v in graph.inputs if v not in weights]
        graph.inputs.clear()
        graph.inputs.extend(kept)
        model.ir_version = max(model.ir_version, 4)
        self.note(f"{len(weights)} initializer(s) listed as graph inputs (an old exporter's habit) are now constants")
        return ir.passes.PassResult(model, modified=True)
