"""QuantizeWeightsPass: int8 per-channel weights within half a step, int32 biases with s_in * s_w."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.config import QuantConfig
from edgeq.passes.weights import (
    INT32_MAX,
    PAIR_LIMIT,
    bias_safe_min_scale,
    from_k_major,
    k_major,
    limit_pairs,
    paired_qmax,
    pairs_form,
    quantize_bias,
    quantize_weight,
    weight_qmax,
)
from edgeq.runtime.cpu import pairs_within
from passes.helpers import quantize_with_numpy_ranges
from passes.nets import conv_net, depthwise_net, feeds


def _dq_inputs(node: ir.Node, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    dq = node.inputs[i].producer()
    assert dq.op_type == "DequantizeLinear"
    axis = dq.attributes.get("axis")
    return (*(v.const_value.numpy() for v in dq.inputs), axis.value if axis else None)


def test_conv_and_gemm_weights_per_channel_and_bias_scale():
    proto = conv_net()
    float_w = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    model, plan = quantize_with_numpy_ranges(proto, feeds((1, 3, 16, 16)))
    convs = [n for n in model.graph if n.op_type == "Conv"]
    for node, w_name, b_name, axis in [(convs[0], "W1", "B1", 0), (convs[1], "W2", "B2", 0)]:
        q, scale, zp, got_axis = _dq_inputs(node, 1)
        w = float_w[w_name]
        assert q.dtype == np.int8 and zp.dtype == np.int8 and not zp.any() and got_axis == axis
        qmax = weight_qmax(QuantConfig())  # 63 in this suite (conftest): a CPU that saturates 8-bit products
        if pairs_form(QuantConfig()):  # (7) where its kernels pair weight rows: 8 bits, pairs within 128
            qmax = paired_qmax(k_major(w, "Conv"), PAIR_LIMIT)  # each output channel's largest level
            assert pairs_within(k_major(q, "Conv"), PAIR_LIMIT) and np.abs(q).max() == 127
        assert scale.shape == (w.shape[0],) and np.all(np.abs(q).reshape(w.shape[0], -1).max(1) <= qmax)
        np.testing.assert_allclose(scale, np.abs(w).reshape(w.shape[0], -1).max(1) / qmax, rtol=1e-6)
        step = scale.reshape(-1, 1, 1, 1)
        nearest = np.clip(np.rint(w / step), -np.reshape(qmax, (-1, 1, 1, 1)), np.reshape(qmax, (-1, 1, 1, 1)))
        if pairs_form(QuantConfig()):  # the nearest levels, then the pairs over 128 cut (weights.limit_pairs)
            nearest = from_k_major(limit_pairs(k_major(nearest.astype(np.int8), "Conv"), PAIR_LIMIT), "Conv", w.shape)
        np.testing.assert_array_equal(q, nearest)  # exact: the nearest level (half a step at most) but for the cuts
        qb, b_scale, b_zp, _ = _dq_inputs(node, 2)
        in_scale = node.inputs[0].producer().inputs[1].const_value.numpy()
        assert qb.dtype == np.int32 and not b_zp.any()
        np.testing.assert_allclose(b_scale, np.float32(in_scale) * scale, rtol=1e-6)
        assert np.all(np.abs(float_w[b_name] - qb * b_scale) <= b_scale / 2 + 1e-7)
    gemm = next(n for n in model.graph if n.op_type == "Gemm")
    q, scale, _, axis = _dq_inputs(gemm, 1)
    assert axis == 0 and scale.shape == (10,)  # transB=1: output channels on axis 0


def test_per_tensor_granularity_gives_scalar_scales():
    model, _ = quantize_with_numpy_ranges(conv_net(), feeds((1, 3, 16, 16)), QuantConfig(granularity="per-tensor"))
    conv = next(n for n in model.graph if n.op_type == "Conv")
    _, scale, zp, axis = _dq_inputs(conv, 1)
    assert scale.shape == () and zp.shape == () and axis is None


def test_bias_overflow_raises_the_weight_scale_instead_of_clipping():
    weight = np.zeros((2, 4), np.float32)
    weight[0] = 1e-12  # a dead channel: a tiny scale would overflow the bias
    weight[1] = 0.5
    bias = np.array([3.0, 0.1], np.float32)
    min_scale = bias_safe_min_scale(bias, 0.01, per_channel=True)
    qw = quantize_weight(weight, 0, min_scale=min_scale)
    qb, b_scale = quantize_bias(bias, 0.01, qw.scale)
    assert np.abs(qb.astype(np.int64)).max() < INT32_MAX
    np.testing.assert_allclose(qb * b_scale, bias, rtol=1e-6)
    assert qw.scale[1] == np.float32(0.5 / 127)  # untouched where it fits


def test_zero_weights_are_exact():
    qw = quantize_weight(np.zeros((3, 2, 1, 1), np.float32), 0)
    assert not qw.values.any() and np.all(qw.scale > 0)


def _levels(model, op_type: str, nth: int = 0) -> np.ndarray:
    node = [n for n in model.graph if n.op_type == op_type][nth]
    return _dq_inputs(node, 1)[0]


def test_reduce_range_keeps_u8s8_weights_within_7_bits_but_not_depthwise_ones():
    """(7) Conv (group 1) and MatMul weights in [-63, 63] where asked (or measured), each channel's
    largest weight on +-63; the depthwise Conv's kernel widens first: it keeps [-127, 127]."""
    data = [{"x": np.random.default_rng(i).normal(0, 1, (1, 8, 10, 10)).astype(np.float32)} for i in range(3)]
    for reduce, qmax in ((True, 63), (False, 127)):
        model, plan = quantize_with_numpy_ranges(depthwise_net(), data, QuantConfig(reduce_range=reduce))
        assert np.abs(_levels(model, "Conv", 0)).max() == qmax and np.abs(_levels(model, "MatMul")).max() == qmax
        assert np.abs(_levels(model, "Conv", 1)).max() == 127  # depthwise
        assert any("7 bits" in n for n in plan.notes) == reduce


def test_reduce_range_by_default_follows_the_measured_cpu(monkeypatch):
    from edgeq.runtime import cpu

    monkeypatch.setenv(cpu.ENV, "0")
    assert weight_qmax(QuantConfig()) == 127
    monkeypatch.setenv(cpu.ENV, "1")
    assert weight_qmax(QuantConfig()) == 63 and weight_qmax(QuantConfig(provider="cuda")) == 127
    assert weight_qmax(QuantConfig(reduce_range=False)) == 127
    monkeypatch.setenv(cpu.ENV, "0")
    assert weight_qmax(QuantConfig(reduce_range=True)) == 63


def test_a_transposed_gemm_weight_is_transposed_once_for_every_variant():
    """A Gemm with transB stores its int8 levels as [K, N]: within one auto search the copy is
    made once and shared, as the levels are (one 2 MB copy per build held 938 MB by the end of
    ddddocr_rec's search)."""
    from edgeq.passes.dynamic import quantize_matmul_weight
    from edgeq.passes.weights import reuse_quantized_weights

    weight = np.random.default_rng(0).normal(0, 0.1, (6, 4)).astype(np.float32)  # [N, K]
    weight.flags.writeable = False  # a weight shared by the variants is read-only
    w = ir.Value(name="W", const_value=ir.tensor(weight))
    node = ir.node("Gemm", [ir.Value(name="x"), w], {"transB": 1})
    with reuse_quantized_weights():
        _, first, _ = quantize_matmul_weight(node, True)
        _, again, _ = quantize_matmul_weight(node, True)
    assert again.values is first.values and not first.values.flags.writeable
    assert first.values.shape == (4, 6) and first.values.flags.c_contiguous
    np.testing.assert_allclose(first.dequantize(), weight.T, atol=float(first.scale.max()) / 2 + 1e-7)
    _, outside, _ = quantize_matmul_weight(node, True)  # no reuse outside a search: a fresh copy, same levels
    assert outside.values is not first.values and np.array_equal(outside.values, first.values)
