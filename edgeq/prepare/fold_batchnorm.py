"""BatchNormalization folded into the Conv, ConvTranspose or Gemm that feeds it.

    Conv(x, W, b) -> BatchNormalization(scale, B, mean, var)  ==>  Conv(x, W', b')

    s  = scale / sqrt(var + epsilon)           (per output channel, float64)
    W' = W * s   along the output-channel axis
    b' = (b - mean) * s + B

Cases:
1. Conv: output channels are W's axis 0.
2. ConvTranspose: W is [C_in, M/group, k...]; output channel g*M/group + j scales W[g-block, j].
3. Gemm (BatchNorm1d on [N, M]): alpha folds into W' (then alpha=1), beta*C into b'; W's
   output axis is 0 with transB=1, else 1; C must be absent or hold M values.
4. Nothing folds when the producer's output has other users or is a graph output, when any
   weight or BN parameter is not a constant initializer, or when the BN is in training mode
   or uses its optional outputs. Only the convs followed by BN are read, so big models are not
   loaded whole. A weight shared with another node is copied, not overwritten.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import ONNX_DOMAINS, add_initializer, initializer_tensor
from edgeq.prepare._base import NotingPass

__all__ = ["FoldBatchNormPass"]

logger = logging.getLogger(__name__)

_PRODUCERS = ("Conv", "ConvTranspose", "Gemm")


def _bn_params(bn: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (s, t) with BN(y) = y * s + t, or None when BN cannot fold (case 4)."""
    if len(bn.inputs) != 5 or any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
        return None
    if bn.attributes.get_int("training_mode", 0) != 0:
        return None
    tensors = [initializer_tensor(v) for v in bn.inputs[1:]]
    if any(t is None for t in tensors):
        return None
    scale, bias, mean, var = (np.asarray(t.numpy(), dtype=np.float64).reshape(-1) for t in tensors)
    eps = bn.attributes.get_float("epsilon", 1e-5)
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


def _scaled_weight(node: ir.Node, w: np.ndarray, s: np.ndarray) -> np.ndarray | None:
    op = node.op_type
    if op == "Conv":  # case 1
        return w * s.reshape((-1,) + (1,) * (w.ndim - 1)) if w.shape[0] == s.size else None
    if op == "ConvTranspose":  # case 2
        group = node.attributes.get_int("group", 1)
        if w.shape[1] * group != s.size:
            return None
        blocks = w.reshape((group, w.shape[0] // group, w.shape[1]) + w.shape[2:])
        per = s.reshape((group, 1, w.shape[1]) + (1,) * (w.ndim - 2))
        return (blocks * per).reshape(w.shape)
    # case 3: Gemm
    if w.ndim != 2 or node.attributes.get_int("transA", 0) != 0:
        return None
    alpha = node.attributes.get_float("alpha", 1.0)
    if node.attributes.get_int("transB", 0):
        return alpha * w * s[:, None] if w.shape[0] == s.size else None
    return alpha * w * s[None, :] if w.shape[1] == s.size else None


def _old_bias(node: ir.Node, channels: int) -> np.ndarray | None:
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    if bias_value is None:
        return np.zeros(channels)
    tensor = initializer_tensor(bias_value)
    if tensor is None:
        return None
    b = np.asarray(tensor.numpy(), dtype=np.float64)
    if node.op_type == "Gemm":
        b = b * node.attributes.get_float("beta", 1.0)
        if b.size == 1:
            b = np.broadcast_to(b.reshape(-1), (channels,))
    b = b.reshape(-1)
    return b if b.size == channels else None


class FoldBatchNormPass(NotingPass):
    """Fold inference BatchNormalization into a preceding Conv/ConvTranspose/Gemm (main graph)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        folded = 0
        graph = model.graph
        for bn in list(graph):
            if bn.op_type != "BatchNormalization" or bn.domain not in ONNX_DOMAINS:
                continue
            if self._fold(graph, bn):
                folded += 1
        if folded:
            self.note(f"{folded} BatchNormalization node(s) folded into Conv/Gemm weights")
        remaining = sum(1 for n in graph if n.op_type == "BatchNormalization")
        if remaining:
            self.note(f"{remaining} BatchNormalization node(s) could not be folded and stay in float")
        return ir.passes.PassResult(model, modified=bool(folded))

    @staticmethod
    def _fold(graph: ir.Graph, bn: ir.Node) -> bool:
        x = bn.inputs[0]
        node = x.producer() if x is not None else None
        if node is None or node.op_type not in _PRODUCERS or node.graph is not graph:
            return False
        if len(x.uses()) != 1 or x.is_graph_output() or len(node.outputs) != 1:  # case 4
            return False
        params = _bn_params(bn)
        weight = initializer_tensor(node.inputs[1]) if len(node.inputs) > 1 else None
        if params is None or weight is None:
            return False
        s, t = params
        w = np.asarray(weight.numpy())
        new_w = _scaled_weight(node, w.astype(np.float64), s)
        old_b = _old_bias(node, s.size)
        if new_w is None or old_b is None:
            return False
        new_b = old_b * s + t
        dtype = w.dtype
        w_value = add_initializer(graph, f"{node.inputs[1].name}_bnfold", new_w.astype(dtype))
        b_value = add_initializer(graph, f"{bn.outputs[0].name}_bias", new_b.astype(dtype))
        node.replace_input_with(1, w_value)
        if len(node.inputs) < 3:
            node.resize_inputs(3)
        node.replace_input_with(2, b_value)
        if node.op_type == "Gemm":
            node.attributes["alpha"] = ir.AttrFloat32("alpha", 1.0)
            node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        y = bn.outputs[0]
        name, was_output = y.name, y.is_graph_output()
        ir.convenience.replace_all_uses_with(y, x, replace_graph_outputs=True)
        graph.remove(bn, safe=True)
        if was_output:
            y.name = None
            x.name = name
        x.shape = x.shape or y.shape
        x.type = x.type or y.type
        logger.debug("folded %s into %s", bn.name, node.name)
        return True
