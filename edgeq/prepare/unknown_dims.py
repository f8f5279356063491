"""Dims written as ``dim_value: -1`` or ``0`` (exporters' "unknown") become symbolic dims.

    x: float[-1, 3, 48, 192]  ==>  x: float[unk__x_0, 3, 48, 192]
    x: float[0, 3, 48, 192]   ==>  x: float[unk__x_0, 3, 48, 192]

1. Graph inputs and outputs: onnxruntime reads -1 as unknown but 0 as a fixed size of zero (it
   refuses every real feed: "Got: 1 Expected: 0"); Paddle and older TensorFlow exporters write
   both for a dynamic batch or width. Each such dim gets a name of its own, so no two dims are
   tied to the same size by the rewrite.
2. Intermediate values' recorded shapes get the same treatment (shape inference reruns later
   and fills in what it can).

No dim_param, an empty dim and a missing shape are left as they are: they already mean unknown.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.prepare._base import NotingPass

__all__ = ["UnknownDimsPass"]


def _fixed(value: ir.Value) -> ir.Shape | None:
    """``value``'s shape with dims <= 0 symbolic, or None when it has none."""
    shape = value.shape
    if shape is None or not any(isinstance(d, int) and d <= 0 for d in shape.dims):
        return None
    dims = [ir.SymbolicDim(f"unk__{value.name}_{axis}") if isinstance(d, int) and d <= 0 else d
            for axis, d in enumerate(shape.dims)]
    return ir.Shape(dims)


class UnknownDimsPass(NotingPass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        boundary = [*graph.inputs, *graph.outputs]
        inner = [v for node in graph for v in node.outputs if v not in boundary]
        changed = []
        for value in [*boundary, *inner]:  # cases 1 and 2
            shape = _fixed(value)
            if shape is not None:
                value.shape = shape
                changed.append(value.name)
        named = [n for n in changed if any(n == v.name for v in boundary)]
        if named:
            self.note(f"dims written as -1 or 0 (an exporter's 'unknown') made symbolic on {', '.join(map(repr, named))}")
        return ir.passes.PassResult(model, modified=bool(changed))
