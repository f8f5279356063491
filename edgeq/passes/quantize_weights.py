"""Quantize the weights and biases of int8 Conv/MatMul/Gemm offline.

    W (float) -> Conv        ==>   W_q (int8) -> DequantizeLinear(scale[C], zp int8 zeros[C], axis) -> Conv
    B (float) -> Conv        ==>   B_q (int32) -> DequantizeLinear(scale = s_in * s_w[C], zp 0) -> Conv

1. Weights are int8 symmetric in [-127, 127], per output channel by default: Conv axis 0,
   MatMul the last axis (columns), Gemm axis 0 with transB=1 else axis 1.
2. Biases are int32 with scale ``input_scale * weight_scale``; where a bias would overflow int32
   (tiny weight scale), that channel's weight scale is raised until it fits.
3. A Gemm bias of shape [1, N] is stored as [N].
4. A MatMul whose output stays float (no int8 consumer) and feeds an Add of a constant [N]
   vector (a Linear layer's bias): the bias is stored int32 the same way, read through a DQ.
   ORT then runs MatMulIntegerToFloat + Add, or, with static shapes, one QGemm with the bias;
   a float bias there would make ORT fuse MatMul+Add into a float Gemm first, losing int8.
5. An int16-activation MatMul/Gemm (``plan.int16``, or all with ``activations="int16"``) keeps int8 weight values ([-127, 127]) but
   stores them in int16: onnxruntime (1.32) turns an int8 weight DQ feeding a float MatMul/Gemm
   into MatMulNBits, which quantizes the activations to int8 blocks at run time (accuracy level
   4) and so undoes int16 (measured: a Gemm's output fell from 47.1 to 44.4 dB); an int16 DQ it
   leaves alone (com.microsoft DQ below opset 21). int16 Conv weights stay int8.
7. Where this CPU's onnxruntime saturates 8-bit weight products (x86 without VNNI,
   ``runtime/cpu.py``), weights of u8s8 kernels (Conv with more than one input channel per
   group, MatMul/Gemm) keep 8 bits with every same-sign pair of levels along K within 128
   (``weights.quantize_paired``; ``weights.pairs_form``: the width left to edgeq and the kernel's
   pairing measured), or 7 bits ([-63, 63], ``weights.weight_qmax``) where ``--reduce-range``
   asks or the pairing is not the measured one. A depthwise Conv (its kernel widens to 16 bits
   first, measured exact) and an int16-activation node (not fused: computed in float) keep
   [-127, 127].
8. ``weights="int4"`` (static mode, W4A8): Conv, MatMul and Gemm weights get 4-bit levels,
   [-7, 7] per output channel, stored as int4 (opset 21) and read at int8 speed through
   ``passes/int4_storage.py``. 8 bits stay where 4 lose most for few bytes: depthwise Conv
   weights (a handful per channel), the first layer (reading a graph input) and the last (its
   output a graph output: logits, embeddings; measured on the zoo CNNs, +1 to +4 dB output SQNR
   for 0.2-3% of the file), and layers the precision map gives "int8"; also int16-activation
   nodes, and MatMuls quantized at run time (dynamic, per token), whose kernels read int8.
9. ``weights="pot"`` (static mode): every weight's int8 levels are 0 or +-2^e, e = 0 .. E with
   2^E the largest power of two within the level limit (64, or 32 where weights keep 7 bits);
   scale max |w| / 2^E per channel, each weight the nearest such level. A multiply by such a
   weight is a shift and a sign, for integer kernels without multipliers; onnxruntime runs them
   as any int8 weights, and ``edgeq.reference`` runs them by shifts (``ops_linear``). int16
   nodes keep plain levels.
6. A node inside a subgraph (If branch, Loop/Scan body) gets its quantized weight and DQ in that
   subgraph, even when the float weight was an outer graph's initializer: onnxruntime fuses
   DQ -> Conv only within one graph. The float weight goes once no node reads it.
"""

from __future__ import annotations

import logging

import ml_dtypes
import numpy as np
import onnx_ir as ir

from edgeq.config import PerTensor, QuantConfig
from edgeq.graph import MS_DOMAIN, add_initializer, const_array, graphs_of, remove_unused_initializers
from edgeq.passes.plan import QuantPlan, Role, attr_value, fresh_base, node_label
from edgeq.passes.weight_only import reaches_output
from edgeq.passes.weights import (
    QMAX,
    bias_safe_min_scale,
    note_reduced,
    pairs_apply,
    pairs_form,
    quantize_bias,
    quantize_paired,
    quantize_weight,
    weight_qmax,
)

__all__ = ["QuantizeWeightsPass", "weight_axis", "dequantize_node", "is_depthwise", "pot_levels"]

logger = logging.getLogger(__name__)

INT4_QMAX = 7  # (8) symmetric 4-bit levels, as QAT's (qat/config.py)


def weight_axis(node: ir.Node, ndim: int) -> int:
    """The output-channel axis of ``node``'s weight (input 1)."""
    if node.op_type == "Gemm":
        attr = node.attributes.get("transB")
        return 0 if attr is not None and attr.value else 1
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "MatMul":
        return ndim - 1
    return 0


def is_depthwise(node: ir.Node, weight: np.ndarray) -> bool:
    """A Conv with one input channel per group and more than one group (weight [C, 1, ...])."""
    group = node.attributes.get("group")
    groups = int(group.value) if group is not None else 1
    return node.op_type == "Conv" and weight.ndim >= 3 and weight.shape[1] == 1 and groups > 1


def dequantize_node(
    graph: ir.Graph, base: str, values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
    axis: int | None,
) -> ir.Node:
    """Initializers ``base_q``/``_scale``/``_zp`` and a DequantizeLinear on them."""
    base = fresh_base(graph, base)
    q = add_initializer(graph, f"{base}_q", values)
    s = add_initializer(graph, f"{base}_scale", scale.astype(np.float32))
    z = add_initializer(graph, f"{base}_zp", zero_point)
    attrs = {"axis": int(axis)} if axis is not None and scale.ndim else {}
    node = ir.node("DequantizeLinear", [q, s, z], attrs, name=f"{base}_DQ")
    node.outputs[0].name = f"{base}_dq"
    node.outputs[0].dtype = ir.DataType.FLOAT
    node.outputs[0].shape = ir.Shape(values.shape)
    return node


def pot_levels(weight: np.ndarray, scale: np.ndarray, axis: int | None, top: int) -> np.ndarray:
    """(9) int8 levels 0 or +-2^e (2^e <= ``top``) nearest to ``weight / scale``."""
    shaped = scale if axis is None else scale.reshape([-1 if i == axis % weight.ndim else 1 for i in range(weight.ndim)])
    ratio = np.abs(weight.astype(np.float64) / shaped)
    low = np.exp2(np.clip(np.floor(np.log2(np.maximum(ratio, 1e-30))), 0, np.log2(top)))  # 2^e <= ratio (or 1)
    high = np.minimum(low * 2, top)
    level = np.where(ratio - low <= high - ratio, low, high)
    level = np.where(ratio < 0.5, 0.0, level)  # nearer 0 than 1
    return (np.sign(weight) * level).astype(np.int8)


class QuantizeWeightsPass(ir.passes.InPlacePass):
    def __init__(self, config: QuantConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan
        self.qmax = weight_qmax(config)
        self.paired = self.qmax != QMAX and pairs_form(config)  # (7) 8 bits, pairs limited

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        self._model = model
        for graph in graphs_of(model):  # (6) subgraphs too
            for node in list(graph):
                if self.plan.role(node) == Role.COMPUTE and node.op_type in ("Conv", "MatMul", "Gemm"):
                    if const_array(node.inputs[1]) is not None:
                        self._quantize(graph, node)
                        count += 1
        logger.info("quantize_weights: %d weights to %s", count, self.config.weights)
        if count and self.qmax != QMAX and self.config.weights != "int4":
            note_reduced(self.plan.notes, self.config, paired=self.paired)
        return ir.passes.PassResult(model, modified=count > 0)

    def _quantize(self, graph: ir.Graph, node: ir.Node) -> None:
        weight = np.asarray(const_array(node.inputs[1]), np.float32)  # no copy: weights.py may reuse it
        per_channel = not isinstance(self.config.granularity, PerTensor)
        axis = weight_axis(node, weight.ndim) if per_channel else None
        bias_value = node.inputs[2] if len(node.inputs) > 2 else None
        bias = const_array(bias_value)
        input_scale = None
        if bias is not None:
            bias = bias.astype(np.float32).reshape(-1)
            input_scale = self.plan.input_params(node, node.inputs[0]).scale
        min_scale = bias_safe_min_scale(bias, input_scale, per_channel) if bias is not None else None
        int16 = self.plan.is_int16(node) or self.config.activations == "int16"
        depthwise = is_depthwise(node, weight)
        int4 = (self.config.weights == "int4" and not int16 and not depthwise  # (8)
                and node.name not in self.config.precision.nodes("int8") and not self._edge(node))
        qmax = INT4_QMAX if int4 else QMAX if int16 or depthwise else self.qmax  # (7)
        pot = self.config.weights == "pot" and not int16  # (9)
        if pot:
            qmax = 1 << (qmax.bit_length() - 1)
        if self.paired and qmax == self.qmax and not pot and pairs_apply(node.op_type, weight):  # (7)
            qw = quantize_paired(weight, axis, node.op_type, trans_b=bool(attr_value(node, "transB", 0)),
                                 min_scale=min_scale)
        else:
            qw = quantize_weight(weight, axis, min_scale=min_scale, qmax=qmax)
        label = node_label(node)
        values, zero_point = qw.values, qw.zero_point
        if pot:
            values = pot_levels(weight, qw.scale, axis, qmax)
        if int4:
            values, zero_point = values.astype(ml_dtypes.int4), zero_point.astype(ml_dtypes.int4)
        if node.op_type in ("MatMul", "Gemm") and int16:  # (5)
            values, zero_point = values.astype(np.int16), zero_point.astype(np.int16)
        dq_w = dequantize_node(graph, _base(node.inputs[1], label, "W"), values, qw.scale, zero_point, axis)
        if values.dtype == np.int16 and self._model.opset_imports.get("", 13) < 21:
            dq_w.domain = MS_DOMAIN
            self._model.opset_imports.setdefault(MS_DOMAIN, 1)
        new_nodes = [dq_w]
        summary = qw.summary(weight)
        summary["bits"] = "pot" if pot else 4 if int4 else 8
        if bias is not None:
            qb, bias_scale = quantize_bias(bias, input_scale, qw.scale)
            bias_axis = 0 if per_channel else None
            bias_scale = bias_scale if per_channel else np.asarray(bias_scale.reshape(-1)[0], np.float32)
            dq_b = dequantize_node(graph, _base(bias_value, label, "B"), qb, bias_scale,
                                   np.zeros(bias_scale.shape, np.int32), bias_axis)
            new_nodes.append(dq_b)
            summary["bias_raised_channels"] = int(np.sum(qw.scale <= min_scale)) if np.any(min_scale > 0) else 0
        graph.insert_before(node, new_nodes)
        if node.op_type == "MatMul" and node.outputs[0] not in self.plan.values:
            self._matmul_bias(graph, node, qw.scale, per_channel)  # (4)
        old_w = node.inputs[1]
        node.replace_input_with(1, dq_w.outputs[0])
        if bias is not None:
            old_b = node.inputs[2]
            node.replace_input_with(2, new_nodes[1].outputs[0])
            remove_unused_initializers(graph, [old_b])
        remove_unused_initializers(graph, [old_w])
        self.plan.weights[node] = summary


    @staticmethod
    def _edge(node: ir.Node) -> bool:
        """(8) The first layer (its input a graph input) or the last (its output reaches a graph
        output through ``weight_only.HEAD_PATH`` ops): W4A8 keeps them at 8 bits."""
        first = node.inputs[0] is not None and node.inputs[0].is_graph_input()
        return first or reaches_output(node.outputs[0])

    def _matmul_bias(self, graph: ir.Graph, node: ir.Node, w_scale: np.ndarray, per_channel: bool) -> None:
        out = node.outputs[0]
        if len(out.uses()) != 1 or out.is_graph_output():
            return
        add, idx = next(iter(out.uses()))
        if add.op_type != "Add" or add.domain != "" or self.plan.is_int8(add):
            return
        bias_value = add.inputs[1 - idx]
        bias = const_array(bias_value)
        n = w_scale.size if per_channel else const_array(node.inputs[1]).shape[-1]
        if bias is None or bias.ndim != 1 or bias.shape[0] != n:
            return
        input_scale = self.plan.input_params(node, node.inputs[0]).scale
        qb, bias_scale = quantize_bias(bias.astype(np.float32), input_scale, w_scale)
        if not per_channel:
            bias_scale = np.asarray(bias_scale.reshape(-1)[0], np.float32)
        dq_b = dequantize_node(graph, _base(bias_value, node_label(node), "B"), qb, bias_scale,
                               np.zeros(bias_scale.shape, np.int32), 0 if per_channel else None)
        graph.insert_before(add, dq_b)
        add.replace_input_with(1 - idx, dq_b.outputs[0])
        remove_unused_initializers(graph, [bias_value])
        self.plan.notes.append(f"bias of {node_label(add)} stored int32 after {node_label(node)} (int8 MatMul, float output)")


def _base(value: ir.Value, label: str, kind: str) -> str:
    """A short base name: the constant's own name when only this node reads it."""
    if value.name and len(value.uses()) == 1:
        return value.name
    return f"{value.name or kind}_{label}"

