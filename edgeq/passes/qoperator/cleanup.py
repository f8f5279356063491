"""``Q -> DQ -> Q (same scale)  ==>  Q``, then drop Q/DQ nodes and constants left unused.

1. A QuantizeLinear fed by a DequantizeLinear of the same dtype, scale and zero point is the
   identity on the integer tensor: its users read the integer tensor directly.
2. Nodes whose outputs nobody reads (the DQ/Q pairs the rules bypassed) are removed, then
   unused initializers; the com.microsoft opset is imported when a rule used it.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import MS_DOMAIN, const_array
from edgeq.passes.qoperator._match import dequantized

__all__ = ["RemoveDeadQDQPass"]

logger = logging.getLogger(__name__)


def _fold_identity_pairs(graph: ir.Graph) -> int:
    folded = 0
    for q in list(graph):
        if q.op_type != "QuantizeLinear" or q.outputs[0].is_graph_output():
            continue
        x = dequantized(q.inputs[0], graph)
        scale = const_array(q.inputs[1])
        zp = q.inputs[2] if len(q.inputs) > 2 else None
        zp_array = const_array(zp)
        if isinstance(x, str) or scale is None or zp_array is None or not x.per_tensor:
            continue
        same = (
            zp_array.dtype == x.zero_point_array.dtype
            and scale.size == 1
            and np.allclose(scale, x.scale_array, rtol=1e-6, atol=0)
            and np.array_equal(zp_array.ravel(), x.zero_point_array.ravel())
        )
        if same:  # case 1
            ir.convenience.replace_all_uses_with(q.outputs[0], x.value)
            folded += 1
    return folded


def _remove_unused(graph: ir.Graph) -> int:
    removed = 0
    graph_outputs = set(graph.outputs)
    for node in reversed(list(graph)):
        if any(v in graph_outputs or v.uses() for v in node.outputs):
            continue
        graph.remove(node, safe=True)
        removed += 1
    for name, value in list(graph.initializers.items()):
        # uses() also counts subgraph nodes reading the initializer from the outer scope
        if not value.uses() and not value.is_graph_output() and not value.is_graph_input():
            del graph.initializers[name]
    return removed


class RemoveDeadQDQPass(ir.passes.InPlacePass):
    """Fold identity Q/DQ pairs, remove dead nodes and constants, import com.microsoft."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        folded = _fold_identity_pairs(graph)
        removed = _remove_unused(graph)
        if any(n.domain == MS_DOMAIN for n in graph):
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        logger.debug("cleanup: folded %d Q/DQ pairs, removed %d nodes", folded, removed)
        return ir.passes.PassResult(model, modified=bool(folded or removed))
