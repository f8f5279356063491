"""Compress mode: weights in N bits through codebooks (passes/codebooks.py, passes/codebook_weights.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from edgeq.config import QuantConfig, default_mode
from edgeq.errors import UsageError
from edgeq.metrics import sqnr_db
from edgeq.passes.codebook_weights import CodebookWeightsPass
from edgeq.passes.codebooks import codebook, pack, unpack
from ortutil import op_types
from passes.nets import build


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_planes_round_trip(bits):
    rng = np.random.default_rng(bits)
    indices = rng.integers(0, 1 << bits, 1001).astype(np.uint8)
    planes = pack(indices, bits)
    assert planes.shape == (bits, 126) and planes.dtype == np.uint8  # (5) exactly N bits a weight
    np.testing.assert_array_equal(unpack(planes, indices.size), indices)


def _weights(rng, groups=8, members=1024):
    return (rng.standard_normal((groups, members)) * rng.uniform(0.01, 0.1, (groups, 1))).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_kmeans_never_worse_than_uniform_and_indices_are_nearest(bits):
    """(1) k-means, started at the quantiles and at the uniform grid, is never worse than the
    uniform grid at the same bits; (4) the indices are the nearest entries of the fp16 codebook."""
    values = _weights(np.random.default_rng(0))

    def sqnr(scheme):
        book, idx = codebook(values, bits, scheme)
        assert book.dtype == np.float16 and book.shape == (8, 1 << bits) and idx.max() < 1 << bits
        rebuilt = np.take_along_axis(book.astype(np.float32), idx.astype(np.int64), axis=1)
        nearest = np.abs(values[:, :, None] - book.astype(np.float32)[:, None, :]).min(axis=2)
        np.testing.assert_allclose(np.abs(values - rebuilt), nearest, rtol=0, atol=1e-7)
        return sqnr_db(values, rebuilt)

    kmeans, uniform = sqnr("kmeans"), sqnr("uniform")
    # measured on Gaussian weights: 2 bits 9.3 vs 3.9 dB, 4 bits 19.7 vs 17.9, 6 bits 30.9 vs 30.4
    assert kmeans >= uniform - 1e-6 and kmeans > 5.0 * bits - 2.0


def test_pot_entries_are_signed_powers_of_two():
    values = _weights(np.random.default_rng(1))
    book, idx = codebook(values, 4, "pot")
    scale = np.abs(values).max(axis=1, keepdims=True)
    ratio = book.astype(np.float64) / scale
    nonzero = ratio[ratio != 0]
    np.testing.assert_allclose(np.abs(nonzero), 2.0 ** np.round(np.log2(np.abs(nonzero))), rtol=2e-3)  # fp16
    assert sorted(set(np.round(np.log2(np.abs(nonzero))).astype(int).tolist())) == list(range(-6, 1))


MODEL = """<ir_version: 10, opset_import: ["" : 17]>
g (float[1,4,8,8] x, int64[1,5] ids) => (float y, float e) {
  c = Conv<pads=[1,1,1,1]>(x, C)
  f = Flatten(c)
  h = MatMul(f, W)
  y = Gemm(h, G)
  z = Gemm(h, G)
  e = Gather(T, ids)
}"""


def _model():
    rng = np.random.default_rng(3)
    return build(MODEL, {"C": rng.normal(0, 0.2, (16, 4, 3, 3)), "W": rng.normal(0, 0.05, (1024, 64)),
                         "G": rng.normal(0, 0.1, (64, 32)), "T": rng.normal(0, 1, (500, 16))})


def test_weights_rebuilt_in_the_graph_and_folded_by_onnxruntime(tmp_path):
    """(2) one unpacking for every weight, Split into parts, a lookup per weight (the Gemm's B
    read by two nodes stored once; MatMul's and the Gemm's B [K, N] stored transposed, (4));
    onnxruntime's result equals the numpy rebuild, and with its optimizations on the chain is gone
    (folded into the weights when the session loads)."""
    proto = _model()
    model = ir.from_proto(proto)
    stored = CodebookWeightsPass("kmeans", 4)
    stored(model)
    ops = op_types(model)
    assert ops.count("Split") == 1 and ops.count("GatherElements") == 4 and ops.count("BitShift") == 1
    assert ops.count("Transpose") == 2  # W and G: grouped along N
    assert {layer["weight"] for layer in stored.layers} == {"C", "W", "G", "T"}
    assert all(3.9 < layer["bits_per_weight"] < 4.6 for layer in stored.layers)  # 4 bits + codebooks
    out = ir.to_proto(model)
    out.graph.output.extend([onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in "CWGT"])
    path = tmp_path / "k4.onnx"
    onnx.save(out, path)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(4)
    feed = {"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32), "ids": np.array([[0, 7, 499, 3, 3]])}
    got = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"]).run(None, feed)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for name, rebuilt in zip("CWGT", got[2:]):
        layer = next(x for x in stored.layers if x["weight"] == name)
        assert rebuilt.shape == weights[name].shape
        assert abs(sqnr_db(weights[name], rebuilt) - layer["sqnr_db"]) < 0.05  # the report's figure is the graph's
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    assert sqnr_db(want[0], got[0]) > 12.0 and sqnr_db(want[1], got[1]) > 15.0  # 4 bits a weight
    optimized = ort.SessionOptions()
    optimized.optimized_model_filepath = str(tmp_path / "folded.onnx")
    ort.InferenceSession(onnx.ModelProto.SerializeToString(ir.to_proto(model)), optimized,
                         providers=["CPUExecutionProvider"])
    folded = {n.op_type for n in onnx.load(tmp_path / "folded.onnx").graph.node}
    assert not folded & {"BitShift", "GatherElements", "Split", "ReduceSum"}  # folded at load


def test_compress_mode_end_to_end(tmp_path):
    """``--weights kmeans:N`` picks compress mode: a smaller file, fidelity rising with the bits."""
    import edgeq

    proto = _model()
    src = tmp_path / "fp32.onnx"
    onnx.save(proto, src)
    feed = {"x": np.random.default_rng(5).standard_normal((1, 4, 8, 8)).astype(np.float32),
            "ids": np.array([[1, 2, 3, 4, 5]])}
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    scores = {}
    for weights in ("kmeans:2", "kmeans:4", "kmeans:6", "pot"):
        assert default_mode(has_data=False, weights=weights) == "compress"
        result = edgeq.quantize(str(src), QuantConfig(mode="compress", weights=weights), progress=False)
        out = tmp_path / "q.onnx"
        result.save(out)
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        scores[weights] = sqnr_db(want, got)
        bits = result.report["compress"]["bits_per_weight"]
        from edgeq.report.markdown import render_markdown

        assert ("pot 4-bit" if weights == "pot" else f"{weights.replace(':', ' ')}-bit") in render_markdown(result.report)
        assert bits < (4.6 if weights == "pot" else int(weights[-1]) + 0.6)
        assert out.stat().st_size < src.stat().st_size * (bits + 1.5) / 32
        saved = onnx.load(str(out))
        assert not saved.graph.value_info  # drop_shapes.py: the smallest file keeps no intermediate shapes
        assert all(len(n.name) <= 16 for n in saved.graph.node if n.name.startswith("cb"))  # the chain's short names
    # measured 14.8 dB at 4 bits and 24.7 at 6 (three weight layers in a row, random weights)
    assert scores["kmeans:2"] < scores["kmeans:4"] < scores["kmeans:6"] and scores["kmeans:6"] > 21.0


def test_compress_config_errors():
    with pytest.raises(UsageError, match="kmeans:N"):
        QuantConfig(mode="compress", weights="kmeans:9")
    with pytest.raises(UsageError, match="disagree"):
        QuantConfig(mode="static", weights="kmeans:4")
    with pytest.raises(UsageError, match="disagree"):
        QuantConfig(mode="compress")
    config = QuantConfig(mode="compress", weights="uniform:3")
    assert QuantConfig.from_dict(config.to_dict()) == config


def test_per_layer_schemes_and_a_second_pass(tmp_path):
    """(6) per-layer widths by op type or node name: one unpacking per width, names that do not
    collide, the report per weight; a weight read by readers of two widths gets the larger."""
    import edgeq

    proto = _model()
    src = tmp_path / "fp32.onnx"
    onnx.save(proto, src)
    config = QuantConfig(mode="compress", weights="kmeans:4", precision={"Gather": "kmeans:2", "MatMul": "uniform:6"})
    result = edgeq.quantize(str(src), config, progress=False)
    layers = {layer["weight"]: (layer["scheme"], layer["bits"]) for layer in result.report["quantized"]}
    assert layers == {"C": ("kmeans", 4), "W": ("uniform", 6), "G": ("kmeans", 4), "T": ("kmeans", 2)}
    assert op_types(result.model).count("BitShift") == 3  # one unpacking per width
    names = [n.name for n in result.model.graph if n.name]
    assert len(names) == len(set(names))
    with pytest.raises(UsageError, match="neither a node nor an op type"):
        edgeq.quantize(str(src), config.with_precision({"nope": "kmeans:3"}), progress=False)
    with pytest.raises(UsageError, match="compress-mode weight type"):
        QuantConfig(mode="static", precision={"Conv": "kmeans:3"})
    with pytest.raises(UsageError, match="compress mode takes"):
        edgeq.quantize(str(src), config.with_precision({"Conv": "int16"}), progress=False)
    model = ir.from_proto(proto)  # a second pass over a model compressed before: fresh names
    CodebookWeightsPass("kmeans", 4, keep=frozenset({"Conv"}))(model)
    CodebookWeightsPass("kmeans", 4)(model)
    names = [n.name for n in model.graph if n.name]
    assert len(names) == len(set(names)) and op_types(model).count("BitShift") == 2
    ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
