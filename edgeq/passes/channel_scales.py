"""Per-channel output steps for an int8 Conv whose output only float ops read.

    DQ(x), DQ(w, s_w), DQ(b, s_b) -> Conv -> Q(s_y) -> DQ(s_y) -> HardSwish ...
==> DQ(x), DQ(w, s_w * k), DQ(b, s_b * k) -> Conv -> Q(s_y) -> DQ(s_y) -> Mul(1 / k) -> HardSwish ...

After BatchNorm folding, a Conv's output channels can span ranges 100x apart (PP-LCNet, PicoDet,
YOLO-style SiLU nets): one per-tensor output step then rounds the narrow channels to a few
levels, and every later layer reads them so. onnxruntime's QLinearConv takes one output scale,
but its requantization multiplier is per channel (``s_x * s_w[c] / s_y``). Scaling channel ``c``'s
weight scale (and its int32 bias's scale) by ``k[c]`` makes the Conv compute ``k[c]`` times the
channel: the int8 weights and int32 biases stay as they are, the narrow channels fill the output
range, and a float Mul by ``1 / k[c]`` right after the DequantizeLinear gives the float consumers
the same values with ``k[c]`` times finer steps. The graph means exactly what it meant (the
scaling is folded into the QDQ parameters: float semantics unchanged), onnxruntime still fuses
the Conv into QLinearConv, and the cost is one float Mul over the output.

1. Only where every reader of the output is a float op (hard-swish, SiLU's Sigmoid and Mul, a
   head's Transpose ...): an int8 reader would need one input scale. Not for a graph output, a
   Conv whose output shares its scale with other values, or int16 nodes.
2. ``k[c] = min(hi / max_c, lo / min_c) / HEADROOM``, clipped to ``[1, MAX_GAIN]``, from the
   calibrated per-channel extremes (``plan.channel_ranges``) and the output's quantized range
   ``[lo, hi]``: ``HEADROOM`` (2) leaves room for unseen data above a channel's calibrated
   maximum; a Conv where no channel gains ``MIN_GAIN`` (4x: 2 bits) is left as it was.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, const_array, remove_unused_initializers
from edgeq.passes.plan import QuantPlan, Role, node_label

__all__ = ["ChannelScalesPass", "channel_gains", "HEADROOM", "MAX_GAIN", "MIN_GAIN"]

logger = logging.getLogger(__name__)

HEADROOM = 2.0
MAX_GAIN = 64.0
MIN_GAIN = 4.0
_QRANGE = {"uint8": (0, 255), "int8": (-128, 127)}


def channel_gains(cmin: np.ndarray, cmax: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(2): the per-channel factor that brings each channel's range near ``[lo, hi]``."""
    mn, mx = np.minimum(cmin, 0.0), np.maximum(cmax, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(mx > 0, hi / np.where(mx > 0, mx, 1.0), np.inf)
        down = np.where(mn < 0, lo / np.where(mn < 0, mn, -1.0), np.inf)
    k = np.minimum(up, down) / HEADROOM
    k[~np.isfinite(k)] = 1.0  # a channel that is zero everywhere
    return np.clip(k, 1.0, MAX_GAIN).astype(np.float32)


class ChannelScalesPass(ir.passes.InPlacePass):
    def __init__(self, plan: QuantPlan) -> None:
        super().__init__()
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        plan = self.plan
        done: list[float] = []
        for node in list(model.graph):
            if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or plan.role(node) != Role.COMPUTE:
                continue
            gain = self._scale(model.graph, node)
            if gain:
                done.append(gain)
        if done:
            plan.notes.append(f"{len(done)} Conv output(s) read only by float ops quantized with per-channel steps "
                              f"(median largest gain {np.median(done):.0f}x): passes/channel_scales.py")
        logger.info("channel_scales: %d Conv outputs", len(done))
        return ir.passes.PassResult(model, modified=bool(done))

    def _scale(self, graph: ir.Graph, node: ir.Node) -> float | None:
        plan = self.plan
        y = node.outputs[0]
        if plan.is_int16(node) or plan.root(y) is not y or y not in plan.channel_ranges or y not in plan.qparams:
            return None
        qp = plan.qparams[y]
        if qp.dtype not in _QRANGE:
            return None
        uses = list(y.uses())
        if len(uses) != 1 or uses[0].node.op_type != "QuantizeLinear" or y.is_graph_output():
            return None
        dqs = [u.node for u in uses[0].node.outputs[0].uses()]
        if not dqs or uses[0].node.outputs[0].is_graph_output():
            return None
        for dq in dqs:  # (1) float readers only
            out = dq.outputs[0]
            if dq.op_type != "DequantizeLinear" or out.is_graph_output():
                return None
            if any(plan.is_int8(u.node) or u.node.op_type in ("QuantizeLinear", "DequantizeLinear") for u in out.uses()):
                return None
        cmin, cmax = plan.channel_ranges[y]
        qmin, qmax = _QRANGE[qp.dtype]
        lo, hi = (qmin - qp.zero_point) * qp.scale, (qmax - qp.zero_point) * qp.scale
        k = channel_gains(cmin, cmax, lo, hi)
        if float(k.max()) < MIN_GAIN:
            return None
        params = [self._scale_param(node, i, k) for i in (1, 2) if i < len(node.inputs) and node.inputs[i] is not None]
        if None in params:
            return None
        weight = node.inputs[1]
        rank = len(weight.shape) if weight.shape is not None else None
        if rank is None:
            return None
        for dq, scale in params:
            old = dq.inputs[1]
            dq.replace_input_with(1, add_initializer(graph, f"{old.name}_k", scale))
            remove_unused_initializers(graph, [old])  # sessions get initializers by reference
        inverse = (1.0 / k).astype(np.float32).reshape((-1,) + (1,) * (rank - 2))
        factor = add_initializer(graph, f"{y.name}_channel_steps", inverse)
        for dq in dqs:
            out = dq.outputs[0]
            mul = ir.node("Mul", [out, factor], name=f"{dq.name}_channels")
            scaled = mul.outputs[0]
            scaled.name, scaled.dtype, scaled.shape = f"{out.name}_channels", ir.DataType.FLOAT, out.shape
            for use in [u for u in out.uses() if u.node is not mul]:
                use.node.replace_input_with(use.idx, scaled)
            graph.insert_after(dq, mul)
        logger.debug("channel_scales: %s, gains up to %.1fx", node_label(node), float(k.max()))
        return float(k.max())

    def _scale_param(self, node: ir.Node, index: int, k: np.ndarray) -> tuple[ir.Node, np.ndarray] | None:
        """(the DequantizeLinear of input ``index``, its per-channel scale times ``k``), when that DQ
        has one scale per output channel and this Conv is its only reader."""
        dq = node.inputs[index].producer()
        if dq is None or dq.op_type != "DequantizeLinear" or len(list(node.inputs[index].uses())) != 1:
            return None
        scale = const_array(dq.inputs[1])
        if scale is None or scale.ndim != 1 or scale.shape[0] != k.shape[0]:
            return None
        axis = dq.attributes.get("axis")
        if (axis.value if axis is not None else 1) != 0:
            return None
        return dq, (scale.astype(np.float32) * k).astype(np.float32)
