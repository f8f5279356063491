"""Weights as rows of output channels, for codebooks (``codebook_weights.py``, ``integer_codebooks.py``).

    Conv W [O, C, kh, kw] -> rows [O, C*kh*kw];  MatMul B [K, N] -> rows [N, K] (transposed);
    Gemm B [N, K] (transB) -> rows [N, K];  Gather table [V, D] -> rows [V, D]

1. ``layout(node, value)``: None where ``node`` does not read ``value`` as a weight, else whether
   the rows are the weight transposed (a MatMul's B, and a Gemm's without transB, grouped along N).
2. ``channels_a_group``: runs of g output channels share a codebook, g the smallest divisor of the
   channel count giving at least ``MIN_GROUP`` x 2^N weights a group, so that a codebook (2^N
   entries) costs at most 1/4 bit a weight (fp16 entries) or 1/8 (int8 entries).
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.passes.plan import attr_value

__all__ = ["layout", "channels_a_group", "MIN_GROUP"]

MIN_GROUP = 64  # (2) weights a group per codebook entry


def layout(node: ir.Node, value: ir.Value) -> bool | None:
    """(1)"""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Conv" and len(node.inputs) > 1 and node.inputs[1] is value:
        return False
    if node.op_type in ("MatMul", "Gemm") and len(node.inputs) > 1 and node.inputs[1] is value:
        if node.inputs[0] is value:
            return None
        if node.op_type == "Gemm":
            return not attr_value(node, "transB", 0)
        return True
    if node.op_type == "Gather" and node.inputs[0] is value and attr_value(node, "axis", 0) == 0:
        return False
    return None


def channels_a_group(channels: int, per_channel: int, bits: int) -> int:
    """(2)"""
    want = MIN_GROUP << bits
    return next(g for g in range(1, channels + 1) if channels % g == 0 and (g * per_channel >= want or g == channels))
