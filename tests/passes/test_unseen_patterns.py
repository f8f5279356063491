"""Graph patterns met on architectures edgeq had not seen (bench/unseen_sweep.py), as small
graphs: each crashed or produced an invalid model before its fix."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir

import edgeq
from edgeq.config import QuantConfig
from edgeq.metrics import sqnr_db
from ortutil import run_ort

# torch's dynamo exporter folds identical constants into one initializer: YOLOS's zero Linear
# biases became one [D] vector read by many Adds. With one Add int16 and one int8, InsertQDQPass gave
# both of that constant's DequantizeLinear nodes (and outputs) the same name: onnxruntime refused
# the model ("two nodes with same node name ...bias_DQ") and auto mode crashed in its fallback.
SHARED_BIAS = """<ir_version: 8, opset_import: ["" : 17]>
shared (float[1,16,32] x) => (float[1,16,32] y) {
  h1 = MatMul(x, M1)
  a1 = Add(h1, B)
  g1 = MatMul(a1, M3)
  h2 = MatMul(x, M2)
  a2 = Add(h2, B)
  g2 = MatMul(a2, M4)
  y = Add(g1, g2)
}"""


def _shared_bias_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(SHARED_BIAS)
    for node in model.graph.node:
        node.name = node.output[0]
    rng = np.random.default_rng(0)
    for name, array in {"M1": rng.normal(0, 0.2, (32, 32)), "M2": rng.normal(0, 0.2, (32, 32)),
                        "M3": rng.normal(0, 0.2, (32, 32)), "M4": rng.normal(0, 0.2, (32, 32)),
                        "B": rng.normal(0, 0.5, 32)}.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(array, np.float32), name))
    onnx.checker.check_model(model)
    return model


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (1, 16, 32)).astype(np.float32)} for _ in range(n)]


def test_constant_read_by_int16_and_int8_nodes_gets_two_named_dqs():
    model = _shared_bias_model()
    result = edgeq.quantize(model, QuantConfig(mode="static", int16_nodes=("a1",)), _feeds(8, 0), progress=False)
    proto = result.model if isinstance(result.model, onnx.ModelProto) else ir.to_proto(result.model)
    names = collections.Counter(n.name for n in proto.graph.node if n.name)
    assert not [n for n, c in names.items() if c > 1], names
    outputs = collections.Counter(o for n in proto.graph.node for o in n.output)
    assert not [o for o, c in outputs.items() if c > 1]
    # B is read through two DQs of different types: one int16 (for a1), one int8 (for a2).
    b_dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.name.startswith("B_")]
    assert len(b_dqs) == 2
    feeds = _feeds(4, 1)
    ref = np.concatenate([run_ort(model, f)[0] for f in feeds])
    got = np.concatenate([run_ort(proto, f)[0] for f in feeds])
    assert sqnr_db(ref, got) > 30.0
