"""Store a weight read by many nodes once: equal constants become one, and so do their DQs.

    W -> Gemm_1 ... W -> Gemm_40                       (an unrolled LSTM: one weight, 40 readers)
    ==> (quantized per reader)  W_q1 -> DQ_1 -> Gemm_1 ... W_q40 -> DQ_40 -> Gemm_40
    ==> W_q -> DQ -> Gemm_1 ... Gemm_40                  (one int8 copy, one DequantizeLinear)

The weight passes quantize per reader (a reader's bias and input scale may differ); the copies
of one weight come out equal, and this pass, run after them, keeps one.

1. Initializers of the main graph of at least ``MIN_BYTES`` with equal dtype, shape and
   content are one: later readers read the first. Zero points and zero biases too: per-channel
   zero points of a weight read by 40 nodes are 40 copies in the file otherwise (10 KB of the
   unrolled LSTM's 86 KB).
2. DequantizeLinear nodes (any domain) on the same input 0, with equal scale and zero point
   constants and equal attributes, are one: the first (in graph order) serves every reader.
   Two readers with different scales (a bias over different input scales) keep their own.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import const_array, remove_unused_initializers
from edgeq.passes.weights import shared_result

__all__ = ["ShareWeightsPass", "MIN_BYTES"]

logger = logging.getLogger(__name__)

MIN_BYTES = 64  # smaller ones cost about what a shared name does


def _content_key(array: np.ndarray) -> tuple:
    """dtype, shape and a hash of the bytes; hashed once per read-only array within
    ``reuse_quantized_weights`` (auto's variants share their weights: MiniLM's 85 builds hashed
    150 tensors each, 2.3 s)."""
    return shared_result(array, "content", _hashed)


def _hashed(array: np.ndarray) -> tuple:
    return (array.dtype.str, array.shape, hashlib.sha256(np.ascontiguousarray(array).tobytes()).digest())


class ShareWeightsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        merged = self._merge_initializers(graph)
        dqs = self._merge_dequantize(graph)
        if merged or dqs:
            logger.info("share_weights: %d equal constants stored once, %d DequantizeLinear shared", merged, dqs)
        return ir.passes.PassResult(model, modified=bool(merged or dqs))

    def _merge_initializers(self, graph: ir.Graph) -> int:  # (1)
        first: dict[tuple, ir.Value] = {}
        merged = 0
        for value in list(graph.initializers.values()):
            tensor = value.const_value
            if tensor is None or tensor.nbytes < MIN_BYTES or value.is_graph_input() or value.is_graph_output():
                continue
            array = tensor.numpy()
            if array.dtype.kind not in "biuf" or array.size < 2:
                continue
            key = _content_key(array)
            kept = first.setdefault(key, value)
            if kept is not value:
                value.replace_all_uses_with(kept)
                remove_unused_initializers(graph, [value])
                merged += 1
        return merged

    def _merge_dequantize(self, graph: ir.Graph) -> int:  # (2)
        first: dict[tuple, ir.Node] = {}
        merged = 0
        for node in list(graph):
            if node.op_type != "DequantizeLinear" or not node.inputs or node.inputs[0] is None:
                continue
            params = []
            for value in node.inputs[1:]:
                array = const_array(value)
                if value is not None and array is None:
                    break  # a scale computed at run time: not a constant DQ
                params.append(None if array is None else _content_key(np.asarray(array)))
            else:
                attrs = tuple(sorted((k, repr(a.value)) for k, a in node.attributes.items()))
                key = (node.domain, id(node.inputs[0]), tuple(params), attrs)
                kept = first.setdefault(key, node)
                if kept is not node:
                    old = node.outputs[0]
                    if old.is_graph_output():
                        continue
                    old.replace_all_uses_with(kept.outputs[0])
                    inputs = list(node.inputs)
                    graph.remove(node, safe=True)
                    remove_unused_initializers(graph, inputs)
                    merged += 1
        return merged
