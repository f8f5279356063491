"""Give every unnamed node of the main graph a unique name: ``OpType_index``.

The report labels nodes this way, and ``--exclude``, ``--int16-node``, ``--fp16-node`` and auto
mode pick nodes by name, so a name the report shows must be a name the options accept.

    Conv (no name), Relu (no name), Conv "head"  ==>  Conv "Conv_0", Relu "Relu_1", Conv "head"

A generated name that is already taken gets ``_`` appended until it is unique. Named nodes keep
their names (duplicates included: renaming them would break a user's ``--exclude``).
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.prepare._base import NotingPass

__all__ = ["NameNodesPass"]


class NameNodesPass(NotingPass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        taken = {node.name for node in model.graph if node.name}
        named = 0
        for i, node in enumerate(model.graph):
            if node.name:
                continue
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
        if named:
            self.note(f"{named} unnamed node(s) named OpType_index (as the report and --exclude name them)")
        return ir.passes.PassResult(model, modified=bool(named))
