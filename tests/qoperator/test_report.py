"""What the rewrite reports: reasons for nodes left in float, float islands, strict mode,
and the per-layer fixed-point parameters."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.config import QuantConfig
from edgeq.errors import UnsupportedError
from ortutil import run_ort

from .harness import check_all, rewrite_text

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'

# Softmax between two convolutions: DQ -> Softmax -> Q is a float island.
ISLAND = HEAD + (
    "net (float[1,3,8,8] x, float[4,3,1,1] w1, float[4,4,1,1] w2) => (float[1,4,8,8] y) {"
    " a = Conv (x, w1)  s = Softmax <axis=1> (a)  y = Conv (s, w2) }"
)


def test_island_is_reported_with_reason(rng):
    r = rewrite_text(ISLAND, rng, {"x": (1, 3, 8, 8)})
    assert r.ops == ["QuantizeLinear", "QLinearConv", "DequantizeLinear", "Softmax",
                     "QuantizeLinear", "QLinearConv", "DequantizeLinear"]
    (island,) = r.section["float_islands"]
    assert island["op_type"] == "Softmax"
    assert "no integer rule for ai.onnx.Softmax" in island["reasons"][0]
    # the model still runs on ORT and matches the QDQ model; the reference refuses it
    check_all(r, reference=False)
    from edgeq.reference import run

    with pytest.raises(UnsupportedError, match="float island"):
        run(r.model, r.feeds)


def test_strict_raises_naming_the_island(rng):
    config = QuantConfig(format="qoperator", integer_only=True, strict=True)
    with pytest.raises(UnsupportedError, match=r"Softmax '[^']+'.*no integer rule"):
        rewrite_text(ISLAND, rng, {"x": (1, 3, 8, 8)}, config=config)


def test_reasons_when_rules_do_not_match(rng):
    # y is read twice (Add and graph output) and the Add has a float constant input
    text = HEAD + (
        "net (float[1,3,6,6] x, float[4,3,3,3] w1) => (float[1,4,4,4] y, float[1,4,4,4] z) {"
        " y = Conv (x, w1)  z = Add (y, y) }"
    )
    r = rewrite_text(text, rng, {"x": (1, 3, 6, 6)}, quantize_outputs=False, skip=("y",))
    # Conv: QLinearConv does not apply (float graph output), the ConvInteger fallback does
    (conv,) = r.section["rewritten"]
    assert conv["new_op"] == "ConvInteger"
    assert conv["not_matched"] == ["QLinearConv: output 'y' is a graph output, not quantized"]
    (add,) = r.section["not_rewritten"]
    assert add["op_type"] == "Add"
    assert "QLinearAdd: input 0: input 'y' is dequantized from INT32" in add["reasons"][0]
    assert r.ops == ["QuantizeLinear", "ConvInteger", "DequantizeLinear", "Add"]
    check_all(r, reference=False)


def test_unfoldable_relu_is_explained(rng):
    # Conv -> Relu -> Q whose range starts below 0: the Relu cannot be folded into QLinearConv
    import onnx
    import onnx_ir as ir

    from edgeq.stages.integer_only import integer_only

    from .qdq import quantize_qdq, with_weights

    text = HEAD + (
        "net (float[1,3,6,6] x, float[4,3,3,3] w1) => (float[1,4,4,4] y) {"
        " c = Conv (x, w1)  y = Relu (c) }"
    )
    feeds = {"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)}
    qdq = quantize_qdq(with_weights(text, rng), feeds)
    relu = next(n for n in qdq.graph.node if n.op_type == "Relu")
    relu_q = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == relu.output[0])
    zp = next(t for t in qdq.graph.initializer if t.name == relu_q.input[2])
    zp.CopyFrom(onnx.numpy_helper.from_array(np.array(10, np.uint8), zp.name))
    model = ir.from_proto(qdq)
    section = integer_only(model, QuantConfig(format="qoperator"))
    (conv,) = section["rewritten"]  # the ConvInteger fallback, with why not QLinearConv
    assert conv["new_op"] == "ConvInteger"
    assert "Relu" in conv["not_matched"][0] and "does not start at 0" in conv["not_matched"][0]
    (island,) = section["float_islands"]  # the Relu now runs in float between DQ and Q
    assert island["op_type"] == "Relu"
    out = run_ort(ir.to_proto(model), feeds)[0]
    ref = run_ort(qdq, feeds)[0]
    assert np.abs(out - ref).max() <= float(onnx.numpy_helper.to_array(
        next(t for t in qdq.graph.initializer if t.name == relu_q.input[1]))) * 1.01


def test_layer_parameters_are_ready_for_codegen(rng):
    text = HEAD + (
        "net (float[1,3,6,6] x, float[4,3,3,3] w1, float[4] b1, float[5,64] w2) => (float[1,5] y) {"
        " c = Conv (x, w1, b1)  r = Relu (c)  f = Flatten (r)  y = Gemm <transB=1> (f, w2) }"
    )
    r = rewrite_text(text, rng, {"x": (1, 3, 6, 6)})
    layers = {layer["op_type"]: layer for layer in r.section["layers"]}
    conv = layers["QLinearConv"]
    assert len(conv["multiplier"]) == 4 and len(conv["shift"]) == 4  # per channel
    for m, s, real in zip(conv["multiplier"], conv["shift"], conv["real"]):
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2**-30
    assert isinstance(layers["QGemm"]["multiplier"], list)  # per-column weight scales
    import json

    assert json.loads(json.dumps(r.section)) == r.section  # JSON-ready
    check_all(r)


def test_hand_written_qdq_without_zero_points(rng):
    """DequantizeLinear/QuantizeLinear with the zero point left out (uint8 0 by ONNX rules)."""
    import onnx
    import onnx_ir as ir

    from edgeq.reference import run
    from edgeq.stages.integer_only import integer_only

    text = HEAD + """
net (float[1,2,6,6] x) => (float[1,3,3,3] y) {
  s = Constant <value=float {0.05}> ()  so = Constant <value=float {0.02}> ()
  ws = Constant <value=float[3] {0.01, 0.02, 0.03}> ()
  wz = Constant <value=int8[3] {0, 0, 0}> ()
  w = Constant <value=int8[3,2,1,1] {3, -5, 7, 100, -128, 9}> ()
  q = QuantizeLinear (x, s)  d = DequantizeLinear (q, s)
  m = MaxPool <kernel_shape=[2,2], strides=[2,2]> (d)
  q2 = QuantizeLinear (m, s)  d2 = DequantizeLinear (q2, s)
  wd = DequantizeLinear <axis=0> (w, ws, wz)
  c = Conv (d2, wd)  r = Relu (c)
  q3 = QuantizeLinear (r, so)  y = DequantizeLinear (q3, so)
}"""
    proto = onnx.parser.parse_model(text)
    feeds = {"x": np.abs(rng.standard_normal((1, 2, 6, 6))).astype(np.float32) * 4}
    model = ir.from_proto(proto)
    section = integer_only(model, QuantConfig(format="qoperator", integer_only=True, strict=True))
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    assert [n.op_type for n in out.graph.node if n.op_type != "Constant"] == [
        "QuantizeLinear", "MaxPool", "QLinearConv", "DequantizeLinear"]
    assert section["float_islands"] == []
    want = run_ort(proto, feeds)[0]
    got = run_ort(out, feeds)[0]
    assert np.abs(got - want).max() <= 0.02 * 1.01
    assert np.abs(run(out, feeds)["y"] - got).max() <= 0.02 * 1.01


def test_layers_are_listed_around_an_island(rng):
    r = rewrite_text(ISLAND, rng, {"x": (1, 3, 8, 8)})
    assert [layer["op_type"] for layer in r.section["layers"]] == ["QLinearConv", "QLinearConv"]
