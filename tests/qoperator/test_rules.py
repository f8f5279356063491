"""Each rule on a small graph from ONNX text: the op sequence after rewriting, onnx.checker,
onnxruntime within 1 LSB of the QDQ model, and the integer reference within 1 LSB of ORT."""

from __future__ import annotations

import numpy as np
import pytest

from .harness import check_all, rewrite_text

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'

CASES = {
    # name: (graph body, input shapes, expected ops, quantize_qdq options)
    "conv_relu_per_channel": (
        "net (float[1,3,12,12] x, float[6,3,3,3] w1, float[6] b1) => (float[1,6,12,12] y) {"
        " c = Conv <pads=[1,1,1,1]> (x, w1, b1)  y = Relu (c) }",
        {"x": (1, 3, 12, 12)},
        ["QuantizeLinear", "QLinearConv", "DequantizeLinear"], {},
    ),
    "conv_int8_strided_group": (
        "net (float[1,4,11,11] x, float[8,2,3,3] w1, float[8] b1) => (float[1,8,5,5] y) {"
        " y = Conv <strides=[2,2], group=2> (x, w1, b1) }",
        {"x": (1, 4, 11, 11)},
        ["QuantizeLinear", "QLinearConv", "DequantizeLinear"], {"act_dtype": np.int8},
    ),
    "depthwise_conv_per_tensor": (
        "net (float[1,4,9,9] x, float[4,1,3,3] w1) => (float[1,4,9,9] y) {"
        " y = Conv <group=4, pads=[1,1,1,1], dilations=[1,1]> (x, w1) }",
        {"x": (1, 4, 9, 9)},
        ["QuantizeLinear", "QLinearConv", "DequantizeLinear"], {"per_channel": False},
    ),
    "matmul_per_column": (
        "net (float[2,5,16] x, float[16,8] w1) => (float[2,5,8] y) { y = MatMul (x, w1) }",
        {"x": (2, 5, 16)},
        ["QuantizeLinear", "QLinearMatMul", "DequantizeLinear"], {},
    ),
    "matmul_two_activations": (
        "net (float[3,4,6] a, float[3,6,5] b) => (float[3,4,5] y) { y = MatMul (a, b) }",
        {"a": (3, 4, 6), "b": (3, 6, 5)},
        ["QuantizeLinear", "QuantizeLinear", "QLinearMatMul", "DequantizeLinear"], {},
    ),
    "gemm_qgemm": (
        "net (float[4,12] x, float[7,12] w1, float[7] b1) => (float[4,7] y) {"
        " g = Gemm <transB=1> (x, w1, b1)  y = Relu (g) }",
        {"x": (4, 12)},
        ["QuantizeLinear", "QGemm", "DequantizeLinear"], {},
    ),
    "gemm_float_output": (
        "net (float[4,12] x, float[12,7] w1, float[7] b1) => (float[4,7] y) {"
        " y = Gemm (x, w1, b1) }",
        {"x": (4, 12)},
        ["QuantizeLinear", "QGemm"], {"quantize_outputs": False},
    ),
    "matmul_integer_float_output": (
        "net (float[2,16] x, float[16,8] w1) => (float[2,8] y) { y = MatMul (x, w1) }",
        {"x": (2, 16)},
        ["QuantizeLinear", "MatMulInteger", "DequantizeLinear"], {"quantize_outputs": False},
    ),
    "matmul_bias_add_3d": (  # Linear on a 3-D input: MatMul -> Add(bias) -> Q
        "net (float[2,5,16] x, float[16,8] w1, float[8] b1) => (float[2,5,8] y) {"
        " h = MatMul (x, w1)  y = Add (h, b1) }",
        {"x": (2, 5, 16)},
        ["QuantizeLinear", "MatMulInteger", "Add", "DequantizeLinear", "QuantizeLinear",
         "DequantizeLinear"], {"skip": ("h",)},
    ),
    "conv_integer_float_output": (
        "net (float[1,3,8,8] x, float[5,3,3,3] w1, float[5] b1) => (float[1,5,6,6] y) {"
        " y = Conv (x, w1, b1) }",
        {"x": (1, 3, 8, 8)},
        ["QuantizeLinear", "ConvInteger", "Add", "DequantizeLinear"], {"quantize_outputs": False},
    ),
    "add_mul": (
        "net (float[1,4,5,5] a, float[1,4,5,5] b, float[1,4,1,1] c) => (float[1,4,5,5] y) {"
        " s = Add (a, b)  y = Mul (s, c) }",
        {"a": (1, 4, 5, 5), "b": (1, 4, 5, 5), "c": (1, 4, 1, 1)},
        ["QuantizeLinear"] * 3 + ["QLinearAdd", "QLinearMul", "DequantizeLinear"], {},
    ),
    "sigmoid_leaky_relu": (
        "net (float[2,32] x) => (float[2,32] y) {"
        " s = Sigmoid (x)  y = LeakyRelu <alpha=0.1> (s) }",
        {"x": (2, 32)},
        ["QuantizeLinear", "QLinearSigmoid", "QLinearLeakyRelu", "DequantizeLinear"], {},
    ),
    "leaky_relu_int8": (
        "net (float[2,64] x) => (float[2,64] y) { y = LeakyRelu <alpha=0.2> (x) }",
        {"x": (2, 64)},
        ["QuantizeLinear", "QLinearLeakyRelu", "DequantizeLinear"], {"act_dtype": np.int8},
    ),
    "pools": (
        "net (float[1,3,8,8] x) => (float[1,3,1,1] y) {"
        " m = MaxPool <kernel_shape=[2,2], strides=[2,2]> (x)"
        " a = AveragePool <kernel_shape=[2,2]> (m)  y = GlobalAveragePool (a) }",
        {"x": (1, 3, 8, 8)},
        ["QuantizeLinear", "MaxPool", "QLinearAveragePool", "QLinearGlobalAveragePool",
         "DequantizeLinear"], {},
    ),
    "concat_rescaled": (
        "net (float[1,2,4,4] a, float[1,3,4,4] b) => (float[1,5,4,4] y) {"
        " y = Concat <axis=1> (a, b) }",
        {"a": (1, 2, 4, 4), "b": (1, 3, 4, 4)},
        ["QuantizeLinear", "QuantizeLinear", "QLinearConcat", "DequantizeLinear"], {},
    ),
    "shape_ops_on_int8": (
        "net (float[1,4,6,6] x) => (float[1,4,18] y) {"
        " t = Transpose <perm=[0,1,3,2]> (x)"
        " sh = Constant <value=int64[3] {1,4,36}> ()  r = Reshape (t, sh)"
        " st = Constant <value=int64[1] {0}> ()  en = Constant <value=int64[1] {18}> ()"
        " ax = Constant <value=int64[1] {2}> ()  y = Slice (r, st, en, ax) }",
        {"x": (1, 4, 6, 6)},
        ["QuantizeLinear", "Transpose", "Reshape", "Slice", "DequantizeLinear"], {},
    ),
    "flatten_squeeze_unsqueeze": (
        "net (float[1,6,1,1] x) => (float[1,6] y) {"
        " f = Flatten (x)  a = Constant <value=int64[1] {0}> ()"
        " u = Unsqueeze (f, a)  y = Squeeze (u, a) }",
        {"x": (1, 6, 1, 1)},
        ["QuantizeLinear", "Flatten", "Unsqueeze", "Squeeze", "DequantizeLinear"], {},
    ),
    "standalone_relu_to_max": (
        "net (float[2,16] x) => (float[2,16] y) { y = Relu (x) }",
        {"x": (2, 16)},
        ["QuantizeLinear", "Max", "DequantizeLinear"], {},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule(case, rng):
    body, shapes, expected, options = CASES[case]
    r = rewrite_text(HEAD + body, rng, shapes, **options)
    assert [op for op in r.ops if op != "Constant"] == expected, r.section["not_rewritten"]
    assert r.section["float_islands"] == []
    check_all(r)
