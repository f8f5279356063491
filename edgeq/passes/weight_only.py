"""Weight-only quantization of MatMul/Gemm: int4 (or int8) weights in blocks along K, float compute.

    A -> MatMul(A, W [K, N]) (-> Add(b))  ==>  MatMulNBits(A, codes, scales, zero points, bias=b)
                                          or  MatMul(A, DequantizeLinear(codes int4 [K, N], scales [K/B, N],
                                                                         axis=0, block_size=B)) (-> Add(b))

1. ``weight_op="matmulnbits"`` (default): onnxruntime's MatMulNBits (com.microsoft), codes packed
   two per byte along K, its ``accuracy_level`` as configured (0: float compute; 4: int8 compute,
   faster, and it moves the outputs further). A following Add of a constant [N] vector becomes its
   bias.
2. ``weight_op="dequantize"``: the standard form (opset 21 DequantizeLinear with ``block_size``,
   int4/uint4 or int8/uint8 codes), which any ONNX runtime reads; onnxruntime fuses it into
   MatMulNBits with the accuracy level of its session option
   ``session.qdq_matmulnbits_accuracy_level`` (default 4: int8 compute), not the model's.
3. Gemm (transA 0, alpha 1, beta 1, constant B; transB read as stored) is the same with its C as
   the bias.
4. The last projection (its output reaches a graph output through Add/Reshape/Transpose/Cast/
   Identity only: a language model's head, a classifier's logits) keeps 8 bits where the rest
   get 4 (``head_bits``): the logits are what generation and top-1 read.
6. With calibration data (``hessians``: ``X^T X`` of each layer's input A), the codes are
   rounded by GPTQ on the same block grid (``passes.gptq.gptq_blocks``): each row of W rounded
   in turn, its error spread over the rows not yet rounded, so that ``A W`` moves least.
7. ``eight_bit``: layers given 8 bits by name (``precision`` "int8"; the decoder search of
   stages/decoder_bits.py picks them).
8. ``codes``: a dict shared by passes over copies of one graph (the decoder search builds a
   candidate per scoring) keeps each layer's codes per bit width, so a layer is rounded (GPTQ
   included) once per width, not once per candidate; the codes are the same either way.
5. Left float, with the reason: weights that are not constant 2-D float32, an input A of rank 1,
   K under 16 (MatMulNBits' smallest block), fewer than ``MIN_ELEMENTS`` weights (nothing to
   gain), layers the config keeps fp32.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from edgeq.graph import MS_DOMAIN, add_initializer, const_array, remove_unused_initializers
from edgeq.passes.blocks import BlockQuantized, pack_nibbles, quantize_blocks
from edgeq.passes.dynamic import bias_add, replace_nodes
from edgeq.passes.plan import fresh_base, node_label

__all__ = ["WeightOnlyPass", "MIN_ELEMENTS", "HEAD_PATH", "reaches_output"]

logger = logging.getLogger(__name__)

MIN_ELEMENTS = 4096  # (5) weights below this stay float: a few KB saved, a kernel call added
HEAD_PATH = ("Add", "Reshape", "Transpose", "Cast", "Identity", "Squeeze", "Unsqueeze")  # (4)


def _block_for(k: int, block: int) -> int:
    """The block size for K: the configured one, or the power of two >= 16 that holds K whole."""
    if k >= block:
        return block
    return max(16, 1 << (k - 1).bit_length())


def reaches_output(value: ir.Value, seen: int = 0) -> bool:
    if value.is_graph_output():
        return True
    if seen > 8:
        return False
    return any(use.node.op_type in HEAD_PATH and use.node.domain == ""
               and any(reaches_output(o, seen + 1) for o in use.node.outputs) for use in value.uses())


class WeightOnlyPass(ir.passes.InPlacePass):
    """See the module docstring. After ``call``: ``quantized`` (one entry per layer) and
    ``float`` (layers left float, with why)."""

    def __init__(self, *, bits: int = 4, block: int = 32, symmetric: bool = False, weight_op: str = "matmulnbits",
                 accuracy_level: int = 0, head_bits: int = 8, keep: frozenset[str] = frozenset(),
                 hessians: dict[str, np.ndarray] | None = None, eight_bit: frozenset[str] = frozenset(),
                 codes: dict[tuple[str, int], tuple[BlockQuantized, str]] | None = None) -> None:
        super().__init__()
        self.hessians = hessians or {}  # input A's name -> X^T X: GPTQ rounding on the block grid (6)
        self.bits, self.block, self.symmetric = bits, block, symmetric
        self.weight_op, self.accuracy_level, self.head_bits, self.keep = weight_op, accuracy_level, head_bits, keep
        self.eight_bit = eight_bit  # node names whose weights get 8 bits where the rest get 4 (7)
        self.codes = codes  # (node name, bits) -> (codes, rounding): shared by passes over copies of one graph (8)
        self.quantized: list[dict[str, Any]] = []
        self.float: list[dict[str, Any]] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for node in list(graph):
            if node.op_type in ("MatMul", "Gemm") and node.domain == "":
                why = self._why_not(node)
                if why:
                    self.float.append({"node": node_label(node), "op": node.op_type, "reason": why})
                else:
                    self._quantize(graph, node)
        if self.weight_op == "matmulnbits" and self.quantized:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        logger.info("weight_only: %d MatMul/Gemm to %d-bit weights, %d left float", len(self.quantized), self.bits,
                    len(self.float))
        return ir.passes.PassResult(model, modified=bool(self.quantized))

    def _why_not(self, node: ir.Node) -> str:
        weight = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if node.name in self.keep or node.op_type in self.keep:
            return "kept fp32 as asked"
        if weight is None or weight.dtype != np.float32 or weight.ndim != 2:
            return "its weight is not a constant 2-D float32 tensor"
        a = node.inputs[0]
        if a is None or (a.shape is not None and len(a.shape) < 2):
            return "its input A has rank 1"
        if node.op_type == "Gemm":
            attrs = {k: v.value for k, v in node.attributes.items()}
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                return "Gemm with transA, alpha or beta: not a plain product"
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                c = const_array(node.inputs[2])
                if c is None or c.size != (weight.shape[0] if attrs.get("transB", 0) else weight.shape[1]):
                    return "Gemm whose C is not a constant [N] vector"
        k = weight.shape[1] if node.op_type == "Gemm" and node.attributes.get("transB") and \
            node.attributes["transB"].value else weight.shape[0]
        if k < 16:
            return f"K = {k}: under 16, the smallest block"
        if weight.size < MIN_ELEMENTS:
            return f"{weight.size} weights: under {MIN_ELEMENTS}, too few to be worth a quantized kernel"
        return ""

    def _quantize(self, graph: ir.Graph, node: ir.Node) -> None:
        weight = np.asarray(const_array(node.inputs[1]), np.float32)
        bias, add = None, None
        if node.op_type == "Gemm":
            if node.attributes.get("transB") is not None and node.attributes["transB"].value:
                weight = weight.T
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                bias = np.asarray(const_array(node.inputs[2]), np.float32).reshape(-1)
        else:
            add, bias = bias_add(node, weight.shape[1])
        last = add if add is not None else node
        bits = self.head_bits if self.head_bits != self.bits and reaches_output(last.outputs[0]) else self.bits
        if node.name in self.eight_bit:  # (7)
            bits = max(bits, 8)
        key = (node.name, bits)
        if self.codes is not None and key in self.codes:  # (8)
            q, rounding = self.codes[key]
        else:
            q = quantize_blocks(weight, bits, _block_for(weight.shape[0], self.block), self.symmetric)
            hessian = self.hessians.get(node.inputs[0].name or "")
            rounding = "nearest"
            if hessian is not None and hessian.shape == (weight.shape[0],) * 2:  # (6)
                from edgeq.passes.gptq import gptq_blocks

                q, rounding = gptq_blocks(weight, q, hessian), "GPTQ"
            if self.codes is not None and node.name:
                self.codes[key] = (q, rounding)
        base = fresh_base(graph, node_label(node))
        if self.weight_op == "matmulnbits":
            new = self._matmulnbits(graph, node, q, bias, base)
        else:
            new = self._dequantize(graph, node, q, bias, base)
            if add is not None:  # the Add stays as it was after the new MatMul
                last = node
        old_inputs = list(node.inputs) + (list(last.inputs) if last is not node else [])  # the bias Add's too
        replace_nodes(graph, node, new, last)
        remove_unused_initializers(graph, old_inputs)
        self.quantized.append({"node": node_label(node), "op": node.op_type, "bits": bits, "block_size": q.block,
                               "k": int(weight.shape[0]), "n": int(weight.shape[1]), "weight_op": self.weight_op,
                               "bytes_before": int(weight.nbytes), "bytes_after": int(q.stored_bytes()),
                               "rounding": rounding,
                               "weight_mse": float(np.mean(np.square(q.dequantized() - weight)))})

    def _matmulnbits(self, graph: ir.Graph, node: ir.Node, q: BlockQuantized, bias: np.ndarray | None,
                     base: str) -> list[ir.Node]:  # (1)
        n, k_blocks, _ = q.codes.shape
        codes = pack_nibbles(q.codes) if q.bits == 4 else q.codes
        inputs: list[ir.Value | None] = [node.inputs[0], add_initializer(graph, f"{base}_Bq", codes),
                                         add_initializer(graph, f"{base}_scales", q.scales.reshape(-1))]
        if not q.symmetric:  # symmetric: the op's default zero point, the mid level
            zeros = pack_nibbles(q.zero_points).reshape(-1) if q.bits == 4 else q.zero_points.reshape(-1)
            inputs.append(add_initializer(graph, f"{base}_zero_points", zeros))
        if bias is not None:
            inputs += [None] * (5 - len(inputs)) + [add_initializer(graph, f"{base}_bias", bias)]  # after g_idx
        attrs = {"K": q.k, "N": n, "bits": q.bits, "block_size": q.block, "accuracy_level": self.accuracy_level}
        return [ir.node("MatMulNBits", inputs, attrs, domain=MS_DOMAIN, name=f"{base}_nbits")]

    def _dequantize(self, graph: ir.Graph, node: ir.Node, q: BlockQuantized, bias: np.ndarray | None,
                    base: str) -> list[ir.Node]:  # (2)
        n, k_blocks, block = q.codes.shape
        codes = q.codes.transpose(1, 2, 0).reshape(k_blocks * block, n)[: q.k]  # [K, N]
        scales = np.ascontiguousarray(q.scales.T)  # [k_blocks, N]
        if q.symmetric:  # signed codes, zero point 0 (the default)
            mid = 2 ** (q.bits - 1)
            dtype = ir.DataType.INT4 if q.bits == 4 else ir.DataType.INT8
            values = [_initializer(graph, f"{base}_Wq", (codes.astype(np.int16) - mid).astype(np.int8), dtype)]
        else:
            dtype = ir.DataType.UINT4 if q.bits == 4 else ir.DataType.UINT8
            values = [_initializer(graph, f"{base}_Wq", codes, dtype)]
        values.insert(1, add_initializer(graph, f"{base}_scales", scales))
        if not q.symmetric:
            values.append(_initializer(graph, f"{base}_zero_points", np.ascontiguousarray(q.zero_points.T), dtype))
        dq = ir.node("DequantizeLinear", values, {"axis": 0, "block_size": block}, name=f"{base}_dq")
        nodes = [dq, ir.node("MatMul", [node.inputs[0], dq.outputs[0]], name=f"{base}_matmul")]
        if bias is not None and node.op_type == "Gemm":
            nodes.append(ir.node("Add", [nodes[-1].outputs[0], add_initializer(graph, f"{base}_bias", bias)],
                                 name=f"{base}_bias_add"))
        return nodes


def _initializer(graph: ir.Graph, name: str, array: np.ndarray, dtype: ir.DataType) -> ir.Value:
    """An initializer of ``dtype`` (int4/uint4 packed two per byte on save) holding ``array``."""
    base, i = name, 0
    while name in graph.initializers:
        i += 1
        name = f"{base}_{i}"
    value = ir.Value(name=name, const_value=ir.Tensor(np.ascontiguousarray(array), dtype=dtype, name=name))
    value.type = ir.TensorType(dtype)
    value.shape = ir.Shape(array.shape)
    graph.register_initializer(value)
    return value
