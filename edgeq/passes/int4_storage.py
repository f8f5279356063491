"""4-bit weights stored packed, read by onnxruntime's int8 kernels: a Cast in front of their DequantizeLinear.

    W_q int4 [..] -> DequantizeLinear(s, zp int4, axis) -> Conv/Gemm/MatMul
      ==>  W_q int4 [..] -> Cast(to int8) -> DequantizeLinear(s, zp int8, axis) -> Conv/Gemm/MatMul

1. Why: onnxruntime has no kernel for a 4-bit convolution. It leaves DequantizeLinear out of its
   constant folding (its QDQ fusions need it), so a DequantizeLinear of int4 codes feeding a Conv
   runs on every inference and the Conv takes a weight it cannot pre-pack: measured on one
   128x128x3x3 Conv, 1 thread, 1.2x the fp32 time, and a QAT W4A8 model at 0.33-0.57x fp32
   (docs/qat.md). A Cast of a constant is folded at session load, so after it the weight is an
   int8 constant behind the DequantizeLinear, and the QDQ fusions make QLinearConv, QGemm or
   QLinearMatMul of it as they do for int8 weights: int8 speed, with the codes packed two per byte
   in the file. The values are the same int4 levels (exact).
2. Only a DequantizeLinear whose codes are an int4/uint4 initializer and that has no
   ``block_size`` (per tensor or per channel): a blocked one feeding a MatMul is what onnxruntime
   turns into MatMulNBits (weight-only mode), which reads 4 bits itself.
3. The zero point (int4/uint4; absent, 0 of either type) becomes int8/uint8 with the same values, since
   DequantizeLinear needs the codes' type. Cast from int4 is opset 21, which int4 needs anyway.
4. Subgraphs too; a weight read by several DequantizeLinear nodes gets one Cast.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, graphs_of, initializer_tensor, remove_unused_initializers

__all__ = ["Int4StoragePass", "WIDE"]

logger = logging.getLogger(__name__)

WIDE = {ir.DataType.INT4: ir.DataType.INT8, ir.DataType.UINT4: ir.DataType.UINT8}  # (3)


def _blocked(node: ir.Node) -> bool:
    attr = node.attributes.get("block_size")
    return attr is not None and int(attr.value) > 0


class Int4StoragePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for graph in graphs_of(model):  # (4)
            casts: dict[int, ir.Value] = {}  # codes or zero point -> its 8-bit reading
            for node in list(graph):
                if node.op_type != "DequantizeLinear" or node.domain != "" or _blocked(node):  # (2)
                    continue
                codes = node.inputs[0]
                tensor = initializer_tensor(codes)
                if tensor is None or tensor.dtype not in WIDE:
                    continue
                wide = WIDE[tensor.dtype]
                if id(codes) not in casts:
                    cast = ir.node("Cast", [codes], {"to": ir.AttrInt64("to", wide.value)}, name=f"{codes.name}_to8")
                    cast.outputs[0].name = f"{codes.name}_8"
                    cast.outputs[0].dtype = wide
                    cast.outputs[0].shape = ir.Shape(tensor.shape)
                    graph.insert_before(node, cast)
                    casts[id(codes)] = cast.outputs[0]
                node.replace_input_with(0, casts[id(codes)])
                self._widen_zero_point(graph, node, wide, casts)
                count += 1
        logger.info("int4_storage: %d DequantizeLinear read int4 codes through a Cast to 8 bits", count)
        return ir.passes.PassResult(model, modified=count > 0)

    @staticmethod
    def _widen_zero_point(graph: ir.Graph, node: ir.Node, wide: ir.DataType, done: dict[int, ir.Value]) -> None:
        """(3) the zero point in the codes' new type: one new initializer per zero point (another
        reader may keep the old one; it is removed when none does)."""
        zp = node.inputs[2] if len(node.inputs) > 2 else None
        if zp is None:
            return  # no zero point: 0 of the codes' type, int8 or uint8 alike
        if id(zp) not in done:
            tensor = initializer_tensor(zp)
            if tensor is None or tensor.dtype not in WIDE:
                return  # not a constant 4-bit zero point: left to onnx.checker to refuse, as before
            values = tensor.numpy().astype(np.int16).astype(np.int8 if wide == ir.DataType.INT8 else np.uint8)
            done[id(zp)] = add_initializer(graph, f"{zp.name}_8", values)
        node.replace_input_with(2, done[id(zp)])
        remove_unused_initializers(graph, [zp])
