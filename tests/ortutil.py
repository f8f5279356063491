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


def int8_pays_timing(models, feed, **_):
    """A stand-in for ``edgeq.auto.latency.measure`` where int8 pays, deterministically: each
    float Conv/MatMul/Gemm costs 1 ms, an int8 one (weights from a DequantizeLinear) 0.4 ms, each
    DequantizeLinear 0.01 ms; the small MatMuls of per-token fronts and outlier corrections (depth 2
    + |O|) nothing. Tests check auto's fidelity and structure; its speed decisions on real timings
    are measured by bench/auto_vs_uniform.py, not by tests on a noisy machine."""
    import onnx

    from edgeq.passes.per_token import TERMS

    out = {}
    for name, data in models.items():
        proto = data.proto() if hasattr(data, "proto") else onnx.load_from_string(data)  # InMemoryModel or bytes
        dq = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        heavy = [n for n in proto.graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1
                 and not n.name.endswith((TERMS, "_outliers"))]
        integer = sum(n.op_type.startswith(("QLinear", "DynamicQuantize", "MatMulInteger", "ConvInteger"))
                      for n in proto.graph.node)
        out[name] = sum(0.4 if n.input[1] in dq else 1.0 for n in heavy) + 0.4 * integer + 0.01 * len(dq)
    return out


def int8_pays_unit_times(model, feed, provider="cpu", threads=1):
    """A stand-in for ``edgeq.auto.unit_time.unit_times`` beside ``int8_pays_timing``: each
    Conv/MatMul/Gemm/LSTM 1 ms per million weights (at least 0.01), deterministically (the
    profile it replaces is measured, and measured times may order two close layers either way)."""
    from edgeq.graph import all_nodes

    out = {}
    for node in all_nodes(model.graph):
        if node.op_type in ("Conv", "MatMul", "Gemm", "LSTM") and len(node.inputs) > 1 and node.inputs[1] is not None:
            weight = node.inputs[1].const_value
            out[node.name] = max(weight.size / 1e6 if weight is not None else 0.0, 0.01)
    return out


def cli_ok(argv, capsys) -> str:
    """Run ``edgeq ARGV`` in-process; assert exit code 0 (stderr in the message); return stdout."""
    import pytest

    from edgeq.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    return out.out


def first_output_stacked(path, feeds) -> np.ndarray:
    """The model's first output on each feed (CPU, 1 thread), concatenated along axis 0."""
    from edgeq.report.evaluate import cpu_session

    sess = cpu_session(str(path), 1)
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def weight_width(model) -> str:
    """How a model's u8s8 weights (int8 levels of non-depthwise Conv, MatMul and Gemm weights read
    through DequantizeLinear; an onnx_ir model) were made: "7 bits" (within +-63), "paired" (8
    bits, every same-sign pair along K within 128: passes/weights.py quantize_paired) or "8 bits"."""
    from edgeq.graph import all_nodes
    from edgeq.passes.quantize_weights import is_depthwise
    from edgeq.passes.weights import PAIR_LIMIT, k_major
    from edgeq.runtime.cpu import pairs_within

    top, paired = 0, True
    for node in all_nodes(model.graph):
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        dq = node.inputs[1].producer()
        if dq is None or dq.op_type != "DequantizeLinear" or dq.inputs[0].const_value is None:
            continue
        values = dq.inputs[0].const_value.numpy()
        if values.dtype != np.int8 or is_depthwise(node, values) or (node.op_type != "Conv" and values.ndim != 2):
            continue
        top = max(top, int(np.abs(values.astype(np.int16)).max()))
        trans_b = node.op_type == "Gemm" and bool(getattr(node.attributes.get("transB"), "value", 0))
        paired = paired and pairs_within(k_major(values, node.op_type, trans_b), PAIR_LIMIT)
    return "7 bits" if top <= 63 else "paired" if paired else "8 bits"
