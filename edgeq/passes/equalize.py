"""Cross-layer equalization (Nagel et al. 2019) for depthwise networks: exact in float.

    Conv1(x, W1, b1) -> [Relu] -> Conv2(., W2)   ==>   Conv1(x, W1/s, b1/s) -> [Relu] -> Conv2(., W2*s)

with one positive factor per channel between them, ``s_i = sqrt(r1_i / r2_i)``, where ``r1_i`` is
the range (max |w|) of W1's output channel i and ``r2_i`` that of W2's input channel i; both
ranges become ``sqrt(r1_i * r2_i)``, so per-tensor and per-channel int8 grids fit the weights
alike. Depthwise convs (one output channel per group), whose channels vary widely, gain most.

Cases:
1. Relu (or nothing) between the convs: Relu(y / s) == Relu(y) / s for s > 0, so the float
   model computes exactly the same (zero padding commutes with the scaling too).
2. Clip(0, c) (ReLU6) between them does not commute with the scaling. It is equalized only when
   ``clip_as_relu`` names its input (calibration showed it never reaches ``c``); the Clip then
   becomes Relu, which is exact on the data seen, and the reason goes into ``self.notes``.
3. Conv1 is a plain (group 1) or depthwise conv; Conv2 a plain conv (input channel axis 1) or a
   depthwise conv (its channel i is its output channel i). Other grouped convs are skipped.
4. Nothing changes when a weight is not a constant, an intermediate value has another use or is
   a graph output. A weight shared with another node is copied, not overwritten.
5. Chains (conv -> dw -> pw) are swept ``iterations`` times so that shared middles converge.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from edgeq.graph import ONNX_DOMAINS, add_initializer, initializer_array, initializer_tensor

__all__ = ["EqualizeCrossLayerPass", "replace_constant", "conv_groups"]

logger = logging.getLogger(__name__)


def replace_constant(node: ir.Node, index: int, array: np.ndarray) -> None:
    """Give ``node`` input ``index`` the constant ``array`` (in place when only it reads it)."""
    value = node.inputs[index] if index < len(node.inputs) else None  # e.g. a Conv without bias
    graph = node.graph
    array = np.ascontiguousarray(array, dtype=np.float32)
    if initializer_tensor(value) is not None and len(value.uses()) == 1 and not value.is_graph_output():
        value.const_value = ir.tensor(array, name=value.name)
        return
    base = (value.name if value is not None and value.name else f"{node.name}_in{index}") + "_eq"
    new = add_initializer(graph, base, array)
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, new)


def conv_groups(node: ir.Node) -> int:
    attr = node.attributes.get("group")
    return int(attr.value) if attr is not None else 1


def _single_consumer(value: ir.Value) -> ir.Node | None:
    uses = value.uses()
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


class EqualizeCrossLayerPass(ir.passes.InPlacePass):
    """Scale channels between consecutive convs so their weight ranges match (see module doc)."""

    def __init__(self, iterations: int = 4, clip_as_relu: Iterable[str] = ()) -> None:
        super().__init__()
        self.iterations = iterations
        self.clip_as_relu = frozenset(clip_as_relu)
        self.notes: list[str] = []

    def pairs(self, graph: ir.Graph) -> list[tuple[ir.Node, ir.Node | None, ir.Node]]:
        out = []
        for conv1 in graph:
            if conv1.op_type != "Conv" or conv1.domain not in ONNX_DOMAINS or initializer_array(conv1.inputs[1]) is None:
                continue
            w1 = initializer_array(conv1.inputs[1])
            if conv_groups(conv1) not in (1, w1.shape[0]) or (conv_groups(conv1) != 1 and w1.shape[1] != 1):
                continue  # case 3
            act = _single_consumer(conv1.outputs[0])
            if act is None:
                continue
            conv2 = act
            if act.op_type in ("Relu", "Clip"):
                if act.op_type == "Clip" and not self._clip_ok(act):
                    continue
                conv2 = _single_consumer(act.outputs[0])
                if conv2 is None:
                    continue
            else:
                act = None
            if conv2.op_type != "Conv" or conv2.inputs[0] is not (act or conv1).outputs[0] or initializer_array(conv2.inputs[1]) is None:
                continue
            w2 = initializer_array(conv2.inputs[1])
            g2 = conv_groups(conv2)
            c = w1.shape[0]
            if g2 == 1 and w2.shape[1] == c or g2 == c and w2.shape[0] == c and w2.shape[1] == 1:
                out.append((conv1, act, conv2))
        return out

    def _clip_ok(self, clip: ir.Node) -> bool:
        lo = initializer_array(clip.inputs[1]) if len(clip.inputs) > 1 else None
        return lo is not None and float(lo) == 0.0 and clip.inputs[0].name in self.clip_as_relu

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        pairs = self.pairs(graph)
        for _, act, _ in pairs:
            if act is not None and act.op_type == "Clip":  # case 2
                self.notes.append(f"{act.name}: Clip never reached its max on the calibration data; "
                                  "replaced by Relu so that equalization stays exact")
                relu = ir.node("Relu", [act.inputs[0]], name=act.name)
                relu.outputs[0].name = act.outputs[0].name
                relu.outputs[0].shape, relu.outputs[0].type = act.outputs[0].shape, act.outputs[0].type
                graph.insert_after(act, relu)
                act.outputs[0].replace_all_uses_with(relu.outputs[0])
                graph.remove(act, safe=True)
        pairs = [(c1, c2) for c1, _, c2 in self.pairs(graph)]
        for _ in range(self.iterations):
            for conv1, conv2 in pairs:
                self._equalize(conv1, conv2)
        logger.info("cross-layer equalization: %d conv pairs", len(pairs))
        return ir.passes.PassResult(model, modified=bool(pairs))

    @staticmethod
    def _equalize(conv1: ir.Node, conv2: ir.Node) -> None:
        w1 = initializer_array(conv1.inputs[1]).astype(np.float64)
        w2 = initializer_array(conv2.inputs[1]).astype(np.float64)
        depthwise2 = conv_groups(conv2) != 1
        r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
        w2c = w2 if depthwise2 else np.swapaxes(w2, 0, 1)  # channel i first
        r2 = np.abs(w2c).reshape(w2c.shape[0], -1).max(axis=1)
        s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
        shape1 = [-1] + [1] * (w1.ndim - 1)
        replace_constant(conv1, 1, w1 / s.reshape(shape1))
        b1 = initializer_array(conv1.inputs[2]) if len(conv1.inputs) > 2 else None
        if b1 is not None:
            replace_constant(conv1, 2, b1 / s)
        shape2 = shape1 if depthwise2 else [1, -1] + [1] * (w2.ndim - 2)
        replace_constant(conv2, 1, w2 * s.reshape(shape2))
