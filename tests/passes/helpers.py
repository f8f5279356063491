"""Run the analysis + rewrite passes with ranges observed by plain onnxruntime (no calibrate)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.config import QuantConfig
from edgeq.graph import const_array, run_passes
from edgeq.passes.pipeline import analysis_passes, rewrite_passes
from edgeq.passes.plan import QuantPlan, qparams_from_range

__all__ = ["plan_for", "quantize_with_numpy_ranges", "ort_optimized_ops"]


def plan_for(proto: onnx.ModelProto, config: QuantConfig | None = None) -> tuple[ir.Model, QuantPlan]:
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    plan = QuantPlan()
    run_passes(model, analysis_passes(config or QuantConfig(), plan))
    return model, plan


def _observe(proto: onnx.ModelProto, names: list[str], feeds: list[dict]) -> dict[str, tuple[float, float]]:
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    have = {o.name for o in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)
    for feed in feeds:
        for n, v in zip(out_names, sess.run(None, feed)):
            if n in lo:
                lo[n], hi[n] = min(lo[n], float(v.min())), max(hi[n], float(v.max()))
    return {n: (lo[n], hi[n]) for n in names}


def quantize_with_numpy_ranges(proto, feeds, config: QuantConfig | None = None):
    config = config or QuantConfig()
    model, plan = plan_for(proto, config)
    roots = plan.roots()
    observed = _observe(proto, [v.name for v in roots if const_array(v) is None], feeds)
    for root in roots:
        array = const_array(root)
        lo, hi = (array.min(), array.max()) if array is not None else observed[root.name]
        plan.qparams[root] = qparams_from_range(lo, hi, config.activations, config.symmetric)
    run_passes(model, rewrite_passes(config, plan))
    return model, plan


def ort_optimized_ops(model: ir.Model | bytes | str, tmp_path) -> list[str]:
    """Op types after onnxruntime's graph optimizations (where QDQ fusion happens) of a model, its
    bytes or its file."""
    import os

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.log_severity_level = 3
    data = model if isinstance(model, bytes) else os.fspath(model) if isinstance(model, (str, os.PathLike)) \
        else ir.to_proto(model).SerializeToString()
    ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
