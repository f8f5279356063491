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
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.passes.plan import QParams, QuantPlan, const_array, fresh_name

__all__ = ["InsertQDQ"]

logger = logging.getLogger(__name__)

_QTYPES = {"uint8": (np.uint8, ir.DataType.UINT8), "int8": (np.int8, ir.DataType.INT8)}


def _scalar(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    value.shape = ir.Shape(array.shape)
    value.dtype = value.const_value.dtype
    graph.register_initializer(value)
    return value


class InsertQDQ(ir.passes.InPlacePass):
    def __init__(self, plan: QuantPlan) -> None:
        super().__init__()
        self.plan = plan
        self._params: dict[ir.Value, tuple[ir.Value, ir.Value]] = {}

    def _scale_zp(self, graph: ir.Graph, value: ir.Value) -> tuple[ir.Value, ir.Value, QParams]:
        root = self.plan.root(value)
        qp = self.plan.qparams[root]
        if root not in self._params:  # (4)
            np_type, _ = _QTYPES[qp.dtype]
            base = root.name or "value"
            self._params[root] = (
                _scalar(graph, fresh_name(graph, f"{base}_scale"), np.asarray(qp.scale, dtype=np.float32)),
                _scalar(graph, fresh_name(graph, f"{base}_zp"), np.asarray(qp.zero_point, dtype=np_type)),
            )
        scale, zp = self._params[root]
        return scale, zp, qp

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        count = 0
        for value in list(self.plan.values):
            if const_array(value) is not None:
                self._constant(graph, value)
            else:
                self._activation(graph, value)
            count += 1
        logger.info("insert_qdq: %d Q/DQ pairs", count)
        return ir.passes.PassResult(model, modified=count > 0)

    def _activation(self, graph: ir.Graph, value: ir.Value) -> None:
        scale, zp, qp = self._scale_zp(graph, value)
        producer = value.producer()
        int8_producer = self.plan.is_int8(producer)
        uses = [u for u in value.uses() if int8_producer or self.plan.is_int8(u.node)]  # (1), (2)
        name = value.name or "value"
        q = ir.node("QuantizeLinear", [value, scale, zp], name=f"{name}_Q")
        q.outputs[0].name = f"{name}_q"
        q.outputs[0].dtype = _QTYPES[qp.dtype][1]
        q.outputs[0].shape = value.shape
        dq = ir.node("DequantizeLinear", [q.outputs[0], scale, zp], name=f"{name}_DQ")
        dq_out = dq.outputs[0]
        dq_out.name = f"{name}_dq"
        dq_out.dtype = ir.DataType.FLOAT
        dq_out.shape = value.shape
        if producer is None:
            first = next(iter(graph), None)
            if first is None:
                graph.extend([q, dq])
            else:
                graph.insert_before(first, [q, dq])
        else:
            graph.insert_after(producer, [q, dq])
        for use in uses:
            use.node.replace_input_with(use.idx, dq_out)
        if int8_producer and value.is_graph_output():
            for i, out in enumerate(graph.outputs):
                if out is value:
                    graph.outputs[i] = dq_out
            value.name, dq_out.name = f"{name}_float", name

    def _constant(self, graph: ir.Graph, value: ir.Value) -> None:
        scale, zp, qp = self._scale_zp(graph, value)
        np_type, _ = _QTYPES[qp.dtype]
        info = np.iinfo(np_type)
        array = const_array(value).astype(np.float32)
        quantized = np.clip(np.rint(array / qp.scale) + qp.zero_point, info.min, info.max).astype(np_type)
        name = value.name or "const"
        q = _scalar(graph, fresh_name(graph, f"{name}_q"), quantized)
        dq = ir.node("DequantizeLinear", [q, scale, zp], name=f"{name}_DQ")
        dq.outputs[0].name = f"{name}_dq"
        dq.outputs[0].dtype = ir.DataType.FLOAT
        dq.outputs[0].shape = ir.Shape(array.shape)
        uses = [u for u in value.uses() if self.plan.is_int8(u.node)]
        graph.insert_before(next(iter(graph)), dq)
        for use in uses:
            use.node.replace_input_with(use.idx, dq.outputs[0])
        if not value.uses() and not value.is_graph_output() and value.name in graph.initializers:
            del graph.initializers[value.name]
