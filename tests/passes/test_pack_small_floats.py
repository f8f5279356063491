"""passes/pack_small_floats.py: biases and other small float tensors in one float16 block, the
same answers from onnxruntime, and the values float16 would change left float32."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

import edgeq
from edgeq.io import model_bytes
from edgeq.passes.pack_small_floats import PackSmallFloatsPass

TEXT = """
<ir_version: 8, opset_import: ["" : 18]>
net (float[1, 4, 8, 8] x) => (float[1, 32, 8, 8] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
    s = Mul (c2, gain)
    t = Add (s, eps)
    y = Div (t, odd)
}
"""


def _model(rng: np.random.Generator) -> ir.Model:
    proto = onnx.parser.parse_model(TEXT)
    odd = np.ones((1, 32, 1, 1), np.float32)
    odd[0, 3] = 1e-9  # float16 would flush it to zero: the tensor stays float32
    inits = {"w1": rng.standard_normal((32, 4, 3, 3)), "b1": rng.standard_normal(32),
             "w2": rng.standard_normal((32, 32, 3, 3)) / 10, "b2": rng.standard_normal(32) * 10,
             "gain": rng.uniform(0.5, 2.0, (1, 32, 1, 8)), "eps": np.array(1e-12), "odd": odd}
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items())
    return ir.from_proto(proto)


def _run(model: ir.Model, feed: dict) -> np.ndarray:
    return ort.InferenceSession(model_bytes(model), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_small_floats_share_one_float16_block_and_answer_the_same(monkeypatch):
    import edgeq.passes.pack_small_floats as pack_module

    rng = np.random.default_rng(0)
    model, original = _model(rng), _model(np.random.default_rng(0))
    monkeypatch.setattr(pack_module, "MIN_SAVED", 0)  # a small graph: pack whatever pays for itself
    pack = PackSmallFloatsPass()
    pack(model)
    ops = [n.op_type for n in model.graph]
    assert ops[:2] == ["Cast", "Split"]
    block = model.graph.initializers["small_floats_fp16"].const_value
    assert block.dtype == ir.DataType.FLOAT16
    packed = {"w1", "b1", "w2", "b2", "gain"} - set(model.graph.initializers)
    assert packed == {"w1", "b1", "w2", "b2", "gain"}  # everything float16 holds within a step
    assert {"eps", "odd"} <= set(model.graph.initializers)  # 1e-12 and 1e-9 would be flushed to zero
    assert pack.count == 5 and pack.saved == 2 * block.size - 5 * 16 - 3 * 64  # the data halved, less the pieces
    shrunk = len(model_bytes(original)) - len(model_bytes(model))
    assert 0.7 * pack.saved < shrunk < 1.3 * pack.saved, (shrunk, pack.saved)  # the estimate is the file's
    assert ops.count("Reshape") == 3  # the 4-D tensors; the biases come out of the Split as they are
    feed = {"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
    want, got = _run(original, feed), _run(model, feed)
    others = np.delete(want, 3, axis=1)
    np.testing.assert_allclose(np.delete(got, 3, axis=1), others, rtol=1e-2, atol=1e-2 * float(np.abs(others).max()))
    np.testing.assert_allclose(got[:, 3], want[:, 3], rtol=1e-2)


def test_too_little_to_pack_is_left_alone():
    model = _model(np.random.default_rng(1))
    for name in ("w1", "w2", "gain"):  # 1e-9 stays float32: two biases of 32 left, 128 bytes to save
        value = model.graph.initializers[name]
        value.const_value = ir.tensor(np.full(value.const_value.shape.numpy(), 1e-9, np.float32), name=name)
    before = model_bytes(model)
    result = PackSmallFloatsPass()(model)
    assert not result.modified and model_bytes(model) == before


def test_compress_mode_packs_biases_and_says_so():
    rng = np.random.default_rng(2)
    proto = onnx.parser.parse_model(TEXT.replace("s = Mul (c2, gain)", "s = Mul (c2, c2)"))
    big = {f"b{i}": rng.standard_normal(8).astype(np.float32) for i in (1, 2)}
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in {
        "w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w2": rng.standard_normal((8, 8, 3, 3)).astype(np.float32),
        **big, "eps": np.array(1e-12, np.float32), "odd": np.ones((1, 8, 1, 1), np.float32)}.items())
    for i in range(40):  # a model with more small float tensors: a head of per-class biases, say
        proto.graph.initializer.append(onnx.numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), f"h{i}"))
        proto.graph.node.append(onnx.helper.make_node("Add", [f"h{i}", f"h{i}"], [f"h{i}_twice"]))
        proto.graph.output.append(onnx.helper.make_tensor_value_info(f"h{i}_twice", onnx.TensorProto.FLOAT, [16]))
    result = edgeq.quantize(proto, edgeq.QuantConfig(mode="compress", weights="kmeans:4"), progress=False)
    assert any("in one fp16 block" in n for n in result.report["notes"]), result.report["notes"]
    assert "small_floats_fp16" in result.model.graph.initializers
    feed = {"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
    session = ort.InferenceSession(model_bytes(result.model), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    for i in range(40):
        want = 2 * onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == f"h{i}"))
        np.testing.assert_allclose(outs[f"h{i}_twice"], want, rtol=2 ** -10)
