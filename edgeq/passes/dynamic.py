"""Dynamic quantization: int8 weights offline, activations quantized at run time.

    A -> MatMul(W)        ==>  A -> com.microsoft.DynamicQuantizeMatMul(W_q int8, s_w[N], 0)
    A -> Gemm(W, C)       ==>  A -> com.microsoft.DynamicQuantizeMatMul(W_q, s_w[N], 0, C)
    x -> Conv(W, B)       ==>  DynamicQuantizeLinear(x) -> ConvInteger(W_q) -> Cast
                                -> Mul(s_x * s_w[C]) -> Add(B)        (only with dynamic_conv)

1. DynamicQuantizeMatMul is the single kernel ORT's CPU provider runs fastest for this (it is
   what ORT's own fusion turns DynamicQuantizeLinear + MatMulInteger into); it takes per-column
   weight scales, so per-channel costs nothing and keeps fidelity.
2. Gemm: a transB weight is transposed offline to [K, N]; C becomes the kernel's bias.
   MatMul followed by an Add of a constant [N] vector (a Linear layer's bias): the Add folds
   into the kernel's bias input too.
4. Several MatMuls reading the same input (attention's Q, K, V projections) share one
   DynamicQuantizeLinear and each run MatMulIntegerToFloat: the input is quantized once.
3. Conv: per-channel int8 weights with zero points all 0 (so one scalar zero point serves),
   the per-channel scale applied by the Mul after ConvInteger.
5. MatMul/Gemm in ``plan.per_token`` are PerTokenMatMulPass's (one scale per row of A, per_token.py).
6. Outlier channels (with calibration data, ``QuantConfig.outlier_channels``; outliers.py says
   which channels and why): the input's channels O whose calibrated max |A| is far above the
   median channel's are taken out of the int8 product and multiplied in float:

       A -> Mul(mask: 0 at O) -> DynamicQuantizeMatMul(W_q) --+--> Add
       A -> Gather(O, axis -1) = A_O -> MatMul(W_O) ----------+

   The masked channels are exact zeros, which DynamicQuantizeLinear's zero point keeps exact, so
   W_q keeps its rows O and no other correction is needed. One scale per tensor spends its 255
   levels on the largest value of the whole input; a transformer's LayerNorm outputs carry a few
   channels 5-20x the median on every token, which set that value. Without them one scale per
   tensor comes within 1-4 dB of one per row on MiniLM's MatMuls (per_token.py's row grid), at
   DynamicQuantizeMatMul's cost instead of the per-row arithmetic (MiniLM, every MatMul dynamic,
   8-bit weights in exact arithmetic: 19.3 -> 29.3 dB on unseen sentences, docs/per_token.md).
   The mask and the Gather are shared by every reader of A.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import onnx_ir as ir

from edgeq.config import PerTensor, QuantConfig
from edgeq.graph import MS_DOMAIN, add_initializer, const_array, graphs_of, remove_unused_initializers
from edgeq.passes.outliers import outlier_channels, own_weights, shared_weights
from edgeq.passes.plan import QuantPlan, Role, derived_name, fresh_base, node_label
from edgeq.passes.weights import (
    PAIR_LIMIT,
    QMAX,
    QuantizedWeight,
    note_reduced,
    pairs_form,
    quantize_paired,
    quantize_weight,
    shared_result,
    weight_qmax,
)

__all__ = ["DynamicQuantizePass", "replace_nodes", "bias_add"]

logger = logging.getLogger(__name__)


def replace_nodes(graph: ir.Graph, node: ir.Node, new_nodes: list[ir.Node], last: ir.Node | None = None) -> None:
    """Put ``new_nodes`` in place of ``node`` (through ``last``, whose output they produce)."""
    last = last or node
    old, new = last.outputs[0], new_nodes[-1].outputs[0]
    graph.insert_before(node, new_nodes)
    new.shape, new.dtype = old.shape, old.dtype
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    name = old.name
    if last is not node:
        graph.remove(last, safe=True)
    graph.remove(node, safe=True)
    new.name = name


def bias_add(node: ir.Node, n: int) -> tuple[ir.Node, np.ndarray] | tuple[None, None]:
    """The Add right after a MatMul that adds a constant [N] vector, and that vector (2)."""
    out = node.outputs[0]
    if node.op_type != "MatMul" or len(out.uses()) != 1 or out.is_graph_output():
        return None, None
    add = next(iter(out.uses())).node
    if add.op_type != "Add" or add.domain != "":
        return None, None
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    bias = const_array(other)
    if bias is None or bias.ndim != 1 or bias.shape[0] != n:
        return None, None
    return add, bias


class DynamicQuantizePass(ir.passes.InPlacePass):
    def __init__(self, config: QuantConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan
        self.qmax = weight_qmax(config)
        # weights.quantize_paired: 8-bit MatMul/Gemm weights whose pairs DynamicQuantizeMatMul's
        # uint8 activations (0-255) cannot saturate, where the CPU would otherwise need 7 bits
        self.pair_limit = PAIR_LIMIT if self.qmax != QMAX and pairs_form(config) else None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for graph in graphs_of(model):  # subgraphs too (select.py (11))
            self._outliers = self._outlier_fronts(graph)  # (6)
            self._shared = self._shared_inputs(graph)
            for node in list(graph):
                if self.plan.role(node) != Role.DYNAMIC or node in self.plan.per_token:  # (5)
                    continue
                if node.op_type == "Conv":
                    self._conv(graph, node)
                else:
                    self._matmul(graph, node)
                count += 1
        if count and any(n.domain == MS_DOMAIN for n in ir.traversal.RecursiveGraphIterator(model.graph)):
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        logger.info("dynamic: %d nodes to dynamic int8", count)
        if count and self.qmax != QMAX:
            note_reduced(self.plan.notes, self.config, paired=self.pair_limit is not None)
        return ir.passes.PassResult(model, modified=count > 0)

    def _readers(self, graph: ir.Graph) -> dict[ir.Value, list[ir.Node]]:
        """Dynamic (per-tensor) MatMul/Gemm nodes by the input they quantize."""
        readers: dict[ir.Value, list[ir.Node]] = {}
        for node in graph:
            if (self.plan.role(node) == Role.DYNAMIC and node.op_type in ("MatMul", "Gemm")
                    and node not in self.plan.per_token):
                readers.setdefault(node.inputs[0], []).append(node)
        return readers

    def _outlier_fronts(self, graph: ir.Graph) -> dict[ir.Value, OutlierFront]:
        """(6) input -> its masked form, A_O and the channels O, for inputs with outlier channels."""
        if not self.config.outlier_channels or not self.plan.token_channels:
            return {}
        fronts, weights_shared = {}, shared_weights(graph)
        for value, nodes in self._readers(graph).items():
            absmax = self.plan.token_channels.get(value)
            if absmax is None or not own_weights(value, weights_shared):
                continue
            k = matmul_depth(nodes[0])
            chosen = outlier_channels(absmax) if absmax.size == k else None
            if chosen is None:
                continue
            label = value.name or node_label(nodes[0])
            mask = np.ones(k, np.float32)
            mask[chosen] = 0.0
            gather = ir.node("Gather", [value, add_initializer(graph, f"{label}_dyn_outlier_index", chosen)], {"axis": -1},
                             name=f"{label}_dyn_outliers")
            masked = ir.node("Mul", [value, add_initializer(graph, f"{label}_dyn_mask_values", mask)],
                             name=f"{label}_dyn_masked")
            for n, suffix in ((gather, "_outliers"), (masked, "_masked")):
                n.outputs[0].name, n.outputs[0].dtype = f"{label}_dyn{suffix}", ir.DataType.FLOAT
            _insert_after_producer(graph, value, [gather, masked])
            fronts[value] = OutlierFront(masked.outputs[0], gather.outputs[0], chosen)
        return fronts

    def _shared_inputs(self, graph: ir.Graph) -> dict[ir.Value, ir.Node]:
        """(4) one DynamicQuantizeLinear per input read by several dynamic MatMul/Gemm (of the
        masked input where it has outlier channels (6))."""
        shared = {}
        for original, nodes in self._readers(graph).items():
            if len(nodes) < 2:
                continue
            value = self._outliers[original].masked if original in self._outliers else original
            dql = ir.node("DynamicQuantizeLinear", [value], num_outputs=3, name=f"{value.name}_dql")
            for out, suffix, dtype in zip(dql.outputs, ("_q", "_scale", "_zp"),
                                          (ir.DataType.UINT8, ir.DataType.FLOAT, ir.DataType.UINT8)):
                out.name, out.dtype = f"{value.name}{suffix}", dtype
            _insert_after_producer(graph, value, [dql])
            shared[original] = dql
        return shared

    def _per_channel(self) -> bool:
        return not isinstance(self.config.granularity, PerTensor)

    def _matmul(self, graph: ir.Graph, node: ir.Node) -> None:
        weight, qw, bias = quantize_matmul_weight(node, self._per_channel(), self.qmax, self.pair_limit)  # (1), (2)
        add = None
        if bias is None:
            add, bias = bias_add(node, weight.shape[1])
        label = node_label(node)
        base = fresh_base(graph, node.inputs[1].name or label, ("_q", "_scale", "_zp", "_bias", "_outlier_rows"))
        front = self._outliers.get(node.inputs[0])  # (6)
        inputs = [
            node.inputs[0] if front is None else front.masked,
            add_initializer(graph, f"{base}_q", qw.values),
            add_initializer(graph, f"{base}_scale", qw.scale),
            add_initializer(graph, f"{base}_zp", qw.zero_point),
        ]
        if bias is not None:
            inputs.append(add_initializer(graph, f"{base}_bias", bias))
        dql = self._shared.get(node.inputs[0])
        if dql is None:
            new = ir.node("DynamicQuantizeMatMul", inputs, domain=MS_DOMAIN, name=derived_name(node, "dynamic"))
        else:  # (4) A, B, a_scale, b_scale, a_zero_point, b_zero_point[, bias]
            x_q, x_scale, x_zp = dql.outputs
            new = ir.node("MatMulIntegerToFloat", [x_q, inputs[1], x_scale, inputs[2], x_zp, inputs[3], *inputs[4:]],
                          domain=MS_DOMAIN, name=derived_name(node, "dynamic"))
        new_nodes = [new]
        if front is not None:  # (6) A_O x W_O, exact, added to the kernel's result
            rows = add_initializer(graph, f"{base}_outlier_rows", weight[front.outliers].astype(np.float32))
            corr = ir.node("MatMul", [front.a_o, rows], name=derived_name(node, "outliers"))
            new_nodes += [corr, ir.node("Add", [new.outputs[0], corr.outputs[0]], name=derived_name(node, "outliers_add"))]
        old_inputs = list(node.inputs[1:]) + (list(add.inputs) if add is not None else [])
        replace_nodes(graph, node, new_nodes, add)
        remove_unused_initializers(graph, old_inputs)
        if add is not None:
            self.plan.decide(add, Role.FOLDED, "")
        self.plan.weights[node] = {**qw.summary(weight), "kernel": new.op_type,
                                   "outlier_channels": 0 if front is None else int(front.outliers.size)}

    def _conv(self, graph: ir.Graph, node: ir.Node) -> None:
        weight = np.asarray(const_array(node.inputs[1]), np.float32)  # no copy: weights.py may reuse it
        qw = quantize_weight(weight, 0 if self._per_channel() else None)  # (3)
        label = node_label(node)
        base = fresh_base(graph, node.inputs[1].name or label, ("_q", "_scale", "_zp", "_bias"))
        dql = ir.node("DynamicQuantizeLinear", [node.inputs[0]], num_outputs=3, name=derived_name(node, "dql"))
        w_q = add_initializer(graph, f"{base}_q", qw.values)
        w_zp = add_initializer(graph, f"{base}_zp", np.asarray(0, np.int8))
        attrs = dict(node.attributes.items())
        conv = ir.Node("", "ConvInteger", [dql.outputs[0], w_q, dql.outputs[2], w_zp], attrs.values(),
                       name=derived_name(node, "ConvInteger"))
        cast = ir.node("Cast", [conv.outputs[0]], {"to": ir.DataType.FLOAT}, name=derived_name(node, "cast"))
        shape = [1, -1] + [1] * (weight.ndim - 2)
        w_scale = add_initializer(graph, f"{base}_scale", qw.scale.reshape(shape) if qw.scale.ndim else qw.scale)
        scale = ir.node("Mul", [dql.outputs[1], w_scale], name=derived_name(node, "scale"))
        mul = ir.node("Mul", [cast.outputs[0], scale.outputs[0]], name=derived_name(node, "rescale"))
        new_nodes = [dql, conv, cast, scale, mul]
        bias = const_array(node.inputs[2]) if len(node.inputs) > 2 else None
        if bias is not None:
            b = add_initializer(graph, f"{base}_bias", bias.astype(np.float32).reshape(shape))
            new_nodes.append(ir.node("Add", [mul.outputs[0], b], name=derived_name(node, "bias")))
        old_inputs = list(node.inputs[1:])
        replace_nodes(graph, node, new_nodes)
        remove_unused_initializers(graph, old_inputs)
        self.plan.weights[node] = {**qw.summary(weight), "kernel": "ConvInteger"}


class OutlierFront(NamedTuple):
    """(6) An input with outlier channels: its masked form, A_O, and the channels O."""

    masked: ir.Value
    a_o: ir.Value
    outliers: np.ndarray


def matmul_depth(node: ir.Node) -> int | None:
    """K of a MatMul/Gemm with a constant weight (a transB Gemm's weight is [N, K]); None without one."""
    weight = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if weight is None or weight.ndim != 2:
        return None
    dims = weight.shape
    trans_b = node.attributes.get("transB") if node.op_type == "Gemm" else None
    return int(dims[1] if trans_b is not None and trans_b.value else dims[0])


def _insert_after_producer(graph: ir.Graph, value: ir.Value, nodes: list[ir.Node]) -> None:
    producer = value.producer()
    if producer is None or producer.graph is not graph:  # a graph input, or an outer scope's value
        graph.insert_before(next(iter(graph)), nodes)
    else:
        graph.insert_after(producer, nodes)


def quantize_matmul_weight(node: ir.Node, per_channel: bool, qmax: int = QMAX,
                           pair_limit: int | None = None) -> tuple[np.ndarray, QuantizedWeight, np.ndarray | None]:
    """(weight as [K, N], its int8 form with one scale per column or one in all, a Gemm's own bias
    or None) of a MatMul/Gemm with a constant weight. The stored array itself is quantized, not a
    copy, so that ``reuse_quantized_weights`` and ``gptq_rounding`` find it; a Gemm's transB
    weight [N, K] is quantized along axis 0 and its levels transposed. ``pair_limit``: 8-bit
    levels whose same-sign pairs along K stay within it (``weights.quantize_paired``: each
    channel's largest level chosen for them, then the pairs over it cut)."""
    weight = np.asarray(const_array(node.inputs[1]), np.float32)  # no copy
    bias = None
    transposed = False
    if node.op_type == "Gemm":
        trans_b = node.attributes.get("transB")
        transposed = trans_b is not None and bool(trans_b.value)
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            bias = const_array(node.inputs[2]).astype(np.float32).reshape(-1)
    axis = None if not per_channel else (0 if transposed else 1)
    if pair_limit is not None and weight.ndim == 2:  # weights.quantize_paired: 8 bits, pairs limited
        qw = quantize_paired(weight, axis, node.op_type, trans_b=transposed, limit=pair_limit)
    else:
        qw = quantize_weight(weight, axis, qmax=qmax)
    if transposed:
        weight = weight.T
        # one transposed copy per quantized weight, shared by every variant (auto: ddddocr_rec's
        # last Gemm, one 2 MB copy per build, 938 MB held by the end of a search)
        qw = QuantizedWeight(shared_result(qw.values, "transposed", _transposed), qw.scale, qw.zero_point,
                             None if axis is None else 1)
    return weight, qw, bias


def _transposed(values: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(values.T)
    out.flags.writeable = False
    return out
