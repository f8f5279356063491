"""Weight-only int4/int8 MatMul/Gemm weights in blocks along K (passes/blocks.py,
passes/weight_only.py, the weight-only mode): the grid, the packed layouts onnxruntime reads, the
graph structure, and fidelity on a real transformer."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import edgeq
from edgeq.config import QuantConfig
from edgeq.errors import UsageError
from edgeq.metrics import sqnr_db
from edgeq.passes.blocks import pack_nibbles, quantize_blocks
from ortutil import op_types, run_ort
from passes.nets import build

NET = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,T,64] x) => (float[N,T,64] y) {
  h = MatMul(x, W1)
  hb = Add(h, B1)
  r = Relu(hb)
  g2 = Gemm<transB=1>(r2, W2, B2)
  r2 = Reshape(r, S)
  y0 = Reshape(g2, S3)
  y = MatMul(y0, W3)
}"""


def _net(rng):
    text = NET.replace("  g2 = Gemm<transB=1>(r2, W2, B2)\n  r2 = Reshape(r, S)\n",
                       "  r2 = Reshape(r, S)\n  g2 = Gemm<transB=1>(r2, W2, B2)\n")
    weights = {"W1": rng.normal(0, 0.1, (64, 96)), "B1": rng.normal(0, 0.1, 96),
               "W2": rng.normal(0, 0.1, (80, 96)), "B2": rng.normal(0, 0.1, 80), "S": np.array([-1, 96]),
               "S3": np.array([2, 5, 80]), "W3": rng.normal(0, 0.1, (80, 64))}
    return build(text, weights), weights


def test_round_to_nearest_error_is_half_a_step_and_zeros_stay_exact(rng):
    w = rng.normal(0, 1, (100, 7)).astype(np.float32)  # K not a multiple of the block
    w[:, 3] = 0.0
    q = quantize_blocks(w, bits=4, block=32, ratios=(1.0,))
    assert q.codes.shape == (7, 4, 32) and q.codes.max() <= 15
    step = np.repeat(q.scales, 32, axis=1)[:, :100].T
    assert np.all(np.abs(q.dequantized() - w) <= step / 2 + 1e-6)
    assert np.all(q.dequantized()[:, 3] == 0.0)
    searched = quantize_blocks(w, bits=4, block=32)  # the clip search never raises the error
    assert np.square(searched.dequantized() - w).sum() <= np.square(q.dequantized() - w).sum()
    sym = quantize_blocks(w, bits=4, block=32, symmetric=True)
    assert np.all(sym.zero_points == 8)
    assert sqnr_db(w, quantize_blocks(w, bits=8, block=32).dequantized()) > 40.0


def test_nibbles_pack_low_first():
    assert pack_nibbles(np.array([1, 2, 3, 4], np.uint8)).tolist() == [0x21, 0x43]
    assert pack_nibbles(np.array([15, 0, 7], np.uint8)).tolist() == [0x0F, 0x07]


@pytest.mark.parametrize("weight_op", ["matmulnbits", "dequantize"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_onnxruntime_computes_exactly_the_block_grid(rng, weight_op, symmetric):
    """The model's output is x @ dequantized(W) (+ bias): the layouts are the ones the runtime reads."""
    model, weights = _net(rng)
    config = QuantConfig(mode="weight-only", weights="int4", weight_op=weight_op, symmetric=symmetric, accuracy_level=0)
    result = edgeq.quantize(model, config)
    ops = op_types(result.model)
    if weight_op == "matmulnbits":
        assert ops.count("MatMulNBits") == 3 and "MatMul" not in ops and "Gemm" not in ops
        assert "Add" not in ops  # the MatMul's bias Add folded into MatMulNBits
    else:
        assert ops.count("DequantizeLinear") == 3 and ops.count("MatMul") == 3
    entries = {e["node"]: e for e in result.report["quantized"]}
    assert sorted(e["bits"] for e in entries.values()) == [4, 4, 8]  # the head (feeds y) keeps 8 bits
    x = rng.standard_normal((2, 5, 64)).astype(np.float32)
    deq = {}
    for name, key, bits in (("W1", "W1", 4), ("W2", "W2", 4), ("W3", "W3", 8)):
        w = np.asarray(weights[name], np.float32)
        w = w.T if name == "W2" else w
        deq[key] = quantize_blocks(w, bits=bits, block=32, symmetric=symmetric).dequantized()
    h = np.maximum(x.reshape(-1, 64) @ deq["W1"] + weights["B1"], 0)
    want = ((h @ deq["W2"] + weights["B2"]).reshape(2, 5, 80) @ deq["W3"]).astype(np.float32)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")  # float compute: exact
    import onnx_ir as ir

    sess = ort.InferenceSession(ir.to_proto(result.model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-4)
    fp32 = run_ort(model, {"x": x})[0]
    assert sqnr_db(fp32, want) > 15.0  # and int4 is near the float model


def test_small_or_non_constant_weights_stay_float_with_a_reason(rng):
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,16] x, float[16,16] w) => (float[N,16] y, float[N,8] z) {
  y = MatMul(x, w)
  z = MatMul(x, W)
}"""
    model = build(text, {"W": rng.normal(0, 1, (16, 8))})
    result = edgeq.quantize(model, QuantConfig(mode="weight-only", weights="int4"))
    reasons = sorted(e["reason"] for e in result.report["float"])
    assert len(reasons) == 2 and "not a constant" in reasons[1] and "too few" in reasons[0]
    assert op_types(result.model) == ["MatMul", "MatMul"]


def test_config_rules():
    assert edgeq.config.default_mode(has_data=False, weights="int4") == "weight-only"
    with pytest.raises(UsageError, match="weight-only"):
        QuantConfig(mode="dynamic", weights="int4")
    with pytest.raises(UsageError, match="weight-only"):  # blocks are weight-only's; static int4 is per channel
        QuantConfig(mode="static", weights="int4", granularity="per-block:32")
    with pytest.raises(UsageError, match="power of two"):
        QuantConfig(mode="weight-only", weights="int4", granularity="per-block:24")
    with pytest.raises(UsageError, match="blocks"):
        QuantConfig(mode="weight-only", granularity="per-tensor")
    assert QuantConfig.from_dict(QuantConfig(mode="weight-only", weights="int4", weight_op="dequantize").to_dict()).weight_op == "dequantize"


def test_cli_int4_needs_no_calibration_data(tmp_path, capsys, rng):
    import onnx

    from edgeq.cli.main import main
    from ortutil import cli_ok

    model, _ = _net(rng)
    src, out = tmp_path / "m.onnx", tmp_path / "m.int4.onnx"
    onnx.save(model, src)
    cli_ok(["quantize", str(src), "-o", str(out), "--weights", "int4", "--granularity", "per-block:64"], capsys)
    assert op_types(onnx.load(out)).count("MatMulNBits") == 3
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(src), "-o", str(tmp_path / "x.onnx"), "--weights", "int4", "--mode", "dynamic"])
    assert e.value.code == 2 and "weight-only" in capsys.readouterr().err


def test_tiny_transformer_int4_is_five_times_smaller_and_close(tmp_path):
    from edgeq.exporter import export
    from edgeq.zoo import get

    path = tmp_path / "tt.onnx"
    export("tiny_transformer", path)
    feeds = get("tiny_transformer").eval_data(8)
    ref = np.concatenate([run_ort(str(path), f)[0] for f in feeds])
    got = {}
    for weights in ("int4", "int8"):
        result = edgeq.quantize(str(path), QuantConfig(mode="weight-only", weights=weights))
        got[weights] = np.concatenate([run_ort(result.model, f)[0] for f in feeds])
        got[weights + "_ratio"] = result.report["summary"]["size_ratio"]
    # measured: int4 22.6 dB (cosine 0.997), 0.196 of the fp32 weights; int8 41.7 dB, 0.29
    assert got["int4_ratio"] < 0.22 and got["int8_ratio"] < 0.32
    assert sqnr_db(ref, got["int4"]) > 18.0 and sqnr_db(ref, got["int8"]) > 35.0
    cos = np.sum(ref * got["int4"]) / np.linalg.norm(ref) / np.linalg.norm(got["int4"])
    assert cos > 0.99


def test_gptq_on_the_block_grid_moves_the_layer_output_less(rng):
    """Same grid (scales, zero points), codes rounded against X^T X: the product with new inputs
    from the same distribution moves less than with codes rounded to nearest."""
    from edgeq.passes.gptq import gptq_blocks

    k, n = 96, 64
    mix = rng.normal(0, 1, (k, k)) / np.sqrt(k) + np.eye(k)  # correlated input channels
    x_fit, x_new = (rng.standard_normal((m, k)) @ mix for m in (2000, 500))
    w = rng.normal(0, 0.2, (k, n)).astype(np.float32)
    rtn = quantize_blocks(w, bits=4, block=32)
    fitted = gptq_blocks(w, rtn, x_fit.T @ x_fit)
    assert np.array_equal(fitted.scales, rtn.scales) and np.array_equal(fitted.zero_points, rtn.zero_points)
    assert fitted.codes.shape == rtn.codes.shape and fitted.codes.max() <= 15
    err = {name: np.square(x_new @ (q.dequantized() - w)).sum() for name, q in (("rtn", rtn), ("gptq", fitted))}
    assert err["gptq"] < 0.8 * err["rtn"], err


def test_calibration_data_turns_on_gptq_and_it_is_closer_on_unseen_samples(tmp_path):
    from edgeq.exporter import export
    from edgeq.zoo import get

    path = tmp_path / "tt.onnx"
    export("tiny_transformer", path)
    spec = get("tiny_transformer")
    calib, unseen = list(spec.calibration_data(16)), list(spec.eval_data(8))
    ref = np.concatenate([run_ort(str(path), f)[0] for f in unseen])
    got = {}
    for label, data in (("rtn", None), ("gptq", calib)):
        result = edgeq.quantize(str(path), QuantConfig(mode="weight-only", weights="int4"), data)
        got[label] = sqnr_db(ref, np.concatenate([run_ort(result.model, f)[0] for f in unseen]))
        assert {q["rounding"] for q in result.report["quantized"]} == {"nearest" if data is None else "GPTQ"}
    # measured: 24.7 dB to nearest, 29.0 dB with GPTQ on 32 calibration samples
    assert got["gptq"] > got["rtn"] + 2.0, got


def test_accuracy_level_is_measured_and_said(rng, monkeypatch):
    """Unset, both levels are timed and compared on this machine; level 4 is kept only where it is
    10% faster and within 30 dB of level 0 (stages/accuracy_level.py)."""
    from edgeq.stages import accuracy_level

    model, _ = _net(rng)
    for ms, want in (({"0": 2.0, "4": 1.0}, 4), ({"0": 1.0, "4": 0.95}, 0)):
        monkeypatch.setattr(accuracy_level, "_time", lambda sessions, feed, ms=ms: dict(ms))
        x = {"x": rng.standard_normal((2, 5, 64)).astype(np.float32)}  # its fixed Reshape takes no made-up feed
        result = edgeq.quantize(model, QuantConfig(mode="weight-only", weights="int4"), [x])
        levels = {a.i for n in ir_nodes(result.model) if n.op_type == "MatMulNBits" for a in n.attribute
                  if a.name == "accuracy_level"}
        note = next(n for n in result.report["notes"] if n.startswith("accuracy_level"))
        assert levels == {want} and note.startswith(f"accuracy_level {want}") and "dB from level 0's" in note, note
    result = edgeq.quantize(model, QuantConfig(mode="weight-only", weights="int4", accuracy_level=0))
    assert not any(n.startswith("accuracy_level") for n in result.report["notes"])


def ir_nodes(model):
    import onnx_ir as ir

    return ir.to_proto(model).graph.node


def test_a_graph_that_takes_no_made_up_feed_keeps_level_0_and_says_why(rng):
    model, _ = _net(rng)
    result = edgeq.quantize(model, QuantConfig(mode="weight-only", weights="int4"))
    note = next(n for n in result.report["notes"] if n.startswith("accuracy_level"))
    assert note.startswith("accuracy_level 0") and "--calib" in note
