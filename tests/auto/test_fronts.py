"""auto/fronts.py: after per-token MatMuls meet the target, inputs go back to one scale per tensor
where the target allows, least harm per unit of work first."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ortutil import op_types
from passes.nets import build


def _outlier_tokens(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Most tokens small, every 7th one 50x larger: one scale per tensor spends its levels on them."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32)
    a.reshape(-1, shape[-1])[::7] *= 50.0
    return a


def _net():
    """MatMul of an input with outlier tokens (per token needed), LayerNorm (every token
    normalised), MatMul of that (one scale per tensor does), LayerNorm (tokens count alike)."""
    text = """<ir_version: 10, opset_import: ["" : 17]>
g (float[1,128,128] a) => (float y) {
  h = MatMul(a, W1)
  n = LayerNormalization<axis=-1>(h, S, Z)
  m = MatMul(n, W2)
  y = LayerNormalization<axis=-1>(m, S, Z)
}"""
    rng = np.random.default_rng(5)
    proto = build(text, {"W1": rng.normal(0, 128 ** -0.5, (128, 128)), "W2": rng.normal(0, 128 ** -0.5, (128, 128)),
                         "S": np.ones(128), "Z": np.zeros(128)})
    for i, node in enumerate(proto.graph.node):
        node.name = f"{node.op_type.lower()}_{i}"
    return proto


def test_front_harm_ranks_outlier_tokens_last():
    """(2) The LayerNorm output loses little with one scale per tensor; the input with outlier
    tokens loses most of its levels."""
    from edgeq.auto.calib import calibrate_once
    from edgeq.auto.fronts import front_harm

    model = ir.from_proto(_net())
    feeds = [{"a": _outlier_tokens((1, 128, 128), s)} for s in range(4)]
    cal = calibrate_once(model, feeds, progress=False)
    fronts = {}
    for node in model.graph:
        if node.op_type == "MatMul":
            fronts[node.inputs[0].name] = [node]
    harm = front_harm(model, fronts, feeds, cal, True)
    assert set(harm) == {"a", "n"}
    assert harm["a"][1] == harm["n"][1] == 128 * 128  # elements per sample: the work each saves
    # one scale per tensor on outlier tokens: most of the output's power is noise; on the LayerNorm output little
    assert harm["a"][0] > 100 * max(harm["n"][0], 1e-6) and harm["n"][0] < 1e-3


def test_auto_puts_the_layer_norm_output_back_per_tensor():
    """search.py (2): per-token kept (per tensor misses on the outlier tokens), then the
    LayerNorm output's MatMul goes back to one scale per tensor and still meets the target, the
    outlier-token input's does not; both configurations are timed."""
    from edgeq.auto import auto_quantize

    proto = _net()
    feeds = [{"a": _outlier_tokens((1, 128, 128), s)} for s in range(12)]
    result = auto_quantize(proto, feeds, eval_data=feeds[8:], progress=False)
    auto = result.report["auto"]
    step = next(r for r in auto["repairs"] if r["repair"] == "per-token dynamic MatMuls")
    assert step["kept"], step
    tried = {c["name"]: c for c in auto["configurations"]}
    mixed = tried["int8, 1 of 2 MatMul inputs per tensor, the rest per token"]
    assert mixed["meets_target"], tried
    assert "int8, 2 of 2 MatMul inputs per tensor, the rest per token" not in tried  # the binary search stopped at 1
    if auto["chosen"] == mixed["name"] and not auto["verdict"].startswith("fp32"):
        precisions = {e["node"]: e["precision"] for e in auto["layers"]}
        assert precisions == {"matmul_0": "int8-per-token", "matmul_2": "int8-dynamic"}
        assert "DynamicQuantizeMatMul" in op_types(result.model) and "MatMulIntegerToFloat" in op_types(result.model)
