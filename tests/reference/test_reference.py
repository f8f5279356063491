"""The integer reference against onnxruntime's integer kernels, op by op and end to end."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgeq.errors import InputError, UnsupportedError
from edgeq.reference import export_params, run
from ortutil import run_ort
from qoperator.harness import assert_within_lsb, output_scales, per_op_agreement, rewrite_text

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'

# Conv-BN-ReLU stack with per-channel weights (BN folded below), a residual Add,
# GlobalAveragePool and a Gemm head.
CONV_NET = HEAD + """
net (float[4,3,32,32] x, float[16,3,3,3] w1, float[16] b1, float[16,16,3,3] w2, float[16] b2,
     float[16,1,3,3] w3, float[32,16,1,1] w4, float[32] b4, float[10,32] w5, float[10] b5)
    => (float[4,10] y) {
  c1 = Conv <pads=[1,1,1,1], strides=[2,2]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  r2 = Relu (c2)
  s = Add (r1, r2)
  c3 = Conv <pads=[1,1,1,1], group=16> (s, w3)
  r3 = Relu (c3)
  m = MaxPool <kernel_shape=[2,2], strides=[2,2]> (r3)
  c4 = Conv (m, w4, b4)
  r4 = Relu (c4)
  g = GlobalAveragePool (r4)
  f = Flatten (g)
  y = Gemm <transB=1> (f, w5, b5)
}
"""

MATMUL_NET = HEAD + """
net (float[2,16,32] x, float[32,64] w1, float[64,32] w2, float[32,8] w3) => (float[2,16,8] y) {
  h = MatMul (x, w1)
  r = Relu (h)
  o = MatMul (r, w2)
  s = Add (o, x)
  t = Sigmoid (s)
  y = MatMul (t, w3)
}
"""


def _fold_bn(model: ir.Model) -> None:
    """Test-only BatchNorm folding into the preceding Conv (the prepare step does this)."""
    for bn in [n for n in model.graph if n.op_type == "BatchNormalization"]:
        conv = bn.inputs[0].producer()
        gamma, beta, mean, var = (v.const_value.numpy() for v in bn.inputs[1:])
        k = gamma / np.sqrt(var + 1e-5)
        w = conv.inputs[1].const_value.numpy() * k.reshape(-1, 1, 1, 1)
        b = (conv.inputs[2].const_value.numpy() - mean) * k + beta
        conv.inputs[1].const_value = ir.tensor(w.astype(np.float32))
        conv.inputs[2].const_value = ir.tensor(b.astype(np.float32))
        ir.convenience.replace_all_uses_with(bn.outputs[0], conv.outputs[0])
        model.graph.remove(bn, safe=True)


@pytest.mark.parametrize("act_dtype", [np.uint8, np.int8])
def test_conv_net_matches_onnxruntime(rng, act_dtype):
    r = rewrite_text(CONV_NET, rng, {"x": (4, 3, 32, 32)}, act_dtype=act_dtype)
    assert r.section["float_islands"] == []
    assert {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm", "MaxPool"} <= set(r.ops)
    assert r.ops.count("QuantizeLinear") == 1 and r.ops.count("DequantizeLinear") == 1
    ref = run(r.model, r.feeds)
    got = run_ort(r.model, r.feeds)
    assert_within_lsb([ref["y"]], got, output_scales(r.model))
    shares = per_op_agreement(r.model, r.feeds)
    assert min(shares.values()) >= 0.999, shares


def test_conv_net_with_folded_batchnorm(rng):
    text = CONV_NET.replace(
        "  r1 = Relu (c1)", "  n1 = BatchNormalization (c1, w_g, w_be, w_mu, w_var)\n  r1 = Relu (n1)"
    ).replace("float[16] b1,", "float[16] b1, float[16] w_g, float[16] w_be, float[16] w_mu, float[16] w_var,")
    from qoperator.qdq import quantize_qdq, with_weights

    float_model = with_weights(text, rng)
    for init in float_model.graph.initializer:
        if init.name == "w_var":  # a valid variance: channel scales 0.1 .. 10
            init.CopyFrom(onnx.numpy_helper.from_array(
                np.geomspace(0.01, 100, 16).astype(np.float32), "w_var"))
    model = ir.from_proto(float_model)
    _fold_bn(model)
    float_model = ir.to_proto(model)
    feeds = {"x": rng.standard_normal((4, 3, 32, 32)).astype(np.float32)}
    qdq = quantize_qdq(float_model, feeds)
    from edgeq.config import QuantConfig
    from edgeq.stages.integer_only import integer_only

    model = ir.from_proto(qdq)
    section = integer_only(model, QuantConfig(format="qoperator", integer_only=True, strict=True))
    assert section["float_islands"] == []
    proto = ir.to_proto(model)
    assert_within_lsb([run(proto, feeds)["y"]], run_ort(proto, feeds), output_scales(proto))
    assert_within_lsb(run_ort(proto, feeds), run_ort(qdq, feeds), output_scales(proto))


def test_matmul_net_matches_onnxruntime(rng):
    r = rewrite_text(MATMUL_NET, rng, {"x": (2, 16, 32)})
    assert r.section["float_islands"] == []
    assert r.ops.count("QLinearMatMul") == 3
    ref = run(r.model, r.feeds)
    got = run_ort(r.model, r.feeds)
    assert_within_lsb([ref["y"]], got, output_scales(r.model))
    shares = per_op_agreement(r.model, r.feeds)
    assert min(shares.values()) >= 0.999, shares


def test_export_params_lists_every_requantizing_layer(rng):
    r = rewrite_text(CONV_NET, rng, {"x": (4, 3, 32, 32)})
    layers = export_params(r.model)["layers"]
    ops = [layer["op_type"] for layer in layers]
    assert ops.count("QLinearConv") == 4 and "QLinearAdd" in ops and "QGemm" in ops
    for layer in layers:
        mults = np.atleast_1d(layer["multiplier"])
        assert np.all((mults >= 2**30) & (mults < 2**31))
    assert layers == r.section["layers"]


def test_unsupported_op_is_named():
    model = onnx.parser.parse_model(HEAD + "net (float[2] x) => (float[2] y) { y = Erf (x) }")
    with pytest.raises(UnsupportedError, match=r"ai\.onnx\.Erf"):
        run(model, {"x": np.zeros(2, np.float32)})


def test_missing_feed_is_an_input_error(rng):
    r = rewrite_text(MATMUL_NET, rng, {"x": (2, 16, 32)})
    with pytest.raises(InputError, match="'x'"):
        run(r.model, {})


def test_single_rounding_is_bit_exact_with_onnxruntime(rng):
    r = rewrite_text(CONV_NET, rng, {"x": (4, 3, 32, 32)})
    shares = per_op_agreement(r.model, r.feeds, rounding="single")
    assert min(shares.values()) == 1.0, shares
    got = run_ort(r.model, r.feeds)[0]
    ref = run(r.model, r.feeds, rounding="single")["y"]
    np.testing.assert_array_equal(ref, got)
    assert export_params(r.model, rounding="single")["rounding"] == "single"


def test_agreement_summary(rng):
    from edgeq.reference import agreement

    r = rewrite_text(MATMUL_NET, rng, {"x": (2, 16, 32)})
    single = agreement(r.model, [r.feeds], rounding="single")
    assert single["per_op_worst"] == 1.0 and single["end_to_end"] == 1.0
    assert set(single["per_op"]) == {f"{n.op_type} {n.name}" for n in r.model.graph.node
                                     if n.op_type not in ("QuantizeLinear", "DequantizeLinear")}
    double = agreement(r.model, [r.feeds], rounding="double")
    assert double["rounding"] == "double" and double["per_op_worst"] >= 0.999


def test_dq_to_q_is_a_fixed_point_requantization(rng):
    text = HEAD + """
net (float[4,64] x) => (float[4,64] y) {
  s1 = Constant <value=float {0.02}> ()  z1 = Constant <value=uint8 {130}> ()
  s2 = Constant <value=float {0.0537}> ()  z2 = Constant <value=int8 {-7}> ()
  q1 = QuantizeLinear (x, s1, z1)  d1 = DequantizeLinear (q1, s1, z1)
  q2 = QuantizeLinear (d1, s2, z2)  y = DequantizeLinear (q2, s2, z2)
}"""
    model = onnx.parser.parse_model(text)
    feeds = {"x": (rng.standard_normal((4, 64)) * 2).astype(np.float32)}
    layers = export_params(model)["layers"]
    assert [layer["op_type"] for layer in layers] == ["Requantize"]
    assert abs(layers[0]["real"] - 0.02 / 0.0537) < 1e-6
    scale = 0.0537
    for rounding in ("double", "single"):
        assert_within_lsb([run(model, feeds, rounding=rounding)["y"]], run_ort(model, feeds), [scale], 1.0)
