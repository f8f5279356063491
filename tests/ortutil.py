"""The one shared helper tests use to run models on onnxruntime and compare numerics."""

from __future__ import annotations

import numpy as np


def run_ort(model, feeds: dict[str, np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Run an onnx.ModelProto, onnx_ir.Model, bytes or path on the CPU provider."""
    import onnxruntime as ort

    if not isinstance(model, (str, bytes)):
        import onnx_ir as ir

        if isinstance(model, ir.Model):
            model = ir.to_proto(model)
        model = model.SerializeToString()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def op_types(model) -> list[str]:
    """Op types of the main graph in order (onnx.ModelProto or onnx_ir.Model)."""
    import onnx_ir as ir

    if isinstance(model, ir.Model):
        return [n.op_type for n in model.graph]
    return [n.op_type for n in model.graph.node]
