"""Dims written as ``dim_value: -1`` or ``0``, or named ``"?"`` (exporters' "unknown"), become
symbolic dims of their own.

    x: float[-1, 3, 48, 192]  ==>  x: float[unk__x_0, 3, 48, 192]
    x: float[0, 3, 48, 192]   ==>  x: float[unk__x_0, 3, 48, 192]
    x: float[-1, 3, ?, ?]     ==>  x: float[unk__x_0, 3, unk__x_2, unk__x_3]

1. Graph inputs and outputs: onnxruntime reads -1 as unknown but 0 as a fixed size of zero (it
   refuses every real feed: "Got: 1 Expected: 0"); Paddle and older TensorFlow exporters write
   both for a dynamic batch or width; Paddle2ONNX also names the height and the width of an image
   "?" alike. Each such dim gets a name of its own, so no two dims are tied to the same size.
2. Intermediate values' recorded shapes get the same treatment (shape inference reruns later
   and fills in what it can).

No dim_param, an empty dim and a missing shape are left as they are: they already mean unknown.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.prepare._base import NotingPass
from edgeq.runtime.feeds import symbolic_dim

__all__ = ["UnknownDimsPass"]


def _unknown(dim: object) -> bool:
    if isinstance(dim, int):
        return dim <= 0
    value = getattr(dim, "value", None)
    return value is not None and symbolic_dim(value) is None


def _fixed(value: ir.Value) -> ir.Shape | None:
    """``value``'s shape with its "unknown" dims given names of their own, or None when it has none."""
    shape = value.shape
    if shape is None or not any(_unknown(d) for d in shape.dims):
        return None
    dims = [ir.SymbolicDim(f"unk__{value.name}_{axis}") if _unknown(d) else d for axis, d in enumerate(shape.dims)]
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
            self.note(f"dims written as -1, 0 or '?' (an exporter's 'unknown') made symbolic on {', '.join(map(repr, named))}")
        return ir.passes.PassResult(model, modified=bool(changed))
