"""Auto mode on patterns met in architectures edgeq had not seen (bench/unseen_sweep.py: random-weight
MobileViT), as small graphs: each crashed `edgeq quantize --calib` before its fix."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgeq.metrics import sqnr_db
from ortutil import op_types, run_ort

# MobileViT's classifier pools with ReduceMean(keepdims=0): CanonicalizePass turns it into
# GlobalAveragePool -> Flatten, whose new middle tensor auto's calibration (run before
# CanonicalizePass) had never seen: "the ranges table lacks 1 tensor(s) ... 'val_0'".
POOL_HEAD = """<ir_version: 8, opset_import: ["" : 17]>
head (float[1,8,12,12] x) => (float[1,5] y) {
  c = Conv<pads=[1,1,1,1]>(x, W, B)
  r = Relu(c)
  c2 = Conv<pads=[1,1,1,1]>(r, W2, B2)
  r2 = Relu(c2)
  p = ReduceMean<axes=[2,3], keepdims=0>(r2)
  y = Gemm<transB=1>(p, G, GB)
}"""

# A random-weight MobileViT had an activation of magnitude ~1e-37: the histogram's
# num_bins / range overflowed float32 to inf and np.bincount got negative bins.
TINY = """<ir_version: 8, opset_import: ["" : 17]>
tiny (float[1,8,12,12] x) => (float[1,8,12,12] y) {
  c = Conv<pads=[1,1,1,1]>(x, W, B)
  t = Mul(c, S)
  c2 = Conv<pads=[1,1,1,1]>(t, W2, B2)
  y = Add(c, c2)
}"""


def _model(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for node in model.graph.node:
        node.name = node.output[0]
    for name, array in weights.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(array, np.float32), name))
    onnx.checker.check_model(model)
    return model


def _conv_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"W": rng.normal(0, 0.2, (8, 8, 3, 3)), "B": rng.normal(0, 0.1, 8),
            "W2": rng.normal(0, 0.2, (8, 8, 3, 3)), "B2": rng.normal(0, 0.1, 8)}


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (1, 8, 12, 12)).astype(np.float32)} for _ in range(n)]


def _check(proto: onnx.ModelProto, result, feeds) -> float:
    auto = result.report["auto"]
    assert auto["verdict"] and auto["chosen"] in [c["name"] for c in auto["configurations"]]
    ref = np.concatenate([run_ort(proto, f)[0] for f in feeds])
    got = np.concatenate([run_ort(result.model, f)[0] for f in feeds])
    return sqnr_db(ref, got)


def test_auto_on_reducemean_keepdims0_pool_head():
    from edgeq.auto import auto_quantize

    rng = np.random.default_rng(0)
    proto = _model(POOL_HEAD, {**_conv_weights(rng), "G": rng.normal(0, 0.3, (5, 8)), "GB": rng.normal(0, 0.1, 5)})
    result = auto_quantize(proto, _feeds(16, 0), eval_data=_feeds(8, 3), min_sqnr=30.0, progress=False)
    assert _check(proto, result, _feeds(6, 9)) >= 25.0
    if not result.report["auto"]["verdict"].startswith("fp32"):
        model = result.model if isinstance(result.model, ir.Model) else ir.from_proto(result.model)
        assert "ReduceMean" not in op_types(model)  # pooled as GlobalAveragePool -> Flatten


def test_histogram_observer_on_a_tensor_of_magnitude_1e_37():
    from edgeq.calibrate.observers import HistogramObserver

    obs = HistogramObserver("tiny")
    values = (np.random.default_rng(0).normal(0, 1, 4096) * 5e-37).astype(np.float32)
    obs.update(values)
    obs.update(values * 0.5)
    counts, width = obs.signed_histogram()
    assert counts.sum() == 2 * values.size and width > 0
    assert obs.max == pytest.approx(float(values.max()))


def test_auto_on_a_model_with_a_1e_37_activation():
    from edgeq.auto import auto_quantize

    rng = np.random.default_rng(1)
    proto = _model(TINY, {**_conv_weights(rng), "S": np.asarray(1e-37)})
    result = auto_quantize(proto, _feeds(16, 0), eval_data=_feeds(8, 3), min_sqnr=30.0, progress=False)
    assert _check(proto, result, _feeds(6, 9)) >= 25.0
