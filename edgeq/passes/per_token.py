"""Per-token dynamic quantization: each row of a MatMul's input gets its own int8 scale at run time.

    A -> MatMul(W)      ==>  A -> Abs -> ReduceMax(axis -1) -> Mul(1/127) -> Max(tiny) = s [.., M, 1]
    A -> Gemm(W, C)          A, s -> QuantizeLinear(block_size=K, zero point 128) = A_q uint8
                             com.microsoft.MatMulIntegerToFloat(A_q, W_q, s, s_w[N], 128, 0) [-> Add(C)]

Transformers' activations carry outlier tokens (and channels): one scale for the whole tensor,
static or measured at run time (DynamicQuantizeMatMul), spends the int8 levels on the outliers.
One scale per row (per token) is what they need; measured on one [1,128,384] x [384,1536]
MatMul with an outlier token, 1 thread (bench/per_token_design.py, docs/per_token.md): fp32
1.33 ms, DynamicQuantizeMatMul 0.38 ms at 15.9 dB, this form 0.40 ms at 30.8 dB.

1. Row scale: max |A| over the last axis / 127, symmetric. MatMulIntegerToFloat takes one zero
   point for A, so per-row zero points are impossible; a zero row's scale is raised to float32's
   smallest normal number (no division by zero, its values quantize to 0: no NaN).
2. uint8 activations with zero point 128 and int8 weights: onnxruntime's u8s8 kernel. int8 x int8
   (MatMulIntegerToFloat or MatMulInteger) measured 11-20x slower (4.6-8.5 ms) on the same CPU.
3. Quantizing A: from opset 21 one QuantizeLinear with ``block_size`` = K along the last axis (its
   zero point built by ConstantOfShape, since M is known only at run time); below opset 21
   Mul(A, 1/s) -> Add(128.5) -> Cast(uint8): Cast truncates, so that is round half up where
   QuantizeLinear rounds half to even (ties only); |A / s| <= 127, so nothing saturates. 4-12%
   slower (0.42 vs 0.40 ms above; 0.14 vs 0.12 ms at N = 384); Div -> Round -> Add -> Cast was 0.43
   and 0.15 ms.
4. MatMulIntegerToFloat scales its int32 result by the per-column weight scales inside the kernel
   and by the per-row scale ``s`` (shape [.., M, 1]) in one broadcast multiply after it. That
   multiply comes after the kernel's bias is added (onnxruntime 1.32), so a bias would be scaled
   too: no bias input here (a Linear layer's MatMul -> Add stays as it is).
5. Gemm: a transB weight is transposed offline to [K, N]; C goes to an Add after the kernel (4).
6. Several per-token MatMuls reading one input (attention's Q, K, V projections) share its front
   end: the input is quantized once.
7. Weights: int8, symmetric, one scale per output column (per tensor with per-tensor granularity);
   zero point one scalar 0.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.config import PerTensor, QuantConfig
from edgeq.graph import MS_DOMAIN, add_initializer, const_array, remove_unused_initializers
from edgeq.passes.dynamic import replace_nodes
from edgeq.passes.plan import QuantPlan, Role, derived_name, fresh_base, node_label
from edgeq.passes.weights import quantize_weight

__all__ = ["PerTokenMatMulPass"]

logger = logging.getLogger(__name__)

TINY = np.finfo(np.float32).tiny  # (1) the smallest row scale


class PerTokenMatMulPass(ir.passes.InPlacePass):
    def __init__(self, config: QuantConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count, self._opset = 0, model.opset_imports.get("", 13)
        for graph in list(model.graphs()):
            fronts: dict[ir.Value, tuple[ir.Value, ir.Value]] = {}  # (6) input -> (A_q, s)
            self._consts: dict[str, ir.Value] = {}
            for node in list(graph):
                if node in self.plan.per_token and self.plan.role(node) == Role.DYNAMIC:
                    self._matmul(graph, node, fronts)
                    count += 1
        if count:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        logger.info("per-token: %d MatMul/Gemm to per-token dynamic int8", count)
        return ir.passes.PassResult(model, modified=count > 0)

    def _const(self, graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
        if name not in self._consts:
            self._consts[name] = add_initializer(graph, f"per_token_{name}", array)
        return self._consts[name]

    def _front(self, graph: ir.Graph, x: ir.Value, before: ir.Node, k: int) -> tuple[ir.Value, ir.Value]:
        """(1) (3) A's row scales and A quantized with them, inserted before ``before``."""
        label = x.name or node_label(before)
        abs_x = ir.node("Abs", [x], name=f"{label}_token_abs")
        if self._opset >= 18:
            absmax = ir.node("ReduceMax", [abs_x.outputs[0], self._const(graph, "axes", np.array([-1], np.int64))],
                             {"keepdims": 1}, name=f"{label}_token_max")
        else:
            absmax = ir.node("ReduceMax", [abs_x.outputs[0]], {"axes": [-1], "keepdims": 1}, name=f"{label}_token_max")
        raw = ir.node("Mul", [absmax.outputs[0], self._const(graph, "inv127", np.array(1 / 127, np.float32))],
                      name=f"{label}_token_div")
        scale = ir.node("Max", [raw.outputs[0], self._const(graph, "tiny", np.array(TINY, np.float32))],
                        name=f"{label}_token_scale")
        nodes = [abs_x, absmax, raw, scale]
        s = scale.outputs[0]
        if self._opset >= 21:  # (3) one blocked QuantizeLinear
            shape = ir.node("Shape", [s], name=f"{label}_token_shape")
            zp = ir.node("ConstantOfShape", [shape.outputs[0]],
                         {"value": ir.tensor(np.array([128], np.uint8))}, name=f"{label}_token_zp")
            quant = ir.node("QuantizeLinear", [x, s, zp.outputs[0]], {"axis": -1, "block_size": k},
                            name=f"{label}_token_q")
            nodes += [shape, zp, quant]
        else:  # (3) elementwise: one multiply, one add, one truncating cast over A
            inv = ir.node("Div", [self._const(graph, "one", np.array(1, np.float32)), s], name=f"{label}_token_inv")
            mul = ir.node("Mul", [x, inv.outputs[0]], name=f"{label}_token_mul")
            shift = ir.node("Add", [mul.outputs[0], self._const(graph, "f128_5", np.array(128.5, np.float32))],
                            name=f"{label}_token_shift")
            quant = ir.node("Cast", [shift.outputs[0]], {"to": ir.DataType.UINT8}, name=f"{label}_token_q")
            nodes += [inv, mul, shift, quant]
        s.name, s.dtype = f"{label}_token_scale", ir.DataType.FLOAT
        q = quant.outputs[0]
        q.name, q.dtype = f"{label}_token_q", ir.DataType.UINT8
        graph.insert_before(before, nodes)
        return q, s

    def _matmul(self, graph: ir.Graph, node: ir.Node, fronts: dict[ir.Value, tuple[ir.Value, ir.Value]]) -> None:
        weight = const_array(node.inputs[1]).astype(np.float32)
        bias = None
        if node.op_type == "Gemm":
            trans_b = node.attributes.get("transB")
            if trans_b is not None and trans_b.value:
                weight = weight.T.copy()  # (5)
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                bias = const_array(node.inputs[2]).astype(np.float32).reshape(-1)
        qw = quantize_weight(weight, None if isinstance(self.config.granularity, PerTensor) else 1)  # (7)
        x = node.inputs[0]
        if x not in fronts:  # (6)
            fronts[x] = self._front(graph, x, node, weight.shape[0])
        x_q, x_scale = fronts[x]
        base = fresh_base(graph, node.inputs[1].name or node_label(node), ("_q", "_scale", "_bias"))
        inputs = [x_q, add_initializer(graph, f"{base}_q", qw.values), x_scale,
                  add_initializer(graph, f"{base}_scale", qw.scale),
                  self._const(graph, "zp128", np.array(128, np.uint8)),  # (2)
                  self._const(graph, "zp0", np.array(0, np.int8))]  # (7)
        new = [ir.node("MatMulIntegerToFloat", inputs, domain=MS_DOMAIN, name=derived_name(node, "per_token"))]  # (4)
        if bias is not None:  # (5)
            new.append(ir.node("Add", [new[0].outputs[0], add_initializer(graph, f"{base}_bias", bias)],
                               name=derived_name(node, "bias")))
        old_inputs = list(node.inputs[1:])
        replace_nodes(graph, node, new)
        remove_unused_initializers(graph, old_inputs)
        self.plan.weights[node] = {**qw.summary(weight), "kernel": "MatMulIntegerToFloat", "activations": "per-token"}
