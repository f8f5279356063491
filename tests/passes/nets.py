"""Small float graphs from ONNX text, with weights from a seeded generator, and feeds for them."""

from __future__ import annotations

import numpy as np
import onnx

__all__ = ["build", "conv_net", "mlp_net", "depthwise_net", "feeds", "FOUR_CONVS"]

CONV_NET = """<ir_version: 8, opset_import: ["" : 17]>
conv_net (float[N,3,16,16] x) => (float[N,10] y) {
  c1 = Conv<pads=[1,1,1,1]>(x, W1, B1)
  r1 = Relu(c1)
  p1 = MaxPool<kernel_shape=[2,2], strides=[2,2]>(r1)
  c2 = Conv<pads=[1,1,1,1]>(p1, W2, B2)
  r2 = Relu(c2)
  a = Add(r2, p1)
  g = GlobalAveragePool(a)
  f = Flatten(g)
  y = Gemm<transB=1>(f, G, GB)
}"""

# four Convs (3 -> 32 -> W1's -> W2's -> 32 channels, a 1x1 last), pooling and a Gemm head: layers of
# different sensitivity, for size targets (tests/test_size_target.py, tests/auto/test_size_fit.py)
FOUR_CONVS = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,16,16] x) => (float[N,10] y) {
  a = Conv<pads=[1,1,1,1]>(x, W0, B0)
  ra = Relu(a)
  b = Conv<pads=[1,1,1,1]>(ra, W1, B1)
  rb = Relu(b)
  c = Conv<pads=[1,1,1,1]>(rb, W2, B2)
  rc = Relu(c)
  d = Conv(rc, W3, B3)
  g = GlobalAveragePool(d)
  f = Flatten(g)
  y = Gemm<transB=1>(f, G, GB)
}"""

MLP_NET = """<ir_version: 8, opset_import: ["" : 17]>
mlp_net (float[N,32] x) => (float[N,10] y) {
  h = MatMul(x, M1)
  hb = Add(h, MB1)
  r = Relu(hb)
  y = Gemm<transB=1>(r, G, GB)
}"""


def build(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, array in weights.items():
        array = np.asarray(array)
        array = array.astype(np.float32) if array.dtype.kind == "f" else array.astype(np.int64)
        model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    onnx.checker.check_model(model)
    return model


def conv_net(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    return build(CONV_NET, {
        "W1": rng.normal(0, 0.3, (8, 3, 3, 3)), "B1": rng.normal(0, 0.1, 8),
        "W2": rng.normal(0, 0.2, (8, 8, 3, 3)), "B2": rng.normal(0, 0.1, 8),
        "G": rng.normal(0, 0.3, (10, 8)), "GB": rng.normal(0, 0.1, 10),
    })


def mlp_net(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    return build(MLP_NET, {
        "M1": rng.normal(0, 0.2, (32, 64)), "MB1": rng.normal(0, 0.1, 64),
        "G": rng.normal(0, 0.2, (10, 64)), "GB": rng.normal(0, 0.1, 10),
    })


def depthwise_net(seed: int = 5) -> onnx.ModelProto:
    """A 3x3 Conv, a depthwise 3x3 Conv (group 8) and a MatMul head on [1, 8, 10, 10] inputs."""
    rng = np.random.default_rng(seed)
    return build("""<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,10,10] x) => (float[1,10] y) {
  a = Conv<pads=[1,1,1,1]>(x, W1)
  r = Relu(a)
  d = Conv<group=8, pads=[1,1,1,1]>(r, W2)
  f = Flatten(d)
  y = MatMul(f, W3)
}""", {"W1": rng.normal(0, 0.2, (8, 8, 3, 3)), "W2": rng.normal(0, 0.2, (8, 1, 3, 3)),
       "W3": rng.normal(0, 0.05, (800, 10))})


def feeds(shape: tuple[int, ...], n: int = 8, seed: int = 1, name: str = "x") -> list[dict[str, np.ndarray]]:
    """Real-ish inputs: smooth images (blurred noise) rather than white noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(0, 1, shape).astype(np.float32)
        if len(shape) == 4:
            x = (x + np.roll(x, 1, 2) + np.roll(x, 1, 3) + np.roll(x, (1, 1), (2, 3))) / 2
        out.append({name: x.astype(np.float32)})
    return out
