"""Insert a QuantizeLinear -> DequantizeLinear pair on every planned activation value.

    x -> Conv  ==>  x -> Q(s, zp) -> DQ(s, zp) -> Conv      (s f32 scalar, zp uint8/int8 scalar)

1. After an int8 producer (QLinearConv, QLinearAdd, a shape-only op ...), every use of the
   value reads the DQ output, float consumers included: ORT fuses producer+Q only when Q is the
   producer's sole consumer. A graph output stays float: it becomes the DQ output, same name.
2. After a float producer (or a graph input), only int8 consumers read the DQ output; float
   consumers keep the exact float value.
3. A constant input of an int8 op (an Add's bias, a Mul's scale) is stored quantized and read
   through a DQ only.
4. Values that share a scale (see share_scales.py) share the very same scale and zero-point
   initializers, so ORT can drop the DQ/Q pair around shape-only ops.
5. int16 nodes (``plan.int16``): their inputs and outputs get int16 pairs (symmetric, zero point
   0, from the same range). A value read by both int8 and int16 nodes gets one pair per type,
   each consumer reading its own; float consumers read the pair of the value's producer type.
   int16 Q/DQ are ai.onnx ops from opset 21; below that they are com.microsoft Q/DQ (onnxruntime
   runs both), so the model's opset is left as it is.
6. Subgraphs (If branches, Loop/Scan bodies): a pair goes into the graph of the nodes that read
   it, with its own scale and zero point there. A value of an outer graph that int8 nodes of a
   body read gets a Q/DQ pair at the top of that body (onnxruntime fuses DQ -> Conv -> Q only
   within one graph); its outer pair, if any, stays for the outer readers, and the body's Q then
   reads the outer DQ (one Q per producer keeps the producer's fusion). Names made in a body
   carry the body's index (``x_g1_q``): a name may not repeat an outer scope's.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import MS_DOMAIN, add_initializer, const_array, remove_unused_initializers
from edgeq.passes.plan import QParams, QuantPlan

__all__ = ["InsertQDQPass"]

logger = logging.getLogger(__name__)

_QTYPES = {"uint8": (np.uint8, ir.DataType.UINT8), "int8": (np.int8, ir.DataType.INT8),
           "int16": (np.int16, ir.DataType.INT16)}


class InsertQDQPass(ir.passes.InPlacePass):
    def __init__(self, plan: QuantPlan) -> None:
        super().__init__()
        self.plan = plan
        self._params: dict[tuple[ir.Value, str, ir.Graph], tuple[ir.Value, ir.Value]] = {}
        self._domain16 = ""
        self._tags: dict[ir.Graph, str] = {}

    def _scale_zp(self, graph: ir.Graph, value: ir.Value, dtype: str | None = None) -> tuple[ir.Value, ir.Value, QParams]:
        root = self.plan.root(value)
        qp = self.plan.params(root, dtype)
        if (root, qp.dtype, graph) not in self._params:  # (4), (6) one per graph
            np_type, _ = _QTYPES[qp.dtype]
            base = self._name(graph, root) + ("_i16" if dtype == "int16" and dtype != self.plan.qparams[root].dtype else "")
            self._params[(root, qp.dtype, graph)] = (
                add_initializer(graph, f"{base}_scale", np.asarray(qp.scale, dtype=np.float32)),
                add_initializer(graph, f"{base}_zp", np.asarray(qp.zero_point, dtype=np_type)),
            )
        scale, zp = self._params[(root, qp.dtype, graph)]
        return scale, zp, qp

    def _name(self, graph: ir.Graph, value: ir.Value) -> str:
        """``value``'s name, tagged with ``graph``'s index when ``value`` belongs to an outer graph (6)."""
        name = value.name or "value"
        return name if graph not in self._tags or value.graph is graph else f"{name}_{self._tags[graph]}"

    def _domain(self, dtype: str) -> str:
        return self._domain16 if dtype == "int16" else ""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self._tags = {g: f"g{i}" for i, g in enumerate(graph.subgraphs(), 1)}  # (6)
        if model.opset_imports.get("", 13) < 21 and (
                self.plan.int16 or any(qp.dtype == "int16" for qp in self.plan.qparams.values())):
            self._domain16 = MS_DOMAIN  # (5)
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        count = 0
        for value in list(self.plan.values):
            if const_array(value) is not None:
                self._constant(value.graph or graph, value)
            else:
                self._activation(value.graph or graph, value)
            count += 1
        logger.info("insert_qdq: %d Q/DQ pairs", count)
        return ir.passes.PassResult(model, modified=count > 0)

    def _activation(self, graph: ir.Graph, value: ir.Value) -> None:
        plan = self.plan
        inner: dict[tuple[ir.Graph, str | None], list] = {}  # (6) int8 readers in subgraphs
        for use in value.uses():
            if use.node.graph is not graph and plan.is_int8(use.node):
                inner.setdefault((use.node.graph, "int16" if plan.is_int16(use.node) else None), []).append(use)
        for (body, dtype), uses in inner.items():
            self._pair(body, value, dtype=dtype, uses=uses, owns_output=False)
        producer = value.producer()
        int16_producer = plan.is_int16(producer)
        int8_producer = plan.is_int8(producer) and not int16_producer
        uses16 = [u for u in value.uses() if plan.is_int16(u.node)]  # (5)
        uses8 = [u for u in value.uses() if plan.is_int8(u.node) and not plan.is_int16(u.node)]
        floats = [u for u in value.uses() if not plan.is_int8(u.node)]  # a body's Q (6) included
        if int16_producer or uses16:
            self._pair(graph, value, dtype="int16", uses=uses16 + (floats if int16_producer else []),
                       owns_output=int16_producer)
        if int8_producer or uses8:
            self._pair(graph, value, dtype=None, uses=uses8 + (floats if int8_producer else []),  # (1), (2)
                       owns_output=int8_producer)

    def _pair(self, graph: ir.Graph, value: ir.Value, *, dtype: str | None, uses: list, owns_output: bool) -> None:
        """A Q/DQ pair on ``value`` in ``dtype`` (None: the plan's own) read by ``uses``; when
        ``owns_output`` and ``value`` is a graph output, the DQ output takes its place. No pair
        when nothing would read it (an int16 node's output read only by int8 nodes)."""
        if not uses and not (owns_output and value.is_graph_output()):
            return
        scale, zp, qp = self._scale_zp(graph, value, dtype)
        producer = value.producer()
        name = self._name(graph, value)
        if dtype is not None and dtype != self.plan.qparams[self.plan.root(value)].dtype:
            name = f"{name}_i16"
        domain = self._domain(qp.dtype)
        q = ir.node("QuantizeLinear", [value, scale, zp], name=f"{name}_Q", domain=domain)
        q.outputs[0].name = f"{name}_q"
        q.outputs[0].dtype = _QTYPES[qp.dtype][1]
        q.outputs[0].shape = value.shape
        dq = ir.node("DequantizeLinear", [q.outputs[0], scale, zp], name=f"{name}_DQ", domain=domain)
        dq_out = dq.outputs[0]
        dq_out.name = f"{name}_dq"
        dq_out.dtype = ir.DataType.FLOAT
        dq_out.shape = value.shape
        if producer is None or producer.graph is not graph:  # a graph input, or an outer value (6)
            first = next(iter(graph), None)
            if first is None:
                graph.extend([q, dq])
            else:
                graph.insert_before(first, [q, dq])
        else:
            graph.insert_after(producer, [q, dq])
        for use in uses:
            use.node.replace_input_with(use.idx, dq_out)
        if owns_output and value.is_graph_output():
            original = value.name
            for i, out in enumerate(graph.outputs):
                if out is value:
                    graph.outputs[i] = dq_out
            value.name, dq_out.name = f"{original}_float", original

    def _constant(self, graph: ir.Graph, value: ir.Value) -> None:
        for body in dict.fromkeys(u.node.graph for u in value.uses()):  # (6) a DQ in each reading graph
            uses16 = [u for u in value.uses() if u.node.graph is body and self.plan.is_int16(u.node)]  # (5)
            uses8 = [u for u in value.uses() if u.node.graph is body and self.plan.is_int8(u.node)
                     and not self.plan.is_int16(u.node)]
            for dtype, uses in (("int16", uses16), (None, uses8)):
                if uses:
                    self._constant_dq(body, value, dtype, uses)
        remove_unused_initializers(graph, [value])

    def _constant_dq(self, graph: ir.Graph, value: ir.Value, dtype: str | None, uses: list) -> None:
        scale, zp, qp = self._scale_zp(graph, value, dtype)
        np_type, _ = _QTYPES[qp.dtype]
        info = np.iinfo(np_type)
        array = const_array(value).astype(np.float32)
        quantized = np.clip(np.rint(array / qp.scale) + qp.zero_point, info.min, info.max).astype(np_type)
        name = self._name(graph, value) if value.name else "const"
        if dtype is not None and dtype != self.plan.qparams[self.plan.root(value)].dtype:
            name = f"{name}_i16"  # read by int16 and int8 nodes: two DQs, two names
        q = add_initializer(graph, f"{name}_q", quantized)
        dq = ir.node("DequantizeLinear", [q, scale, zp], name=f"{name}_DQ", domain=self._domain(qp.dtype))
        dq.outputs[0].name = f"{name}_dq"
        dq.outputs[0].dtype = ir.DataType.FLOAT
        dq.outputs[0].shape = ir.Shape(array.shape)
        graph.insert_before(next(iter(graph)), dq)
        for use in uses:
            use.node.replace_input_with(use.idx, dq.outputs[0])
