"""Each rule's check says why it did not match; the node then stays in float, unchanged."""

from __future__ import annotations

import pytest

from .harness import check_all, rewrite_text

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'

CASES = {
    # name: (graph body, input shapes, quantize_qdq options, op left in float, expected reason)
    "conv_weight_not_constant": (
        "net (float[1,3,6,6] x, float[4,3,3,3] k) => (float[1,4,4,4] y) { y = Conv (x, k) }",
        {"x": (1, 3, 6, 6), "k": (4, 3, 3, 3)}, {}, "Conv",
        "weight 'k_q_",
    ),
    "gemm_beta": (
        "net (float[2,8] x, float[8,4] w1, float[4] b1) => (float[2,4] y) {"
        " y = Gemm <beta=0.5> (x, w1, b1) }",
        {"x": (2, 8)}, {}, "Gemm", "QGemm: Gemm beta is not 1",
    ),
    "padded_average_pool": (
        "net (float[1,2,6,6] x) => (float[1,2,6,6] y) {"
        " y = AveragePool <kernel_shape=[3,3], pads=[1,1,1,1]> (x) }",
        {"x": (1, 2, 6, 6)}, {}, "AveragePool", "padded AveragePool is not rewritten",
    ),
    "sigmoid_float_output": (
        "net (float[2,8] x) => (float[2,8] y) { y = Sigmoid (x) }",
        {"x": (2, 8)}, {"quantize_outputs": False}, "Sigmoid",
        "QLinearSigmoid: output 'y' is a graph output, not quantized",
    ),
    "max_pool_rescaled": (
        "net (float[1,2,6,6] x) => (float[1,2,3,3] y) {"
        " y = MaxPool <kernel_shape=[2,2], strides=[2,2]> (x) }",
        {"x": (1, 2, 6, 6)}, {"share": False}, "MaxPool",
        "input 0 and output are quantized differently (needs rescaling)",
    ),
    "add_of_unquantized_input": (
        "net (float[2,8] x, float[2,8] z) => (float[2,8] y) { y = Add (x, z) }",
        {"x": (2, 8), "z": (2, 8)}, {"skip": ("z",)}, "Add",
        "QLinearAdd: input 1: input 'z' does not come from DequantizeLinear",
    ),
    "softmax_has_no_rule": (
        "net (float[2,8] x) => (float[2,8] y) { y = Softmax (x) }",
        {"x": (2, 8)}, {}, "Softmax", "no integer rule for ai.onnx.Softmax",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reason(case, rng):
    body, shapes, options, op_type, reason = CASES[case]
    r = rewrite_text(HEAD + body, rng, shapes, **options)
    (entry,) = [n for n in r.section["not_rewritten"] if n["op_type"] == op_type]
    assert any(reason in why for why in entry["reasons"]), entry["reasons"]
    assert op_type in r.ops
    check_all(r, reference=False)  # still the QDQ model's numbers


def test_integer_only_requantizes_instead_of_an_island(rng):
    """The MaxPool between different scales: a float island by default, integer with
    integer_only (MaxPool on uint8, then a DQ -> Q requantization)."""
    from edgeq.config import QuantConfig

    body, shapes, options, _, _ = CASES["max_pool_rescaled"]
    r = rewrite_text(HEAD + body, rng, shapes, QuantConfig(format="qoperator", integer_only=True),
                     **options)
    assert r.ops == ["QuantizeLinear", "MaxPool", "DequantizeLinear", "QuantizeLinear",
                     "DequantizeLinear"]
    assert r.section["float_islands"] == [] and len(r.section["requantizations"]) == 1
    assert [layer["op_type"] for layer in r.section["layers"]] == ["Requantize"]
    check_all(r)
