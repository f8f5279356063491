"""Weights of layers left float stored as fp16 (passes/float_weights.py): which are, which are not,
and that onnxruntime runs the same fp32 kernels (the Cast folded away when the session loads)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

import edgeq
from edgeq.config import QuantConfig
from edgeq.metrics import sqnr_db
from ortutil import run_ort
from passes.helpers import ort_optimized_ops
from passes.nets import build, feeds

NET = """<ir_version: 8, opset_import: ["" : 17]>
net (float[N,64] x) => (float[N,64] y, float[N,64] z) {
  h = MatMul(x, A)
  hb = Add(h, AB)
  r = Relu(hb)
  k = MatMul(r, K)
  y = Add(k, KB)
  s = Add(r, S)
  z = MatMul(s, S)
}"""

FEEDS = feeds((64, 64), n=8)  # N = 64: S (64 x 64) is both an Add input and a weight


def _net(big: float = 1.0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    keep = rng.normal(0, 0.15, (64, 64)) * big
    return build(NET, {"A": rng.normal(0, 0.15, (64, 64)), "AB": rng.normal(0, 0.1, 64), "K": keep,
                       "KB": rng.normal(0, 0.1, 64), "S": rng.normal(0, 0.15, (64, 64))})


def _quantize(proto: onnx.ModelProto, **config) -> ir.Model:
    config = {"mode": "static", "exclude": ("node_k", "node_z"), **config}
    result = edgeq.quantize(proto, QuantConfig(**config), FEEDS, progress=False)
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    return result.model


def _named(proto: onnx.ModelProto) -> onnx.ModelProto:
    for node in proto.graph.node:
        node.name = f"node_{node.output[0]}"
    return proto


def _weight(model: ir.Model, node_name: str) -> ir.Value:
    return next(n for n in model.graph if n.name == node_name).inputs[1]


def test_a_float_layers_weight_is_stored_fp16_and_cast_back():
    proto = _named(_net())
    model = _quantize(proto)
    weight = _weight(model, "node_k")
    cast = weight.producer()
    assert weight.name == "K" and cast.op_type == "Cast" and cast.attributes["to"].as_int() == ir.DataType.FLOAT
    stored = cast.inputs[0].const_value
    assert stored.dtype == ir.DataType.FLOAT16 and stored.shape == (64, 64)
    assert "K" not in model.graph.initializers
    np.testing.assert_array_equal(stored.numpy(), onnx.numpy_helper.to_array(proto.graph.initializer[2]).astype(np.float16))
    int8 = next(n for n in model.graph if n.name.startswith("node_h"))  # int8 (dynamic: between float ops)
    assert int8.op_type == "DynamicQuantizeMatMul" and int8.inputs[1].dtype == ir.DataType.INT8
    assert model.graph.initializers["KB"].const_value.dtype == ir.DataType.FLOAT  # a bias: fp32
    assert any("stored as fp16" in note for note in edgeq.quantize(
        proto, QuantConfig(mode="static", exclude=("node_k",)), FEEDS, progress=False).report["notes"])


def test_onnxruntime_folds_the_cast_and_the_answer_moves_far_less_than_int8(tmp_path):
    proto = _named(_net())
    fp16, fp32 = _quantize(proto), _quantize(proto, float_weights="fp32")
    assert "Cast" not in ort_optimized_ops(fp16, tmp_path)  # folded at load: the fp32 kernel, no Cast per call
    assert _weight(fp32, "node_k").const_value.dtype == ir.DataType.FLOAT
    ref = np.concatenate([run_ort(proto, f)[0] for f in FEEDS])
    got16 = np.concatenate([run_ort(fp16, f)[0] for f in FEEDS])
    got32 = np.concatenate([run_ort(fp32, f)[0] for f in FEEDS])
    assert sqnr_db(got32, got16) > 55.0  # fp16 storage: about 70 dB on the weight
    assert sqnr_db(ref, got32) < 50.0  # the int8 layer's error is far larger
    assert abs(sqnr_db(ref, got16) - sqnr_db(ref, got32)) < 0.1
    assert len(ir.to_proto(fp16).SerializeToString()) < len(ir.to_proto(fp32).SerializeToString()) - 64 * 64 * 2 + 512


def test_weights_fp16_cannot_hold_or_read_as_data_stay_fp32():
    big = _quantize(_named(_net(big=1e6)))  # |w| over 65504
    assert _weight(big, "node_k").const_value.dtype == ir.DataType.FLOAT
    tiny = _quantize(_named(_net(big=1e-7)))  # subnormal in fp16: rounding far above 60 dB below
    assert _weight(tiny, "node_k").const_value.dtype == ir.DataType.FLOAT
    model = _quantize(_named(_net()))
    assert _weight(model, "node_z").const_value.dtype == ir.DataType.FLOAT  # S is also an Add's input


def test_the_cli_keeps_fp32_weights_on_request(tmp_path):
    from click.testing import CliRunner

    from edgeq.cli.main import cli

    onnx.save(_named(_net()), tmp_path / "in.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, f in enumerate(FEEDS):
        np.savez(calib / f"{i}.npz", **f)
    for flag, dtype in (("fp32", onnx.TensorProto.FLOAT), ("fp16", onnx.TensorProto.FLOAT16)):
        out = tmp_path / f"{flag}.onnx"
        result = CliRunner().invoke(cli, ["quantize", str(tmp_path / "in.onnx"), "-o", str(out), "--calib",
                                           str(calib), "--mode", "static", "--exclude", "node_k",
                                           "--float-weights", flag])
        assert result.exit_code == 0, result.output
        kept = [i for i in onnx.load(out).graph.initializer if i.name in ("K", "K_fp16")]
        assert [i.data_type for i in kept] == [dtype]
