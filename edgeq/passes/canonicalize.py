"""Rewrite float ops into equivalent forms that have int8 kernels, before selection.

    ReduceMean(x, axes=spatial, keepdims=1)  ==>  GlobalAveragePool(x)
    ReduceMean(x, axes=spatial, keepdims=0)  ==>  GlobalAveragePool(x) -> Flatten(axis=1)

1. torch's dynamo exporter writes global average pooling as ReduceMean over H and W; ORT has
   QLinearGlobalAveragePool but no int8 ReduceMean, so without this the pooling and everything
   after it would stay float. Only when the input rank is known, the axes (attribute, or a
   constant input from opset 18) are exactly 2..rank-1, and the rank is 3 to 5.
2. keepdims=0 only for 4-D inputs with 2 spatial axes ([N, C, H, W] -> [N, C]): Flatten(axis=1)
   restores that shape, and both ops run on int8 data.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from edgeq.graph import const_array
from edgeq.passes.plan import derived_name

__all__ = ["CanonicalizePass"]

logger = logging.getLogger(__name__)


def _axes(node: ir.Node) -> list[int] | None:
    attr = node.attributes.get("axes")
    if attr is not None:
        return list(attr.value)
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = const_array(node.inputs[1])
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    return None


class CanonicalizePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, count = model.graph, 0
        for node in list(graph):
            if node.op_type == "ReduceMean" and node.domain == "" and self._global_pool(graph, node):
                count += 1
        if count:
            logger.info("canonicalize: %d ReduceMean -> GlobalAveragePool", count)
        return ir.passes.PassResult(model, modified=count > 0)

    @staticmethod
    def _global_pool(graph: ir.Graph, node: ir.Node) -> bool:
        x = node.inputs[0]
        rank = len(x.shape) if x.shape is not None else None
        axes = _axes(node)
        if rank is None or axes is None or not 3 <= rank <= 5:
            return False
        if sorted(a % rank for a in axes) != list(range(2, rank)):  # (1)
            return False
        keep = node.attributes.get("keepdims")
        keepdims = 1 if keep is None else keep.value
        if not keepdims and rank != 4:  # (2)
            return False
        pool = ir.node("GlobalAveragePool", [x], name=derived_name(node, "gap"))
        new = [pool]
        if not keepdims:
            new.append(ir.node("Flatten", [pool.outputs[0]], {"axis": 1}, name=derived_name(node, "flatten")))
        old = node.outputs[0]
        out = new[-1].outputs[0]
        out.shape, out.dtype = old.shape, old.dtype
        pool.outputs[0].dtype = x.dtype
        pool.outputs[0].shape = ir.Shape([*x.shape[:2], *([1] * (rank - 2))])
        graph.insert_before(node, new)
        old.replace_all_uses_with(out, replace_graph_outputs=True)
        name = old.name
        graph.remove(node, safe=True)
        out.name = name
        return True
