"""fp16 per layer (``QuantConfig.fp16_nodes``): the named nodes compute in fp16 with Casts only
at their region's boundaries, the rest stays int8 QDQ; checker, onnxruntime, fidelity."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import edgeq
from edgeq.config import QuantConfig
from edgeq.errors import UsageError
from edgeq.metrics import sqnr_db
from ortutil import run_ort

CHAIN = """<ir_version: 8, opset_import: ["" : 17]>
chain (float[N,8,12,12] x) => (float[N,8,12,12] y) {
  c1 = Conv<pads=[1,1,1,1]>(x, W1, B1)
  r1 = Relu(c1)
  c2 = Conv<pads=[1,1,1,1]>(r1, W2, B2)
  r2 = Relu(c2)
  c3 = Conv<pads=[1,1,1,1]>(r2, W3, B3)
  r3 = Relu(c3)
  y = Conv<pads=[1,1,1,1]>(r3, W4, B4)
}"""

F16, F32 = ir.DataType.FLOAT16, ir.DataType.FLOAT


def chain() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    model = onnx.parser.parse_model(CHAIN)
    for node in model.graph.node:
        node.name = node.output[0]
    for i in range(1, 5):
        model.graph.initializer.extend([
            onnx.numpy_helper.from_array(rng.normal(0, 0.15, (8, 8, 3, 3)).astype(np.float32), f"W{i}"),
            onnx.numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), f"B{i}")])
    onnx.checker.check_model(model)
    return model


FEEDS = [{"x": np.random.default_rng(s).normal(0, 1, (1, 8, 12, 12)).astype(np.float32)} for s in range(6)]


def _quantize(**config) -> ir.Model:
    result = edgeq.quantize(chain(), QuantConfig(**config), FEEDS, progress=False)
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    return result.model


def _sqnr(model) -> float:
    ref = np.concatenate([run_ort(chain(), f)[0] for f in FEEDS])
    return sqnr_db(ref, np.concatenate([run_ort(model, f)[0] for f in FEEDS]))


def test_fp16_region_has_casts_only_at_its_boundaries():
    model = _quantize(fp16_nodes=("c2", "r2", "c3"))
    nodes = {n.name: n for n in model.graph}
    casts = [n for n in model.graph if n.op_type == "Cast"]
    assert len(casts) == 2
    into, out_of = sorted(casts, key=lambda n: n.attributes["to"].as_int() != F16.value)
    assert into.attributes["to"].as_int() == F16.value and out_of.attributes["to"].as_int() == F32.value
    assert into.inputs[0].producer().op_type == "DequantizeLinear"  # r1's int8 pair (c1 is int8)
    assert [c.name for c in into.outputs[0].consumers()] == ["c2"]
    assert out_of.inputs[0].producer() is nodes["c3"]
    assert [c.name for c in out_of.outputs[0].consumers()] == ["r3"]  # r3 stays fp32, then r3's Q for y
    for name in ("c2", "r2", "c3"):
        assert nodes[name].outputs[0].dtype == F16
    for name in ("c2", "c3"):  # fp16 weights, no DQ
        assert all(v.dtype == F16 and v.const_value is not None for v in nodes[name].inputs[1:])
    for name in ("c1", "y"):  # int8 elsewhere
        assert nodes[name].inputs[1].producer().op_type == "DequantizeLinear"
        assert nodes[name].inputs[1].producer().inputs[0].dtype == ir.DataType.INT8
    assert nodes["r3"].outputs[0].dtype == F32


def test_fp16_layers_are_more_faithful_than_int8():
    int8 = _sqnr(_quantize())
    fp16 = _sqnr(_quantize(fp16_nodes=("c1", "r1", "c2", "r2", "c3", "r3", "y")))
    assert fp16 >= 50.0 and fp16 >= int8 + 15.0, (int8, fp16)


def test_fp16_graph_output_cast_back_under_its_name():
    model = _quantize(fp16_nodes=("y",))
    assert [o.name for o in model.graph.outputs] == ["y"]
    out = model.graph.outputs[0]
    assert out.dtype == F32 and out.producer().op_type == "Cast"
    assert out.producer().inputs[0].producer().name == "y" and out.producer().inputs[0].dtype == F16
    assert sum(n.op_type == "Cast" for n in model.graph) == 2
    assert _sqnr(model) > 25.0


def test_unknown_fp16_node_is_a_usage_error():
    with pytest.raises(UsageError, match="precision names 'c9' \\(fp16\\)"):
        _quantize(fp16_nodes=("c9",))


def test_dynamic_mode_keeps_fp16_nodes_with_their_reason():
    result = edgeq.quantize(chain(), QuantConfig(mode="dynamic", fp16_nodes=("c2", "r2")), None, progress=False)
    onnx.checker.check_model(ir.to_proto(result.model), full_check=True)
    reasons = {f["node"]: f["reason"] for f in result.report["float"]}
    assert reasons["c2"].startswith("computed in fp16 as asked")
    assert sum(n.op_type == "Cast" for n in result.model.graph) == 2
    assert _sqnr(result.model) > 50.0
