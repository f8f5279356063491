"""An fp16 (or bf16) model computes in fp32 for quantization; its inputs and outputs keep their type.

    x: float16 -> Conv(W: float16) -> y: float16
    ==>  x: float16 -> Cast(to=float) -> Conv(W: float32) -> Cast(to=float16) -> y: float16

int8 quantization works from an fp32 graph: its scales, QDQ pairs and integer kernels are float32
on the float side. A model exported in half precision (GPU exports, ``model.half()``) used to be
kept float, every node "input is FLOAT16, not float32". On the CPU, onnxruntime has no fp16
Conv/MatMul kernels anyway (it casts around each node), so the fp32 graph is also the faster float
baseline.

1. Float16/bfloat16 initializers become float32 (exact: fp32 holds every fp16 and bf16 value).
2. Every value's fp16/bf16 type becomes float32, in bodies too; ``Cast`` and ``dtype``
   attributes that name fp16/bf16 name float32; Constant/ConstantOfShape values are upcast.
3. Main-graph inputs and outputs keep their type and name: a ``Cast`` to float32 after each such
   input, a ``Cast`` back before each such output, so callers feed and read what they did.

Only the quantize paths run it (``prepare_model(..., upcast_float16=True)``); ``edgeq prepare``
leaves a model's precision as it is.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.prepare._base import NotingPass

__all__ = ["UpcastFloat16Pass"]

_HALF = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
_DTYPE_ATTRS = ("to", "dtype")


def _upcast_tensor(tensor: ir.TensorProtocol) -> ir.Tensor:
    return ir.Tensor(tensor.numpy().astype(np.float32), name=tensor.name)


def _fix_node(node: ir.Node) -> bool:
    changed = False
    for key in _DTYPE_ATTRS:
        attr = node.attributes.get(key)
        if attr is not None and attr.type == ir.AttributeType.INT and attr.as_int() in (int(t) for t in _HALF):
            node.attributes[key] = ir.AttrInt64(key, int(ir.DataType.FLOAT))
            changed = True
    if node.op_type in ("Constant", "ConstantOfShape"):
        attr = node.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR and attr.as_tensor().dtype in _HALF:
            node.attributes["value"] = ir.AttrTensor("value", _upcast_tensor(attr.as_tensor()))
            changed = True
    for value in node.outputs:
        if value.dtype in _HALF:
            value.dtype = ir.DataType.FLOAT
            changed = True
    return changed


class UpcastFloat16Pass(NotingPass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        boundary_in = [v for v in graph.inputs if v.dtype in _HALF]
        boundary_out = {v.name: v.dtype for v in graph.outputs if v.dtype in _HALF and v.producer() is not None}
        count = 0
        for g in model.graphs():
            for value in g.initializers.values():
                if value.const_value is not None and value.const_value.dtype in _HALF:
                    value.const_value = _upcast_tensor(value.const_value)
                    value.dtype = ir.DataType.FLOAT
                    count += 1
            for value in g.inputs:  # a body's inputs (a Loop's carried values)
                if g is not graph and value.dtype in _HALF:
                    value.dtype = ir.DataType.FLOAT
            for node in g:
                count += _fix_node(node)
        for value in boundary_in:  # (3)
            half = value.dtype
            inner = ir.Value(name=f"{value.name}_fp32", type=ir.TensorType(ir.DataType.FLOAT), shape=value.shape)
            uses = list(value.uses())
            cast = ir.Node("", "Cast", [value], {"to": ir.AttrInt64("to", int(ir.DataType.FLOAT))},
                           outputs=[inner], name=f"{value.name}_to_fp32")
            if len(graph):
                graph.insert_before(graph[0], cast)
            else:
                graph.append(cast)
            for use in uses:
                use.node.replace_input_with(use.idx, inner)
            value.dtype = half
            count += 1
        for i, value in enumerate(list(graph.outputs)):
            if value.name not in boundary_out or value.producer() is None:
                continue
            name, half = value.name, boundary_out[value.name]
            value.name = f"{name}_fp32"
            value.dtype = ir.DataType.FLOAT
            out = ir.Value(name=name, type=ir.TensorType(half), shape=value.shape)
            graph.append(ir.Node("", "Cast", [value], {"to": ir.AttrInt64("to", int(half))}, outputs=[out],
                                 name=f"{name}_to_{half.name.lower()}"))
            graph.outputs[i] = out
            count += 1
        if count:
            self.note("fp16/bf16 model: computed in fp32 for quantization (inputs and outputs keep their type, "
                      "through Casts)")
        return ir.passes.PassResult(model, modified=bool(count))
