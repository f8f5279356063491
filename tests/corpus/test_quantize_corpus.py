"""Every corpus graph through edgeq.quantize, static and dynamic: valid, loads, SQNR >= 25 dB on
held-out feeds, and the report says what stayed float and why."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import edgeq
from corpus.builders import CORPUS
from edgeq.metrics import sqnr_db
from ortutil import run_ort

MIN_SQNR_DB = 25.0
# yolo_style has Conv only: dynamic mode leaves Conv in float on the CPU provider by design
# (dynamic Conv is slower than float), so its dynamic result is the fp32 graph.
# lstm_model's only Gemm has 16 multiply-adds per output between float ops (its LSTM, hidden 16, is
# too small for DynamicQuantizeLSTM to pay): the Q/DQ it would need costs more than int8 saves, so
# static mode keeps it float.
NOTHING_TO_QUANTIZE = {("yolo_style", "dynamic"), ("lstm_model", "static")}
# static mode runs weighted MatMuls between float ops (attention projections, a MatMul head
# after a Loop) as dynamic int8 kernels rather than wrapping them in Q/DQ
DYNAMIC_KERNELS = {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear", "MatMulIntegerToFloat"}
# node op types each model must report as float, with a word of the reason
STAYS_FLOAT = {
    ("if_loop", "static"): {"If": "control flow", "Loop": "control flow"},
    ("transformer_layer", "static"): {"LayerNormalization": "no int8 kernel"},
    ("yolo_style", "dynamic"): {"Conv": "dynamic Conv"},
    ("lstm_model", "static"): {"LSTM": "hidden_size 16 (< 64)", "Gemm": "multiply-adds per output"},
}


@pytest.fixture(scope="module", params=sorted(CORPUS))
def corpus_model(request):
    model, feeds_fn = CORPUS[request.param]()
    return request.param, model, feeds_fn(8, 0), feeds_fn(4, 100)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_quantize_corpus_model(corpus_model, mode):
    name, original, calib, held_out = corpus_model
    result = edgeq.quantize(original, edgeq.QuantConfig(mode=mode), calib if mode == "static" else None, progress=False)

    quantized = ir.to_proto(result.model)
    onnx.checker.check_model(quantized, full_check=True)
    ops = {n.op_type for n in quantized.graph.node}
    if (name, mode) in NOTHING_TO_QUANTIZE:
        assert not result.report["quantized"]
    elif mode == "static":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops or ops & DYNAMIC_KERNELS, f"{name}: nothing quantized"
        assert result.report["quantized"]
    else:
        assert ops & DYNAMIC_KERNELS, f"{name}: nothing quantized"
    for feed in held_out:
        for i, (want, got) in enumerate(zip(run_ort(original, feed), run_ort(quantized, feed))):
            assert got.shape == want.shape
            sqnr = sqnr_db(want, got)
            assert sqnr >= MIN_SQNR_DB, f"{name} {mode} output {i}: SQNR {sqnr:.1f} dB"
    left = result.report["float"]
    assert all(entry["node"] and entry["op"] and entry["reason"] for entry in left)
    for op, why in STAYS_FLOAT.get((name, mode), {}).items():
        reasons = [e["reason"] for e in left if e["op"] == op]
        assert reasons and all(why in r for r in reasons), f"{name} {mode}: {op} float reasons {reasons}"


def test_quantize_paddle_style_quantizes_constant_node_weights():
    """The case onnxruntime.quantization leaves in float: every Conv weight came from a Constant."""
    original, feeds_fn = CORPUS["paddle_style"]()
    result = edgeq.quantize(original, edgeq.QuantConfig(), feeds_fn(8, 0), progress=False)
    convs = [q for q in result.report["quantized"] if q["op"] == "Conv"]
    assert len(convs) == 3 and all("weights" in q for q in convs)
    assert result.model.opset_imports[""] >= 13
    model = ir.to_proto(result.model)
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 3
    assert not any(n.op_type == "Constant" for n in model.graph.node)
    assert np.isfinite(sqnr_db(*[run_ort(m, feeds_fn(1, 7)[0])[0] for m in (original, model)]))


def test_quantize_if_loop_inside_its_bodies():
    """select.py (11): the Loop body's 256x256 MatMul (+ folded Relu) is int8 with its weight in
    the body; the If branches' Convs (4 -> 4 channels, 36 multiply-adds per output, between float
    ops) stay float by rule 6, as they would in the main graph."""
    original, feeds_fn = CORPUS["if_loop"]()
    result = edgeq.quantize(original, edgeq.QuantConfig(), feeds_fn(8, 0), progress=False)
    body = next(g for g in result.model.graph.subgraphs() if g.name == "body")
    matmul = next(n for n in body if n.op_type == "MatMul")
    assert matmul.inputs[1].producer().op_type == "DequantizeLinear"
    assert matmul.inputs[0].producer().op_type == "DequantizeLinear"  # s_in's pair at the body's top
    assert "loop.weight_q" in body.initializers
    roles = {(e["op"], e["role"]) for e in result.report["quantized"]}  # the head MatMul: dynamic (rule 5)
    assert roles == {("MatMul", "compute"), ("Relu", "folded"), ("MatMul", "dynamic")}
    convs = [e["reason"] for e in result.report["float"] if e["op"] == "Conv"]
    assert len(convs) == 2 and all("multiply-adds per output" in r for r in convs)
