"""Constant folding of nodes whose inputs are all constant initializers (main graph).

    W -> Transpose -> Reshape -> Cast -> MatMul  ==>  W' -> MatMul
    Shape(x with static shape) -> Gather -> ...  ==>  initializer

Cases:
1. A default-domain node whose inputs are all constant initializers (not overridable graph
   inputs) is evaluated with onnx.reference and its outputs become initializers.
2. ``Shape`` of a value with a fully static shape folds without reading any data.
3. Never folded: nodes with subgraphs, random ops, QuantizeLinear/DequantizeLinear (a
   pre-quantized model stays quantized), nodes whose outputs are graph outputs, and nodes
   whose output would exceed the size of their inputs by more than ``growth`` (Expand, Tile,
   ConstantOfShape blowing up) or ``max_bytes`` in all.
4. A node the reference evaluator cannot run, or whose result is not numeric or does not
   have the dtype the graph declares, is left as it is.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import ONNX_DOMAINS, initializer_tensor
from edgeq.prepare._base import NotingPass

__all__ = ["FoldConstantsPass"]

logger = logging.getLogger(__name__)

_NEVER = frozenset(
    {
        "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
        "Multinomial", "Bernoulli", "QuantizeLinear", "DequantizeLinear",
        "DynamicQuantizeLinear", "If", "Loop", "Scan", "Constant",
    }
)
_SMALL = 1 << 16  # outputs this small always fold (shape arithmetic)


def _static_shape(value: ir.Value) -> tuple[int, ...] | None:
    if value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return tuple(value.shape)


def _evaluate(node: ir.Node, arrays: list[np.ndarray | None]) -> list[np.ndarray]:
    import onnx
    from onnx.reference import ReferenceEvaluator

    names = [f"i{k}" if a is not None else "" for k, a in enumerate(arrays)]
    inputs = [
        onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in zip(names, arrays)
        if a is not None
    ]
    outputs = [f"o{k}" for k in range(len(node.outputs))]
    proto_node = ir.serde.serialize_node(node)
    del proto_node.input[:]
    proto_node.input.extend(names)
    del proto_node.output[:]
    proto_node.output.extend(outputs)
    graph = onnx.helper.make_graph(
        [proto_node], "fold", inputs, [onnx.helper.make_empty_tensor_value_info(o) for o in outputs]
    )
    opset = node.graph.opset_imports.get("", 13) if node.graph is not None else 13
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {n: a for n, a in zip(names, arrays) if a is not None}
    results = ReferenceEvaluator(model).run(None, feeds)
    if not all(isinstance(r, np.ndarray) for r in results):
        raise TypeError("not a tensor result (a sequence or optional)")
    return results


class FoldConstantsPass(NotingPass):
    """Evaluate all-constant subgraphs of the main graph into initializers."""

    def __init__(self, growth: float = 1.0, max_bytes: int = 256 << 20) -> None:
        super().__init__()
        self.growth = growth
        self.max_bytes = max_bytes

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        folded = 0
        for node in list(graph):
            if node.domain not in ONNX_DOMAINS or node.op_type in _NEVER:
                continue
            if any(o.is_graph_output() for o in node.outputs) or not node.outputs:
                continue
            if any(o.type is not None and not isinstance(o.type, ir.TensorType) for o in node.outputs):
                continue  # sequences and optionals do not become initializers
            if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
                continue
            results = self._fold(node)
            if results is None:
                continue
            self._replace(graph, node, results)
            folded += 1
        if folded:
            self.note(f"{folded} constant node(s) folded into initializers")
        return ir.passes.PassResult(model, modified=bool(folded))

    def _fold(self, node: ir.Node) -> list[np.ndarray] | None:
        if node.op_type == "Shape" and node.inputs[0] is not None:  # case 2
            shape = _static_shape(node.inputs[0])
            if shape is not None:
                start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", None)
                return [np.asarray(shape[start:end], dtype=np.int64)]
        tensors = [initializer_tensor(v) if v is not None else None for v in node.inputs]
        if not node.inputs or any(t is None for v, t in zip(node.inputs, tensors) if v is not None):
            return None
        in_bytes = sum(t.nbytes for t in tensors if t is not None)
        if in_bytes > self.max_bytes:
            return None
        arrays = [np.asarray(t.numpy()) if t is not None else None for t in tensors]
        try:
            results = _evaluate(node, arrays)
        except Exception as e:  # case 4: the reference evaluator lacks the op or fails
            logger.debug("cannot fold %s (%s): %s", node.name, node.op_type, e)
            return None
        for output, result in zip(node.outputs, results):
            if result.dtype.kind not in "biuf" or (
                output.dtype is not None and output.dtype.numpy() != result.dtype
            ):
                return None  # case 4: strings, or the evaluator disagrees with the declared type
        out_bytes = sum(r.nbytes for r in results)
        if out_bytes > _SMALL and (out_bytes > self.growth * in_bytes or out_bytes > self.max_bytes):
            return None  # case 3: folding would blow the model up
        return results

    @staticmethod
    def _replace(graph: ir.Graph, node: ir.Node, results: list[np.ndarray]) -> None:
        new_values = []
        for output, array in zip(node.outputs, results):
            if not output.name or not output.uses():
                continue
            value = ir.Value(name=output.name, const_value=ir.tensor(array, name=output.name))
            value.shape = ir.Shape(array.shape)
            value.dtype = ir.DataType.from_numpy(array.dtype)
            output.replace_all_uses_with(value)
            output.name = None  # the initializer takes the name
            new_values.append(value)
        graph.remove(node, safe=True)  # its now-unused inputs go in the dead-code pass
        for value in new_values:
            graph.register_initializer(value)
