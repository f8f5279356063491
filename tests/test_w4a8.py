"""Static mode with int4 weights (W4A8, passes/quantize_weights.py (8)): 4-bit Conv/MatMul/Gemm
weights packed in the file and run on onnxruntime's int8 kernels; depthwise weights, the first
and last layers and mapped layers kept at 8 bits; the outputs near int8's; clear refusals."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

import edgeq
from edgeq.config import QuantConfig
from edgeq.errors import UsageError
from edgeq.metrics import sqnr_db
from ortutil import run_ort
from passes.helpers import ort_optimized_ops
from passes.nets import build, depthwise_net, feeds


def _deep_net() -> onnx.ModelProto:
    """A stem Conv on the input, three 3x3 Convs, pooling and a Gemm head."""
    rng = np.random.default_rng(3)
    return build("""<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,16,16] x) => (float[N,10] y) {
  a = Conv<pads=[1,1,1,1]>(x, W0, B0)
  ra = Relu(a)
  b = Conv<pads=[1,1,1,1]>(ra, W1, B1)
  rb = Relu(b)
  c = Conv<pads=[1,1,1,1]>(rb, W2, B2)
  rc = Relu(c)
  d = Conv<pads=[1,1,1,1]>(rc, W3, B3)
  s = Add(d, ra)
  r = Relu(s)
  g = GlobalAveragePool(r)
  f = Flatten(g)
  y = Gemm<transB=1>(f, G, GB)
}""", {"W0": rng.normal(0, 0.3, (16, 3, 3, 3)), "B0": rng.normal(0, 0.1, 16),
       **{f"W{i}": rng.normal(0, 0.12, (16, 16, 3, 3)) for i in (1, 2, 3)},
       **{f"B{i}": rng.normal(0, 0.1, 16) for i in (1, 2, 3)},
       "G": rng.normal(0, 0.3, (10, 16)), "GB": rng.normal(0, 0.1, 10)})


def _bits(result) -> dict[str, int]:
    return {row["node"]: row["weights"]["bits"] for row in result.report["quantized"] if "weights" in row}


def test_w4a8_packs_4_bit_weights_and_runs_integer_kernels(tmp_path):
    proto, data = _deep_net(), feeds((1, 3, 16, 16), n=16)
    int8 = edgeq.quantize(proto, QuantConfig(mode="static"), data, progress=False)
    int4 = edgeq.quantize(proto, QuantConfig(mode="static", weights="int4"), data, progress=False)
    int8.save(tmp_path / "w8.onnx")
    int4.save(tmp_path / "w4.onnx")
    saved = onnx.load(str(tmp_path / "w4.onnx"))
    assert {o.version for o in saved.opset_import if o.domain in ("", "ai.onnx")} == {21}
    packed = {t.name: t for t in saved.graph.initializer if t.data_type == onnx.TensorProto.INT4}
    assert len(packed) == 3  # the three inner Convs' weights; the stem and the head keep 8 bits
    assert sorted(_bits(int4).values()) == [4, 4, 4, 8, 8]
    readers = [n for n in saved.graph.node if n.op_type == "Cast" and n.input[0] in packed]
    assert len(readers) == 3
    levels = [onnx.numpy_helper.to_array(t).astype(np.int8) for t in packed.values()]
    assert all(np.abs(v).max() == 7 for v in levels)  # each weight's largest channel on +-7
    assert (tmp_path / "w4.onnx").stat().st_size < 0.8 * (tmp_path / "w8.onnx").stat().st_size
    fused = collections.Counter(ort_optimized_ops(tmp_path / "w4.onnx", tmp_path))
    assert fused["QLinearConv"] == 4 and fused["Conv"] == 0 and fused["Cast"] == 0
    assert not any("u8s8" in note for note in int4.report["notes"])  # 4-bit levels: no 7-or-8-bit choice
    test = feeds((1, 3, 16, 16), n=8, seed=9)
    ref = np.concatenate([run_ort(proto, f)[0] for f in test])
    got4 = np.concatenate([run_ort(str(tmp_path / "w4.onnx"), f)[0] for f in test])
    got8 = np.concatenate([run_ort(str(tmp_path / "w8.onnx"), f)[0] for f in test])
    assert 12.0 < sqnr_db(ref, got4) < sqnr_db(ref, got8)
    assert np.mean(ref.argmax(1) == got4.argmax(1)) >= 0.75


def test_a_layer_the_map_gives_int8_keeps_8_bits():
    proto, data = _deep_net(), feeds((1, 3, 16, 16), n=4)
    plain = _bits(edgeq.quantize(proto, QuantConfig(mode="static", weights="int4"), data, progress=False))
    name = [node for node, bits in plain.items() if bits == 4][1]  # an inner Conv, as the report names it
    mapped = _bits(edgeq.quantize(proto, QuantConfig(mode="static", weights="int4", precision={name: "int8"}),
                                  data, progress=False))
    assert sorted(mapped.values()) == [4, 4, 8, 8, 8] and sum(plain.values()) == sum(mapped.values()) - 4


def test_depthwise_weights_keep_8_bits(tmp_path):
    data = [{"x": np.random.default_rng(i).normal(0, 1, (1, 8, 10, 10)).astype(np.float32)} for i in range(4)]
    result = edgeq.quantize(depthwise_net(), QuantConfig(mode="static", weights="int4"), data, progress=False)
    assert list(_bits(result).values()) == [8, 8, 8]  # stem (graph input), depthwise, head (graph output)


@pytest.mark.parametrize("kwargs, message", [
    ({"format": "qoperator"}, "QDQ format"),
    ({"opset": 17}, "opset 21"),
    ({"granularity": "per-block:32"}, "weight-only"),
])
def test_w4a8_refusals_say_what_to_change(kwargs, message):
    with pytest.raises(UsageError, match=message):
        QuantConfig(mode="static", weights="int4", **kwargs)


def test_int4_keeps_weight_only_as_its_default_mode():
    from edgeq.config import default_mode

    assert default_mode(has_data=True, weights="int4") == "weight-only"
    with pytest.raises(UsageError, match="W4A8"):
        QuantConfig(mode="dynamic", weights="int4")
