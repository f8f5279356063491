"""Why a node stays float whatever its neighbours: op types without an int8 kernel worth using
(``FLOAT_REASONS``) and shape rules (``pooled_conv``: select.py rule 9). Used by select.py."""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["FLOAT_REASONS", "pooled_conv"]

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
