"""Small float graphs for the auto tests (ONNX text, seeded weights) and their feeds."""

from __future__ import annotations

import numpy as np
import onnx

__all__ = ["build", "outlier_net", "outlier_feeds", "relu_mlp", "DYNAMIC_NET"]

OUTLIER_NET = """<ir_version: 8, opset_import: ["" : 17]>
outlier_net (float[N,8,16,16] x) => (float[N,10] y) {
  c1 = Conv<pads=[1,1,1,1]>(x, W1, B1)
  r1 = Relu(c1)
  c2 = Conv<pads=[1,1,1,1]>(r1, W2, B2)
  r2 = Relu(c2)
  c3 = Conv<pads=[1,1,1,1]>(r2, W3, B3)
  g = GlobalAveragePool(c3)
  y = Flatten(g)
}"""


# three MatMuls between float ops: each one dynamic int8 (auto's fallback ranks them)
DYNAMIC_NET = """<ir_version: 8, opset_import: ["" : 17]>
dyn (float[N,64] x) => (float[N,64] y) {
  a = MatMul(x, W1)
  b = Erf(a)
  c = MatMul(b, W2)
  d = Erf(c)
  e = MatMul(d, W3)
  y = Erf(e)
}"""


def build(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type.lower()}{i}"
    for name, array in weights.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(array, np.float32), name))
    onnx.checker.check_model(model)
    return model


def outlier_net(seed: int = 0) -> onnx.ModelProto:
    """Three convs; the first reads an input whose channel 0 carries rare huge spikes that the
    network ignores (W1[:, 0] == 0). Quantizing ``x`` by min/max spends the int8 levels on the
    spikes, so conv1 is the one outlier-dominated, sensitive layer."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.25, (16, 8, 3, 3))
    w1[:, 0] = 0.0
    return build(OUTLIER_NET, {
        "W1": w1, "B1": rng.normal(0, 0.1, 16),
        "W2": rng.normal(0, 0.15, (16, 16, 3, 3)), "B2": rng.normal(0, 0.1, 16),
        "W3": rng.normal(0, 0.1, (10, 16, 3, 3)), "B3": rng.normal(0, 0.1, 10),
    })


def outlier_feeds(n: int = 16, seed: int = 1, spike: float = 400.0) -> list[dict[str, np.ndarray]]:
    """Smooth N(0, 1)-ish images; one in eight has a single spike in channel 0 (rarer than 0.01%)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.normal(0, 1, (1, 8, 16, 16)).astype(np.float32)
        x = (x + np.roll(x, 1, 2) + np.roll(x, 1, 3) + np.roll(x, (1, 1), (2, 3))) / 2
        if i % 8 == 0:
            x[0, 0, rng.integers(16), rng.integers(16)] = spike
        out.append({"x": x.astype(np.float32)})
    return out


RELU_MLP = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,32] x) => (float[N,32] y) {
  h = MatMul(x, W1)
  r = Relu(h)
  y = MatMul(r, W2)
}"""


def relu_mlp() -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """Two MatMuls around a Relu (seeded weights) and 12 feeds of 2 rows."""
    rng = np.random.default_rng(0)
    model = build(RELU_MLP, {"W1": rng.normal(0, 0.2, (32, 32)), "W2": rng.normal(0, 0.2, (32, 32))})
    feeds = [{"x": rng.standard_normal((2, 32)).astype(np.float32)} for _ in range(12)]
    return model, feeds
