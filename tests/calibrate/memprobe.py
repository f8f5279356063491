"""Subprocess probe: calibrate a small conv net on N generated samples, print peak RSS (MB).

    python tests/calibrate/memprobe.py METHOD NUM_SAMPLES
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def peak_rss_mb() -> float:
    """Peak RSS of this process since exec (VmHWM). ru_maxrss would also count the parent's RSS
    at fork time, which hides the child's own peak when the parent is larger."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def conv_net(size: int = 96, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, names = [], [], []
    prev, cin = "x", 3
    for i, cout in enumerate((16, 32, 32, 32)):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), f"w{i}")
        b = numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")
        inits += [w, b]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"conv{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        names += [f"conv{i}", f"relu{i}"]
        prev, cin = f"relu{i}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["y"]))
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", cin, 1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, ["x", *names]


def main() -> None:
    method, num = sys.argv[1], int(sys.argv[2])
    from edgeq.calibrate import collect_ranges, load_data
    from edgeq.config import QuantConfig

    model, names = conv_net()

    def feeds():
        rng = np.random.default_rng(1)
        for _ in range(num):
            yield {"x": rng.standard_normal((1, 3, 96, 96)).astype(np.float32)}

    table = collect_ranges(model, names, load_data(feeds(), model), QuantConfig(method=method), progress=False)
    peak_mb = peak_rss_mb()
    print(json.dumps({"peak_mb": peak_mb, "num_samples": table.num_samples, "tensors": len(table)}))


if __name__ == "__main__":
    main()
