"""Store large Gather tables (embeddings) in int8 and gather int8 rows.

    T [V, D] -> Gather(ids)  ==>  Gather(T_q int8, ids) -> Cast -> Mul(Gather(s [V, 1], ids))
    T (other) -> Gather(ids) ==>  Gather(T_q int8, ids) -> DequantizeLinear(s, 0)

1. A 2-D table gathered along axis 0 gets one symmetric scale per row (per token): the rows'
   scales are gathered with the rows, and only the gathered rows are converted to float.
2. Otherwise one scale for the whole table, so a DequantizeLinear can follow the Gather. Never a
   DequantizeLinear before the Gather: it would dequantize the whole table on every run.
3. The table shrinks 4x (a transformer's word embeddings are often half its weights).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, const_array, graphs_of, remove_unused_initializers
from edgeq.passes.plan import QuantPlan, Role, fresh_base, node_label
from edgeq.passes.weights import quantize_weight

__all__ = ["QuantizeEmbeddingsPass"]

logger = logging.getLogger(__name__)


class QuantizeEmbeddingsPass(ir.passes.InPlacePass):
    def __init__(self, plan: QuantPlan) -> None:
        super().__init__()
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for graph in graphs_of(model):  # subgraphs too (select.py (11))
            for node in list(graph):
                if self.plan.role(node) == Role.WEIGHT_ONLY:
                    self._quantize(graph, node)
                    count += 1
        logger.info("quantize_embeddings: %d Gather tables to int8", count)
        return ir.passes.PassResult(model, modified=count > 0)

    def _quantize(self, graph: ir.Graph, node: ir.Node) -> None:
        table_value = node.inputs[0]
        table = np.asarray(const_array(table_value), np.float32)  # no copy: reused weights key on it
        axis_attr = node.attributes.get("axis")
        per_row = table.ndim == 2 and (axis_attr is None or axis_attr.value == 0)
        qw = quantize_weight(table, 0 if per_row else None)  # (1), (2)
        base = fresh_base(graph, table_value.name or node_label(node))
        node.replace_input_with(0, add_initializer(graph, f"{base}_q", qw.values))
        out = node.outputs[0]
        uses = list(out.uses())
        name = out.name or f"{base}_rows"
        if per_row:
            scales = add_initializer(graph, f"{base}_scale", qw.scale.reshape(-1, 1))
            row_scales = ir.node("Gather", [scales, node.inputs[1]], {"axis": 0}, name=f"{name}_scales")
            cast = ir.node("Cast", [out], {"to": ir.DataType.FLOAT}, name=f"{name}_cast")
            new = [row_scales, cast, ir.node("Mul", [cast.outputs[0], row_scales.outputs[0]], name=f"{name}_dq")]
        else:
            scale = add_initializer(graph, f"{base}_scale", qw.scale)
            zp = add_initializer(graph, f"{base}_zp", qw.zero_point)
            new = [ir.node("DequantizeLinear", [out, scale, zp], name=f"{name}_DQ")]
        result = new[-1].outputs[0]
        result.name, result.dtype, result.shape = f"{name}_dq", ir.DataType.FLOAT, out.shape
        out.dtype = ir.DataType.INT8
        graph.insert_after(node, new)
        for use in uses:
            use.node.replace_input_with(use.idx, result)
        if out.is_graph_output():
            for i, value in enumerate(graph.outputs):
                if value is out:
                    graph.outputs[i] = result
            out.name, result.name = f"{name}_int8", name
        remove_unused_initializers(graph, [table_value])
        self.plan.weights[node] = {**qw.summary(table), "kernel": "Gather on int8 rows"}
