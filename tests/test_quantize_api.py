"""edgeq.quantize end to end: static and dynamic, ranges reuse, report content, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import edgeq
from edgeq.metrics import sqnr_db
from ortutil import op_types, run_ort
from passes.nets import conv_net, feeds, mlp_net


def _sqnr(proto, model, data):
    ref = np.concatenate([run_ort(proto, f)[0] for f in data])
    got = np.concatenate([run_ort(model, f)[0] for f in data])
    return sqnr_db(ref, got)


def test_static_quantize_from_path_with_report_and_eval(tmp_path):
    src = tmp_path / "net.onnx"
    onnx.save(conv_net(), src)
    data = feeds((1, 3, 16, 16), n=8)
    result = edgeq.quantize(str(src), edgeq.QuantConfig(), data=data, eval_data=feeds((1, 3, 16, 16), n=4, seed=7),
                            labels=[0, 1, 2, 3], progress=False)
    assert _sqnr(conv_net(), result.model, data) > 30.0
    report = result.report
    s = report["summary"]
    assert s["quantized"] == 9 and s["left_float"] == 0 and s["int8_kernels"] == 5
    assert s["size_after_bytes"] < 0.45 * s["size_before_bytes"]
    conv = next(e for e in report["quantized"] if e["op"] == "Conv")
    assert conv["weights"]["granularity"] == "per-channel:0" and "x" in conv["activations"]
    ev = report["evaluation"]
    assert ev["outputs"]["y"]["sqnr_db"] > 30 and ev["outputs"]["y"]["cosine"] > 0.999
    assert set(ev["latency_ms"]["1"]) == {"fp32", "int8"} and "accuracy" in ev
    # per-layer error: every calibrated activation, error accumulating along the net
    assert {"r1", "p1", "r2", "a"} <= set(ev["layers"]) and ev["layers"]["r1"]["sqnr_db"] > 30
    assert result.ranges is not None and "x" in result.ranges

    out, rep = tmp_path / "out.onnx", tmp_path / "rep.json"
    result.save(out, report=rep)
    assert json.loads(rep.read_text())["format"] == "edgeq-quantize-report"
    assert (tmp_path / "rep.md").read_text().startswith("# edgeq quantize report")
    assert op_types(onnx.load(out)).count("QuantizeLinear") >= 5
    with pytest.raises(edgeq.UsageError, match="same file"):
        result.save(src)


def test_ranges_reuse_gives_the_same_model(tmp_path):
    data = feeds((1, 3, 16, 16), n=4)
    first = edgeq.quantize(conv_net(), edgeq.QuantConfig(), data=data, progress=False)
    path = first.ranges.save(tmp_path / "ranges.json")
    second = edgeq.quantize(conv_net(), ranges=path, progress=False)
    a = run_ort(first.model, data[0])[0]
    b = run_ort(second.model, data[0])[0]
    np.testing.assert_array_equal(a, b)


def test_no_config_means_auto_with_data_static_with_ranges(tmp_path):
    """edgeq.quantize(model, data=...) does what `edgeq quantize --calib` does: auto mode, whose
    answer meets 30 dB on every output (int8 where it pays, else the fp32 model)."""
    data = feeds((1, 3, 16, 16), n=4)
    result = edgeq.quantize(conv_net(), data=data, progress=False)
    assert result.report["config"]["mode"] == "auto" and result.report["auto"]["target"]["min_sqnr"] == 30.0
    assert _sqnr(conv_net(), result.model, feeds((1, 3, 16, 16), n=2, seed=5)) >= 30.0
    path = result.ranges.save(tmp_path / "ranges.json")
    reused = edgeq.quantize(conv_net(), ranges=path, progress=False)
    assert reused.report["config"]["mode"] == "static" and reused.report["summary"]["left_float"] == 0


def test_static_without_data_is_a_usage_error():
    with pytest.raises(edgeq.UsageError, match="--calib"):
        edgeq.quantize(conv_net())


def test_float_nodes_carry_reasons():
    result = edgeq.quantize(conv_net(), edgeq.QuantConfig(exclude=("Add",)), feeds((1, 3, 16, 16), n=2),
                            progress=False)
    add = next(e for e in result.report["float"] if e["op"] == "Add")
    assert "--exclude" in add["reason"]


def test_dynamic_mlp_uses_dynamic_kernels_and_keeps_fidelity():
    proto, data = mlp_net(), feeds((4, 32), n=4)
    result = edgeq.quantize(proto, edgeq.QuantConfig(mode="dynamic"), progress=False)
    # MatMul + Add(bias) fold into one kernel; Gemm's C becomes its bias
    assert op_types(result.model) == ["DynamicQuantizeMatMul", "Relu", "DynamicQuantizeMatMul"]
    assert _sqnr(proto, result.model, data) > 30.0
    assert result.ranges is None


def test_caller_model_is_not_modified():
    import onnx_ir as ir

    model = ir.from_proto(conv_net())
    before = op_types(model)
    edgeq.quantize(model, data=feeds((1, 3, 16, 16), n=2), progress=False)
    assert op_types(model) == before


def _export_zoo(name: str, path) -> None:
    try:
        from edgeq.exporter import export
    except ImportError:
        export = None
    if export is not None:
        export(name, str(path))
        return
    import torch

    from edgeq import zoo

    spec = zoo.get(name)
    torch.onnx.export(spec.build(), spec.example_inputs(), str(path), input_names=list(spec.input_names),
                      output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes,
                      opset_version=17, dynamo=False)


@pytest.mark.parametrize("name", ["digits_mobilenet", "digits_resnet"])
def test_digits_models_keep_top1_and_fuse(name, tmp_path):
    from collections import Counter

    from edgeq import zoo
    from passes.helpers import ort_optimized_ops

    spec = zoo.get(name)
    fp32 = tmp_path / f"{name}.onnx"
    _export_zoo(name, fp32)
    result = edgeq.quantize(fp32, edgeq.QuantConfig(), data=spec.calibration_data(32), eval_data=spec.eval_data(200),
                            labels=spec.eval_labels(200), progress=False)
    acc = result.report["evaluation"]["accuracy"]
    assert acc["int8"] >= acc["fp32"] - 0.005, acc
    assert result.report["summary"]["left_float"] == 0
    ops = Counter(ort_optimized_ops(result.model, tmp_path))
    assert ops["QLinearConv"] >= 9 and ops["QGemm"] == 1
    assert not {"Conv", "Gemm", "DequantizeLinear"} & set(ops), ops  # everything runs int8


def test_qoperator_format_rewrites_the_qdq_model():
    data = feeds((1, 3, 16, 16), n=4)
    result = edgeq.quantize(conv_net(), edgeq.QuantConfig(format="qoperator"), data, progress=False)
    ops = op_types(result.model)
    assert "QLinearConv" in ops and "DequantizeLinear" not in ops and "Conv" not in ops
    assert result.report["qoperator"]["format"] == "qoperator"
    assert _sqnr(conv_net(), result.model, data) > 30.0


def test_unsupported_options_fail_clearly():
    with pytest.raises(edgeq.UsageError, match="static"):
        edgeq.quantize(conv_net(), edgeq.QuantConfig(mode="dynamic", format="qoperator"))
    with pytest.raises(edgeq.UsageError, match="int4 and per-block weights are weight-only or static"):
        edgeq.quantize(conv_net(), edgeq.QuantConfig(mode="dynamic", weights="int4"), feeds((1, 3, 16, 16), n=1))


QKV = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,8,64] x) => (float[2,8,32] y) {
  q = MatMul(x, WQ)
  k = MatMul(x, WK)
  y = Add(q, k)
}"""


def test_dynamic_matmuls_sharing_an_input_quantize_it_once(rng):
    from passes.nets import build

    proto = build(QKV, {"WQ": rng.normal(0, 0.2, (64, 32)), "WK": rng.normal(0, 0.2, (64, 32))})
    data = [{"x": rng.normal(0, 1, (2, 8, 64)).astype(np.float32)} for _ in range(3)]
    result = edgeq.quantize(proto, edgeq.QuantConfig(mode="dynamic"), progress=False)
    assert op_types(result.model) == ["DynamicQuantizeLinear", "MatMulIntegerToFloat", "MatMulIntegerToFloat", "Add"]
    assert _sqnr(proto, result.model, data) > 30.0


def test_dynamic_conv_only_when_asked():
    data = feeds((1, 3, 16, 16), n=2)
    result = edgeq.quantize(conv_net(), edgeq.QuantConfig(mode="dynamic", dynamic_conv=True), progress=False)
    ops = op_types(result.model)
    assert ops.count("ConvInteger") == 2 and ops.count("DynamicQuantizeLinear") == 2 and "Conv" not in ops
    assert _sqnr(conv_net(), result.model, data) > 30.0


def test_top1_agreement_only_for_class_outputs():
    """A (batch, classes) output gets top-1 agreement; a map or hidden states do not (argmax
    across image columns or hidden units means nothing)."""
    from edgeq.report.evaluate import evaluate

    def net(shift: float) -> bytes:
        text = f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 10] x, float[2, 1, 8, 8] m) => (float[2, 10] logits, float[2, 1, 8, 8] text_map) {{
            s = Constant <value = float {{{shift}}}> ()
            logits = Add(x, s)
            text_map = Add(m, s)
        }}"""
        return onnx.parser.parse_model(text).SerializeToString()

    rng = np.random.default_rng(0)
    feeds_ = [{"x": rng.normal(size=(2, 10)).astype(np.float32), "m": rng.random((2, 1, 8, 8)).astype(np.float32)}
              for _ in range(3)]
    out = evaluate(net(0.0), net(0.01), feeds_, latency=False)["outputs"]
    assert out["logits"]["top1_agreement"] == 1.0 and out["logits"]["sqnr_db"] > 30
    assert "top1_agreement" not in out["text_map"] and out["text_map"]["sqnr_db"] > 20
