"""Convert a float32 model to float16 compute, keeping the graph's inputs and outputs float32.

    x(fp32) -> Conv(W fp32) -> Relu -> y(fp32)
        ==>
    x(fp32) -> Cast(fp16) -> Conv(W fp16) -> Relu -> Cast(fp32) -> y(fp32)

Cases (the code's comments cite them):

1. A node runs in fp16 unless its op type is in ``keep_fp32_ops``, it is not in the default ONNX
   domain, it holds a subgraph, or a dtype it touches is unknown. Nodes kept in fp32 that touch
   float tensors are listed in the report with the reason.
2. Float32 outputs of an fp16 node become float16. ``Cast(to=FLOAT)`` in fp16 becomes
   ``Cast(to=FLOAT16)``.
3. A float32 initializer used by an fp16 node is converted (values clamped to +-65504, counted
   in the report); if fp32 nodes also use it, the fp16 node gets a converted copy.
4. A float32 activation (graph input or output of an fp32 node) used by an fp16 node gets one
   ``Cast(to=FLOAT16)``, shared by all its fp16 consumers; an fp16 activation used by an fp32 node
   gets one ``Cast(to=FLOAT)``.
5. A graph output produced in fp16 is cast back: the Cast's output takes the output's name.
6. Per layer (``nodes``, e.g. ``QuantConfig.fp16_nodes``): only the named nodes are candidates;
   every other node stays as it is (fp32 or int8 Q/DQ), so Casts sit only at the boundaries of
   the fp16 regions: consecutive fp16 nodes pass fp16 values without a Cast. ``Float16NodesPass``
   runs it inside the quantize pipeline, after the Q/DQ are in place.

Measured on onnxruntime 1.32's CPU provider (x86, AVX-512): there are no fp16 Conv, MatMul or
Gemm kernels; ORT inserts Casts back to fp32 around them and runs the fp32 kernels (an fp16
Conv+MatMul+Gemm graph ran at 2.28 ms vs 2.26 ms fp32), so fp16 buys size, not speed, on CPU.
It is the CUDA provider's answer.

Which ops stay in fp32 by default (``DEFAULT_KEEP_FP32``) and why:

* Range: ``Exp``, ``Pow`` overflow fp16 (max 65504) for inputs above ~11 and ~256 (squares in a
  decomposed LayerNorm/RMSNorm); ``ReduceSum``, ``ReduceSumSquare``, ``ReduceL1/L2``,
  ``ReduceProd``, ``ReduceLogSum(Exp)``, ``CumSum`` can overflow because their output grows with
  the number of elements; ``ReduceMean`` stays fp32 because it is the mean-of-squares of
  decomposed normalizations (its input comes from a kept ``Pow``). Softmax and
  LayerNormalization run in fp16: onnxruntime's kernels subtract the row maximum and accumulate
  in fp32 (``stash_type``), so they do not overflow.
* Shape and index computing, float inputs that must stay float32: ``Resize``/``Upsample``
  (``scales`` is float32 only), ``Range``, ``ConstantOfShape``, ``EyeLike``, random generators,
  ``NonMaxSuppression``, ``RoiAlign``, ``STFT``.
* Integer semantics: quantize/dequantize and integer ops (``QuantizeLinear``,
  ``DequantizeLinear``, ``QLinear*``, ``*Integer``, ``DynamicQuantizeLinear``): their scales are
  float32 in a QDQ model.
* ``Constant`` nodes (run the prepare pipeline first to fold them into initializers).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from edgeq.graph import ONNX_DOMAINS, initializer_tensor

__all__ = ["Float16Pass", "Float16NodesPass", "convert_fp16", "DEFAULT_KEEP_FP32", "RANGE_OPS", "SHAPE_OPS", "INTEGER_OPS"]

logger = logging.getLogger(__name__)

RANGE_OPS = frozenset(
    {
        "Exp",
        "Pow",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL1",
        "ReduceL2",
        "ReduceProd",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMean",
        "CumSum",
    }
)
SHAPE_OPS = frozenset(
    {
        "Resize",
        "Upsample",
        "Range",
        "ConstantOfShape",
        "EyeLike",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "NonMaxSuppression",
        "RoiAlign",
        "STFT",
        "Constant",
    }
)
INTEGER_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
    }
)
DEFAULT_KEEP_FP32 = RANGE_OPS | SHAPE_OPS | INTEGER_OPS

# Ops that accept a float32 input as it is in an fp16 graph: no Cast is put before them.
_ANY_INPUT = frozenset({"Cast", "Shape", "Size"})
FP16_MAX = 65504.0
_F32 = ir.DataType.FLOAT
_F16 = ir.DataType.FLOAT16


def _reason(op_type: str) -> str:
    if op_type == "ReduceMean":
        return "range: mean of squares in decomposed LayerNorm/RMSNorm (input from Pow)"
    if op_type in RANGE_OPS:
        return "range: output can overflow float16"
    if op_type in SHAPE_OPS:
        return "shape/index computation or float32-only input"
    if op_type in INTEGER_OPS:
        return "integer (quantized) semantics"
    return "listed in keep_fp32_ops"


def _touches_float32(node: ir.Node) -> bool:
    values = [*node.inputs, *node.outputs]
    return any(v is not None and v.dtype == _F32 for v in values)


def _has_unknown_dtype(node: ir.Node) -> bool:
    return any(v is not None and v.name and v.dtype is None for v in [*node.inputs, *node.outputs])


def _fp16_tensor(tensor: ir.TensorProtocol, name: str) -> tuple[ir.Tensor, int]:
    array = tensor.numpy().astype(np.float32)
    clamped = int(np.count_nonzero(np.abs(array[np.isfinite(array)]) > FP16_MAX))
    array = np.where(np.isfinite(array), np.clip(array, -FP16_MAX, FP16_MAX), array)
    return ir.Tensor(array.astype(np.float16), name=name), clamped


@dataclasses.dataclass(frozen=True)
class _Plan:
    fp16: frozenset[int]  # id() of nodes converted
    kept: tuple[dict[str, str], ...]


class Float16Pass(ir.passes.InPlacePass):
    """float32 compute -> float16, fp32 graph boundary; see the module docstring."""

    def __init__(self, keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32, nodes: Iterable[str] | None = None) -> None:
        super().__init__()
        self.keep_fp32_ops = frozenset(keep_fp32_ops)
        self.nodes = None if nodes is None else frozenset(nodes)
        self.report: dict[str, Any] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        if any(v.dtype is None for n in graph for v in n.outputs if v.name):
            ir.passes.common.ShapeInferencePass()(model)
        weights_before = _float_weight_bytes(graph)
        plan = self._plan(graph)
        counts = {"casts": 0, "initializers": 0, "clamped": 0}
        self._retype_outputs(graph, plan)
        self._fix_inputs(graph, plan, counts)
        self._cast_graph_outputs(graph, counts)
        graph.sort()
        nodes_fp16 = len(plan.fp16)
        self.report = {
            "mode": "fp16",
            "nodes_fp16": nodes_fp16,
            "nodes_fp32": len(plan.kept),
            "kept_fp32": list(plan.kept),
            "kept_fp32_op_types": sorted({k["op_type"] for k in plan.kept}),
            "keep_fp32_ops": sorted(self.keep_fp32_ops),
            "casts_inserted": counts["casts"],
            "initializers_converted": counts["initializers"],
            "values_clamped": counts["clamped"],
            "float_weight_bytes_before": weights_before,
            "float_weight_bytes_after": _float_weight_bytes(graph),
        }
        logger.info(
            "fp16: %d nodes in fp16, %d kept in fp32, %d casts inserted",
            nodes_fp16,
            len(plan.kept),
            counts["casts"],
        )
        return ir.passes.PassResult(model, modified=nodes_fp16 > 0)

    # case 1 ------------------------------------------------------------------------------------
    def _plan(self, graph: ir.Graph) -> _Plan:
        fp16: set[int] = set()
        kept: list[dict[str, str]] = []
        for node in graph:
            if self.nodes is not None and node.name not in self.nodes:
                continue  # case 6: not asked for
            if not _touches_float32(node):
                continue  # integer/shape node: nothing to convert
            if node.op_type in self.keep_fp32_ops:
                reason = _reason(node.op_type)
            elif node.domain not in ONNX_DOMAINS:
                reason = f"custom domain {node.domain!r}"
            elif any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
                reason = "holds a subgraph"
            elif _has_unknown_dtype(node):
                reason = "a tensor's dtype is unknown (run shape inference)"
            else:
                fp16.add(id(node))
                continue
            kept.append({"node": node.name or "", "op_type": node.op_type, "reason": reason})
            logger.debug("fp16: keeping %s (%s) in fp32: %s", node.name, node.op_type, reason)
        return _Plan(frozenset(fp16), tuple(kept))

    # case 2 ------------------------------------------------------------------------------------
    @staticmethod
    def _retype_outputs(graph: ir.Graph, plan: _Plan) -> None:
        for node in graph:
            if id(node) not in plan.fp16:
                continue
            if node.op_type == "Cast" and node.attributes["to"].as_int() == _F32:
                node.attributes["to"] = ir.AttrInt64("to", _F16)
            for out in node.outputs:
                if out.dtype == _F32:
                    out.dtype = _F16

    # cases 3 and 4 -----------------------------------------------------------------------------
    def _fix_inputs(self, graph: ir.Graph, plan: _Plan, counts: dict[str, int]) -> None:
        to16: dict[int, ir.Value] = {}
        to32: dict[int, ir.Value] = {}
        # Subgraph nodes run in fp32 (case 1); they may read main-graph values, which get a Cast.
        for node in list(ir.traversal.RecursiveGraphIterator(graph)):
            is16 = id(node) in plan.fp16
            for index, value in enumerate(node.inputs):
                if value is None:
                    continue
                if is16 and value.dtype == _F32 and node.op_type not in _ANY_INPUT:
                    if initializer_tensor(value) is not None:
                        new = to16.get(id(value)) or self._fp16_initializer(graph, value, plan, counts)
                    else:
                        new = to16.get(id(value)) or self._cast(graph, value, _F16, counts)
                    to16[id(value)] = new
                    node.replace_input_with(index, new)
                elif not is16 and value.dtype == _F16 and _was_converted(value, plan):
                    new = to32.get(id(value)) or self._cast(graph, value, _F32, counts)
                    to32[id(value)] = new
                    node.replace_input_with(index, new)

    @staticmethod
    def _fp16_initializer(graph: ir.Graph, value: ir.Value, plan: _Plan, counts: dict[str, int]) -> ir.Value:
        only16 = all(id(use.node) in plan.fp16 for use in value.uses()) and not value.is_graph_output()
        tensor, clamped = _fp16_tensor(value.const_value, value.name or "")
        counts["initializers"] += 1
        counts["clamped"] += clamped
        if only16:  # case 3: convert in place
            value.const_value = tensor
            value.dtype = _F16
            return value
        copy = ir.Value(name=f"{value.name}_fp16", shape=value.shape, type=ir.TensorType(_F16), const_value=tensor)
        copy.const_value.name = copy.name
        graph.register_initializer(copy)
        return copy

    @staticmethod
    def _cast(graph: ir.Graph, value: ir.Value, to: ir.DataType, counts: dict[str, int]) -> ir.Value:
        suffix = "fp16" if to == _F16 else "fp32"
        node = ir.node("Cast", [value], attributes={"to": to}, name=f"{value.name}_cast_{suffix}")
        out = node.outputs[0]
        out.name = f"{value.name}_{suffix}"
        out.dtype = to
        out.shape = value.shape
        producer = value.producer()
        if producer is not None and producer.graph is graph:
            graph.insert_after(producer, node)
        elif len(graph):
            graph.insert_before(next(iter(graph)), node)
        else:
            graph.append(node)
        counts["casts"] += 1
        return out

    # case 5 ------------------------------------------------------------------------------------
    @staticmethod
    def _cast_graph_outputs(graph: ir.Graph, counts: dict[str, int]) -> None:
        for index, value in enumerate(list(graph.outputs)):
            if value.dtype != _F16 or value.is_graph_input():
                continue
            producer = value.producer()
            if producer is None and not value.is_initializer():
                continue
            name = value.name
            value.name = f"{name}_fp16"
            node = ir.node("Cast", [value], attributes={"to": _F32}, name=f"{name}_cast_fp32")
            out = node.outputs[0]
            out.name = name
            out.dtype = _F32
            out.shape = value.shape
            if producer is not None:
                graph.insert_after(producer, node)
            else:
                graph.append(node)
            graph.outputs[index] = out
            counts["casts"] += 1


def _was_converted(value: ir.Value, plan: _Plan) -> bool:
    producer = value.producer()
    # Initializers converted in place feed only fp16 nodes (case 3), so only produced values count.
    return producer is not None and id(producer) in plan.fp16


def _float_weight_bytes(graph: ir.Graph) -> int:
    return sum(
        v.const_value.nbytes
        for v in graph.initializers.values()
        if v.const_value is not None and v.dtype in (_F32, _F16)
    )


class Float16NodesPass(Float16Pass):
    """Case 6 in the quantize pipeline: ``config.fp16_nodes`` to fp16, a note in the plan."""

    def __init__(self, nodes: Iterable[str], plan: Any) -> None:
        super().__init__(DEFAULT_KEEP_FP32, nodes)
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = super().call(model)
        kept = ", ".join(f"{k['node']} ({k['reason']})" for k in self.report["kept_fp32"])
        self.plan.notes.append(f"fp16: {self.report['nodes_fp16']} node(s) in fp16, "
                               f"{self.report['casts_inserted']} Cast(s) at the region boundaries"
                               + (f"; kept fp32: {kept}" if kept else ""))
        return result


def convert_fp16(model: ir.Model, keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32) -> dict[str, Any]:
    """Convert ``model`` in place to fp16 compute; return the report section (JSON-ready).

    The report lists every node kept in fp32 with its reason, the number of Casts inserted,
    initializers converted, values clamped to the fp16 range, and float weight bytes before/after.
    """
    unknown = sorted(set(keep_fp32_ops) - DEFAULT_KEEP_FP32)
    if unknown:
        logger.info("fp16: also keeping %s in fp32 as asked", ", ".join(unknown))
    pass_ = Float16Pass(keep_fp32_ops)
    pass_(model)
    return pass_.report
