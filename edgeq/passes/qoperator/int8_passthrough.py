"""``DQ(x) -> op -> Q  ==>  op`` on the integer tensor, when the op only moves or selects
values (MaxPool, Reshape, Transpose, Slice, Concat, Flatten, Squeeze, Unsqueeze) and the Q
has the DQ's scale and zero point; and ``DQ(x) -> Relu|Clip -> Q  ==>  Max|Clip`` on it.

1. Every DequantizeLinear input (all inputs of Concat, input 0 of the others) shares the
   output's dtype, scale and zero point; other inputs (shapes, axes) are left alone.
2. MaxPool must not use its Indices output.
3. Relu becomes ``Max(x, zero_point)``; Clip gets its bounds quantized (rounded inward).
4. With ``requantize`` (integer_only) and a Q of another scale, the op still runs on the integer
   tensor and is followed by ``DQ(input scale) -> Q``: a requantization (fixed point in the
   reference) instead of a float island. These ops commute with a positive affine rescale.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, const_array
from edgeq.passes.qoperator._match import dequantized, quantized_output, same_quant
from edgeq.passes.qoperator._rule import Match, Rule, copy_attributes, replace_with

__all__ = ["Int8PassthroughRule", "PASSTHROUGH_OPS"]

PASSTHROUGH_OPS = (
    "MaxPool", "Reshape", "Transpose", "Slice", "Concat", "Flatten", "Squeeze", "Unsqueeze",
    "Relu", "Clip",
)


def _quantize_bound(value: float, scale: float, zp: int, dtype: np.dtype, up: bool) -> np.ndarray:
    info = np.iinfo(dtype)
    q = (np.ceil if up else np.floor)(value / scale) + zp
    return np.array(np.clip(q, info.min, info.max), dtype=dtype)


class Int8PassthroughRule(Rule):
    name = "int8 passthrough"
    op_types = PASSTHROUGH_OPS

    def __init__(self, requantize: bool = False) -> None:
        self.requantize = requantize

    def check(self, node: ir.Node, graph: ir.Graph) -> Match | str:
        data = range(len(node.inputs)) if node.op_type == "Concat" else (0,)
        if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1].uses():
            return "MaxPool Indices output is used"
        qins = {}
        for i in data:
            q = dequantized(node.inputs[i], graph)
            if isinstance(q, str):
                return f"input {i}: {q}"
            qins[i] = q
        out = quantized_output(node.outputs[0], graph)
        if isinstance(out, str):
            return out
        if out.fused:
            return f"{out.fused[0].op_type} after {node.op_type} is not folded"
        rescale = False
        for i, q in qins.items():
            if not same_quant(q, out):
                if not self.requantize or node.op_type == "Concat" or not q.per_tensor:
                    return f"input {i} and output are quantized differently (needs rescaling)"
                rescale = True  # case 4
        if rescale and node.op_type == "Clip":
            return "Clip between different scales is not rewritten"
        bounds = None
        if node.op_type == "Clip":
            bounds = []
            for idx, up in ((1, True), (2, False)):
                v = node.inputs[idx] if len(node.inputs) > idx else None
                if v is None:
                    bounds.append(None)
                    continue
                arr = const_array(v)
                if arr is None:
                    return "Clip bounds are not constant"
                bounds.append(_quantize_bound(float(arr), float(out.scale_array),
                                              int(out.zero_point_array), out.dtype.numpy(), up))
        return Match({"in": qins, "out": out, "bounds": bounds, "rescale": rescale})

    def rewrite(self, node: ir.Node, graph: ir.Graph, match: Match) -> ir.Node:
        qins, out = match["in"], match["out"]
        inputs = list(node.inputs)
        for i, q in qins.items():
            inputs[i] = q.value
        op_type, attrs = node.op_type, copy_attributes(node)
        if match["rescale"]:
            return _rewrite_rescaled(graph, node, inputs, qins[0])
        if op_type == "Relu":
            op_type, attrs = "Max", []
            inputs.append(out.zero_point)
        elif op_type == "Clip":
            inputs = [inputs[0]] + [
                None if b is None else add_initializer(graph, f"{node.name}_bound", b)
                for b in match["bounds"]
            ]
        new = replace_with(graph, node, out, op_type, inputs, attrs)
        return new


def _rewrite_rescaled(graph: ir.Graph, node: ir.Node, inputs: list, x) -> ir.Node:
    """Case 4: ``op(x_q) -> DQ(s_x, z_x)`` in place of ``op``; the Q after it stays."""
    if node.op_type == "Relu":
        new = ir.Node("", "Max", [inputs[0], x.zero_point], name=node.name)
    else:
        new = ir.Node("", node.op_type, inputs, attributes=copy_attributes(node), name=node.name)
    new.outputs[0].dtype = x.dtype
    dq = ir.Node("", "DequantizeLinear", [new.outputs[0], x.scale, x.zero_point],
                 name=f"{node.name}_dequantize")
    ir.convenience.replace_nodes_and_values(
        graph, node, [node], [new, dq], [node.outputs[0]], [dq.outputs[0]]
    )
    return new
