"""Why a node stays float whatever its neighbours: op types without an int8 kernel worth using
(``FLOAT_REASONS``), shape rules (``pooled_conv``: select.py rule 9) and outputs a Log reads
(``feeds_log``: select.py rule 13). Used by select.py."""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["FLOAT_REASONS", "pooled_conv", "feeds_log"]

# ops between a Conv/MatMul and a Log that keep values near zero near zero (|x| + eps, x * x ...)
_TO_LOG = frozenset({"Abs", "Add", "Mul", "Max", "Clip", "Relu", "Pow", "Reshape", "Transpose", "Squeeze",
                     "Unsqueeze", "Identity", "ReduceSum", "ReduceMean"})
_LOG_DEPTH = 4

FLOAT_REASONS = {
    "Softmax": "Softmax stays float in static mode (int8 Softmax loses accuracy)",
    "LayerNormalization": "LayerNormalization has no int8 kernel in onnxruntime (CPU)",
    "Gelu": "Gelu has no fused int8 kernel in onnxruntime (CPU)",
    "Erf": "Erf has no int8 kernel in onnxruntime (CPU)",
    "ConvTranspose": "ConvTranspose has no fused int8 kernel in onnxruntime (CPU)",
    "BatchNormalization": "BatchNormalization was not folded (no int8 kernel)",
    "Div": "Div has no int8 kernel in onnxruntime (CPU)",
    "Sub": "Sub has no int8 kernel in onnxruntime (CPU)",
    "Pow": "Pow has no int8 kernel in onnxruntime (CPU)",
    "Sqrt": "Sqrt has no int8 kernel in onnxruntime (CPU)",
    "ReduceMean": "ReduceMean has no int8 kernel in onnxruntime (CPU)",
    "Tanh": "Tanh has no int8 kernel in onnxruntime (CPU)",
    "HardSigmoid": "HardSigmoid has no int8 kernel in onnxruntime (CPU)",
    "HardSwish": "HardSwish has no int8 kernel in onnxruntime (CPU)",
}


def pooled_conv(node: ir.Node) -> str | None:
    """(9) A Conv on a 1x1 map (squeeze-excite, a pooled head) stays float: its input holds one
    value per channel per image, so a few calibration images set its ranges poorly (held-out
    images clip), and int8 saves nothing on what is a matrix-vector product."""
    shape = node.inputs[0].shape
    if shape is None or len(shape) < 3:
        return None
    spatial = list(shape)[2:]
    if all(isinstance(d, int) and d == 1 for d in spatial):
        return ("Conv on a 1x1 map (squeeze-excite or pooled head): one value per channel per image makes "
                "its calibrated ranges unreliable, and int8 saves nothing on a matrix-vector product")
    return None


def feeds_log(node: ir.Node) -> str | None:
    """(13) A Conv/MatMul/Gemm whose output reaches a Log within a few value-keeping ops (a
    filterbank's log magnitude: Conv -> Abs -> Add(eps) -> Log) stays float: int8 rounds its many
    near-zero outputs to 0, and the log turns that into errors of several units (the zoo voice
    detector, static int8: 16.6 / 13.2 dB SQNR at 8 / 16 kHz with its filterbank Conv int8, 32.5 /
    49.0 dB with it float)."""
    frontier, depth = [node.outputs[0]], 0
    while frontier and depth < _LOG_DEPTH:
        consumers = [c for value in frontier for c in value.consumers()]
        if any(c.op_type == "Log" for c in consumers):
            return ("its output feeds a Log (log magnitude): int8 would round its near-zero values to 0, "
                    "which the log turns into large errors")
        frontier = [out for c in consumers if c.op_type in _TO_LOG for out in c.outputs]
        depth += 1
    return None
