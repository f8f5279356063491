"""Small models built in code for the runtime and CLI tests, with numpy references."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_net(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x[N,3,8,8] -> Conv(8, 3x3, stride 2, pad 1) -> Relu -> Flatten -> Gemm(10) -> y[N,10]."""
    rng = np.random.default_rng(seed)
    weights = {
        "W": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
        "B": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "G": (rng.standard_normal((10, 128)) * 0.1).astype(np.float32),
        "GB": (rng.standard_normal(10) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "G", "GB"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, weights


def conv_net_reference(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """numpy float64 forward pass of conv_net."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))[:, :, ::2, ::2]  # N,C,4,4,3,3
    conv = np.einsum("nchwij,ocij->nohw", win, w["W"].astype(np.float64)) + w["B"][None, :, None, None]
    relu = np.maximum(conv, 0).reshape(x.shape[0], -1)
    return relu @ w["G"].T.astype(np.float64) + w["GB"]


def two_input_add() -> onnx.ModelProto:
    """a[N,4] float, b[N,4] float, ids[N] int64 -> y = a + b, n = ids (two inputs share dim N)."""
    return onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] a, float[N, 4] b, int64[N] ids) => (float[N, 4] y, int64[N] n) {
            y = Add(a, b)
            n = Identity(ids)
        }
        """
    )


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)
