"""runtime/cpu.py: the measurement of whether this CPU's onnxruntime saturates u8s8 products."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.runtime import cpu


def _matmul_integer(weight: int, a: int = 255, k: int = 64) -> int:
    """The first element of a u8s8 MatMulInteger, all A elements ``a``, all weights ``weight``."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 16])],
        [numpy_helper.from_array(np.full((k, 16), weight, np.int8), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(sess.run(None, {"a": np.full((4, k), a, np.uint8)})[0][0, 0])


def test_the_measurement_matches_what_the_kernel_does():
    """Whatever this CPU is: 8-bit weights are exact iff the measurement says no saturation, and
    7-bit weights (what edgeq then uses) are exact on every CPU."""
    exact_8bit = _matmul_integer(127) == 255 * 127 * 64
    assert cpu.measured() == (not exact_8bit)
    assert _matmul_integer(63) == 255 * 63 * 64
    assert _matmul_integer(-63) == -255 * 63 * 64


def test_the_override_wins_and_the_measurement_is_cached(monkeypatch):
    monkeypatch.setenv(cpu.ENV, "0")
    assert cpu.int8_saturates() is False
    monkeypatch.setenv(cpu.ENV, "1")
    assert cpu.int8_saturates() is True
    monkeypatch.delenv(cpu.ENV)
    assert cpu.int8_saturates() == cpu.measured()
    assert cpu.measured.cache_info().currsize == 1


def _qdq_matmul(tmp_path, level: int, act_zp_dtype=np.uint8, name: str = "m.onnx"):
    """x -> Q/DQ (uint8 or int8) -> MatMul with an int8 weight DQ whose largest level is ``level``."""
    w = np.full((64, 16), level, np.int8)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.array(0.01, np.float32), "w_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w_zp"), numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
             numpy_helper.from_array(np.array(0, act_zp_dtype), "x_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_zp"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w_dq"]),
             helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, path)
    return model, path


def test_wide_int8_weights_are_those_u8s8_kernels_read(tmp_path):
    assert cpu.wide_int8_weights(_qdq_matmul(tmp_path, 127)[0]) == ["w_q"]
    assert cpu.wide_int8_weights(_qdq_matmul(tmp_path, 63)[0]) == []  # 7 bits: never saturates
    assert cpu.wide_int8_weights(_qdq_matmul(tmp_path, 127, np.int8)[0]) == []  # s8s8: no such kernel


def test_a_session_warns_where_this_cpu_saturates_the_models_weights(tmp_path, monkeypatch):
    from edgeq.runtime import Session

    _, wide = _qdq_matmul(tmp_path, 127, name="wide.onnx")
    _, narrow = _qdq_matmul(tmp_path, 63, name="narrow.onnx")
    monkeypatch.setenv(cpu.ENV, "1")
    x = {"x": np.ones((4, 64), np.float32)}
    sess = Session(wide)
    sess.run(x)
    assert len(sess.warnings) == 1 and "--reduce-range" in sess.warnings[0] and "wide.onnx" in sess.warnings[0]
    quiet = Session(narrow)
    quiet.run(x)
    assert quiet.warnings == []
    monkeypatch.setenv(cpu.ENV, "0")
    fine = Session(wide)
    fine.run(x)
    assert fine.warnings == []


def test_bench_carries_the_warning_back_from_its_worker_process(tmp_path, monkeypatch):
    from edgeq.runtime.bench import bench

    _, wide = _qdq_matmul(tmp_path, 127, name="wide.onnx")
    monkeypatch.setenv(cpu.ENV, "1")  # the worker process inherits it
    (result,) = bench([wide], batches=[4], iters=3, warmup=1)
    assert len(result.warnings) == 1 and "saturates" in result.warnings[0]


def _matmul_integer_of(weight: np.ndarray, a: np.ndarray) -> np.ndarray:
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, list(a.shape))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"a": a})[0]


def test_pairs_within_the_limit_are_exact_on_this_cpu():
    """cpu.pairs_exact: 8-bit weights whose same-sign pairs of rows 2i, 2i + 1 sum within
    PAIR_LIMIT, times activations up to NARROW_LEVELS, are exact here (what per-token MatMuls'
    narrow rows rely on); a pair over the limit is not, where the CPU saturates."""
    from edgeq.passes.weights import limit_pairs

    assert cpu.pairs_exact()
    assert cpu.NARROW_PAIR_LIMIT * cpu.NARROW_LEVELS <= 32767 < (cpu.NARROW_PAIR_LIMIT + 1) * cpu.NARROW_LEVELS
    rng = np.random.default_rng(0)
    w = np.clip(np.round(rng.standard_t(3, (385, 96)) * 45), -127, 127).astype(np.int8)  # heavy tails, odd K
    limited = limit_pairs(w, cpu.NARROW_PAIR_LIMIT)
    assert cpu.pairs_within(limited, cpu.NARROW_PAIR_LIMIT) and not cpu.pairs_within(w, cpu.NARROW_PAIR_LIMIT)
    changed = limited != w
    assert 0 < changed.mean() < 0.05 and np.abs(limited.astype(np.int16)).max() == 127
    assert np.all(np.abs(limited.astype(np.int16)) <= np.abs(w.astype(np.int16)))  # only ever smaller
    assert np.all((np.sign(limited) == np.sign(w)) | (limited == 0))
    a = np.clip(rng.integers(150, cpu.NARROW_LEVELS + 1, (7, 385)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(_matmul_integer_of(limited, a), a.astype(np.int64) @ limited.astype(np.int64))
    if cpu.measured():  # the unlimited weights are what saturates
        assert not np.array_equal(_matmul_integer_of(w, a), a.astype(np.int64) @ w.astype(np.int64))


def test_narrow_rows_weights_are_not_reported_wide(tmp_path):
    """wide_int8_weights: a MatMulIntegerToFloat with narrow rows (A zero point 91) whose 8-bit
    weights keep their pairs within the limit is safe; the same weights with full rows are not."""
    from edgeq.passes.weights import limit_pairs

    rng = np.random.default_rng(1)
    w = limit_pairs(np.clip(np.round(rng.standard_t(3, (64, 16)) * 45), -127, 127).astype(np.int8), cpu.NARROW_PAIR_LIMIT)

    def model(zero_point: int):
        inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.ones((1,), np.float32), "a_s"),
                 numpy_helper.from_array(np.ones(16, np.float32), "w_s"),
                 numpy_helper.from_array(np.array(zero_point, np.uint8), "a_zp"),
                 numpy_helper.from_array(np.array(0, np.int8), "w_zp")]
        node = helper.make_node("MatMulIntegerToFloat", ["a", "w_q", "a_s", "w_s", "a_zp", "w_zp"], ["y"],
                                domain="com.microsoft")
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])

    assert cpu.wide_int8_weights(model(cpu.NARROW_LEVELS // 2 + 1)) == []
    assert cpu.wide_int8_weights(model(128)) == ["w_q"]


def test_pair_limited_weights_run_exact_and_do_not_warn(tmp_path):
    """passes/weights.py quantize_paired, as the suite's static mode builds it (conftest: a CPU that
    saturates): 8-bit Conv and Gemm weights, every same-sign pair along K within 128; the
    saturation warning stays quiet about them."""
    import onnx_ir as ir

    import edgeq
    from edgeq.config import QuantConfig
    from edgeq.passes.weights import PAIR_LIMIT, k_major, pairs_form
    from ortutil import weight_width
    from passes.nets import conv_net

    assert pairs_form(QuantConfig())  # the suite's CPU saturates, and its kernels pair rows 2i, 2i + 1
    rng = np.random.default_rng(3)
    data = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32) * 3} for _ in range(8)]
    result = edgeq.quantize(conv_net(), QuantConfig(mode="static"), data, progress=False)
    assert weight_width(result.model) == "paired"
    for node in result.model.graph:
        if node.op_type == "Conv" and node.inputs[1].producer() is not None:
            levels = node.inputs[1].producer().inputs[0].const_value.numpy()
            assert cpu.pairs_within(k_major(levels, "Conv"), PAIR_LIMIT)
    path = tmp_path / "paired.onnx"
    onnx.save(ir.to_proto(result.model), path)
    assert cpu.wide_int8_weights(onnx.load(path)) == [] and cpu.saturation_warning(str(path)) is None


@pytest.mark.parametrize(("channels", "group", "kernel"), [(16, 1, 3), (15, 1, 3), (16, 2, 3), (32, 1, 1)])
def test_a_conv_with_pairs_within_128_is_exact_against_255(channels, group, kernel):
    """QLinearConv pairs input channels at one kernel position (passes/weights.py k_major), grouped
    too and with an odd channel count: 8-bit weights limited there are exact against activations
    of 255 on any CPU; the same weights unlimited are not where this CPU saturates."""
    import torch

    from edgeq.passes.weights import PAIR_LIMIT, from_k_major, k_major, limit_pairs

    rng = np.random.default_rng(channels + group)
    raw = np.clip(np.round(rng.standard_t(3, (8, channels // group, kernel, kernel)) * 60), -127, 127).astype(np.int8)
    limited = from_k_major(limit_pairs(k_major(raw, "Conv"), PAIR_LIMIT), "Conv", raw.shape)
    x = np.full((1, channels, 6, 6), 255, np.uint8)

    def run(w: np.ndarray) -> np.ndarray:
        y_scale = float(np.abs(w.astype(np.int64)).sum(axis=(1, 2, 3)).max() * 255 / 120)
        consts = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
                  numpy_helper.from_array(np.array(0, np.uint8), "xz"), numpy_helper.from_array(np.ones(8, np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
                  numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
                  numpy_helper.from_array(np.array(128, np.uint8), "yz")]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                                pads=[kernel // 2] * 4, group=group)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], consts)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        exact = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                           padding=kernel // 2, groups=group).numpy()
        return got.astype(np.int64) - np.clip(np.round(exact / y_scale) + 128, 0, 255).astype(np.int64)

    assert not run(limited).any()
    if cpu.measured():
        assert run(raw).any()  # what the limit prevents


def test_an_lstm_with_pairs_within_128_is_exact_against_255():
    """DynamicQuantizeLSTM's GEMMs pair rows 2i, 2i + 1 of W [I, 4H] and R [H, 4H] (the K of each,
    as a MatMul's): 8-bit levels limited there (passes/quantize_recurrent.py) are exact with X and
    the hidden state at their largest code (255: the kernel quantizes each per tensor from 0 to its
    max); the same levels unlimited are not where this CPU saturates."""
    from edgeq.passes.weights import PAIR_LIMIT, limit_pairs

    features, hidden = 48, 16
    rng = np.random.default_rng(7)
    raw_w = np.clip(np.round(rng.standard_t(3, (features, 4 * hidden)) * 60), -127, 127).astype(np.int8)
    raw_r = np.clip(np.round(rng.standard_t(3, (hidden, 4 * hidden)) * 60), -127, 127).astype(np.int8)
    s_w = (0.5 / np.abs(raw_w.astype(np.int64)).sum(axis=0)).astype(np.float32)[None]
    s_r = (0.5 / np.abs(raw_r.astype(np.int64)).sum(axis=0)).astype(np.float32)[None]
    x, h0 = np.full((1, 1, features), 1.0, np.float32), np.full((1, 1, hidden), 1.0, np.float32)

    def run(w: np.ndarray, r: np.ndarray) -> np.ndarray:
        consts = [numpy_helper.from_array(w[None], "W"), numpy_helper.from_array(r[None], "R"),
                  numpy_helper.from_array(s_w, "ws"), numpy_helper.from_array(np.zeros((1, 4 * hidden), np.int8), "wz"),
                  numpy_helper.from_array(s_r, "rs"), numpy_helper.from_array(np.zeros((1, 4 * hidden), np.int8), "rz")]
        node = helper.make_node("DynamicQuantizeLSTM", ["x", "W", "R", "", "", "h0", "", "", "ws", "wz", "rs", "rz"],
                                ["y"], domain="com.microsoft", hidden_size=hidden)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape)),
                                                helper.make_tensor_value_info("h0", TensorProto.FLOAT, list(h0.shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], consts)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x, "h0": h0})[0].reshape(-1)
        z = (w.astype(np.float64).sum(axis=0) * s_w[0] + r.astype(np.float64).sum(axis=0) * s_r[0])  # codes 255 x 1/255
        gate = dict(zip("iofc", np.split(z, 4)))  # ONNX's gate order, c0 = 0
        sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
        want = sigmoid(gate["o"]) * np.tanh(sigmoid(gate["i"]) * np.tanh(gate["c"]))
        return np.abs(got - want).max()

    limited_w, limited_r = limit_pairs(raw_w, PAIR_LIMIT), limit_pairs(raw_r, PAIR_LIMIT)
    assert not cpu.pairs_within(raw_w, PAIR_LIMIT) and not cpu.pairs_within(raw_r, PAIR_LIMIT)
    assert run(limited_w, limited_r) < 1e-5
    if cpu.measured():
        assert run(raw_w, limited_r) > 1e-3 and run(limited_w, raw_r) > 1e-3  # what the limit prevents, in W and in R
