"""auto/scores.py: the score-map guard (sigmoid outputs keep what a threshold keeps)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeq.auto.scores import THRESHOLDS, ScoreGuard, _sigma, estimate_iou, score_outputs
from edgeq.auto.top1 import default_guard
from passes.nets import build


def _model(text: str, weights: dict | None = None) -> ir.Model:
    return ir.from_proto(build(text, weights or {}))


HEAD = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,4,4] x) => (float[1,6,16] y) {
  reg = Conv(x, WR)
  obj = Conv(x, WO)
  so = Sigmoid(obj)
  cls = Conv(x, WC)
  sc = Sigmoid(cls)
  cat = Concat<axis=1>(reg, so, sc)
  sh = Constant<value=int64[3] {1,6,16}>()
  y = Reshape(cat, sh)
}"""


def _head() -> ir.Model:
    rng = np.random.default_rng(0)
    return _model(HEAD, {"WR": rng.normal(0, 1, (4, 8, 1, 1)), "WO": rng.normal(0, 1, (1, 8, 1, 1)),
                         "WC": rng.normal(0, 1, (1, 8, 1, 1))})


def test_scores_mixed_with_boxes_are_marked_by_one_run():
    feed = {"x": np.random.default_rng(1).normal(0, 1, (1, 8, 4, 4)).astype(np.float32)}
    masks = score_outputs(_head(), feed)
    assert list(masks) == ["y"]
    want = np.zeros((1, 6, 16), bool)
    want[:, 4:] = True  # channels 4 and 5: the two sigmoids; 0-3 the box regression
    np.testing.assert_array_equal(masks["y"], want)
    assert score_outputs(_head(), None) == {}  # mixed, and nothing to run: no guard on it


@pytest.mark.parametrize(("body", "found"), [
    ("y = Sigmoid(x)", True),  # a DB text map, a speech probability
    ("s = Sigmoid(x)\n  y = Mul(x, s)", False),  # SiLU: a gate, not a score
    ("s = Sigmoid(x)\n  t = Transpose<perm=[0,2,3,1]>(s)\n  y = Identity(t)", True),
    ("s = Sigmoid(x)\n  y = Relu(s)", False),
    ("y = Relu(x)", False),
])
def test_which_outputs_hold_scores(body, found):
    text = f"""<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,4,4] x) => (float y) {{
  {body}
}}"""
    assert score_outputs(_model(text)) == ({"y": None} if found else {})


def test_estimate_counts_close_calls_not_only_crossings():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, 20000)
    assert estimate_iou(ref, ref, 0.5) == 1.0
    # logit noise of 0.2: about 3% of the scores are within one sigma of the threshold
    logit = np.log(ref) - np.log1p(-ref)
    got = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.2, ref.shape))))
    counted = ((ref > 0.5) & (got > 0.5)).sum() / ((ref > 0.5) | (got > 0.5)).sum()
    estimated = estimate_iou(ref, got, 0.5)
    assert counted - 0.03 < estimated <= counted + 0.005 and estimated < 0.99  # errs safe, as top1.py's
    # the same noise on scores far from the threshold: nothing crosses, nothing close
    far = np.where(ref > 0.5, 0.99, 0.01)
    assert estimate_iou(far, far * (1 + rng.normal(0, 1e-3, far.shape)), 0.5) > 0.999
    assert estimate_iou(ref, np.full_like(ref, np.nan), 0.5) == 0.0


def test_estimate_reads_the_noise_near_the_threshold():
    """Noise of one output step in probability terms (as an int8 sigmoid output has) is wide in
    logit terms near 0 and 1 and narrow near the threshold: the estimate reads the noise there,
    where a single Gaussian over all scores is far too cautious."""
    rng = np.random.default_rng(3)
    ref = np.concatenate([rng.uniform(0.0, 0.05, 150000), rng.uniform(0, 1, 20000)])
    got = np.clip(ref + rng.normal(0, 0.004, ref.shape), 1e-4, 1 - 1e-4)
    for t in THRESHOLDS:
        counted = ((ref > t) & (got > t)).sum() / ((ref > t) | (got > t)).sum()
        near = estimate_iou(ref, got, t)
        gaussian = estimate_iou(ref, got, t, sigma=_sigma(ref, got))
        assert counted - 0.005 < near <= counted + 0.005
        assert gaussian < near - 0.01  # what the estimate was before


def test_the_guard_reads_only_the_scores_of_a_mixed_output():
    mask = np.zeros((1, 6, 16), bool)
    mask[:, 4:] = True
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 1, (8, 6, 16))  # eight samples on the batch axis
    got = ref.copy()
    got[:, :4] += rng.normal(0, 5.0, (8, 4, 16))  # box coordinates moved a lot: not scores
    guard = ScoreGuard({"y": mask})
    assert guard({"y": ref}, {"y": got}) == 1.0
    got[:, 4:] = 1.0 - got[:, 4:]  # every score flipped: noise so large that each is a coin toss
    assert guard({"y": ref}, {"y": got}) < 0.4
    assert len(THRESHOLDS) >= 2


def test_default_guard_prefers_class_scores_and_can_be_turned_off():
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8] x) => (float[1,8] y) {
  y = Softmax(x)
}"""
    metric, goal, note = default_guard(_model(text), None, None, 0.995, 0.95)
    assert type(metric).__name__ == "Top1Guard" and goal == 0.995
    sig = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,4,4] x) => (float y) {
  y = Sigmoid(x)
}"""
    metric, goal, note = default_guard(_model(sig), None, None, 0.995, 0.95)
    assert isinstance(metric, ScoreGuard) and goal == 0.95 and "--min-iou 0" in note
    assert default_guard(_model(sig), None, None, 0.995, 0.0) == (None, None, None)
    assert default_guard(_model(sig), "m:f", 0.5, 0.995, 0.95) == ("m:f", 0.5, None)


MULTI_LABEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N,64] x) => (float[N,200] y) {
  h = Gemm<transB=1>(x, W1, B1)
  r = Relu(h)
  z = Gemm<transB=1>(r, W2, B2)
  y = Sigmoid(z)
}"""


def test_auto_with_min_iou_keeps_what_a_threshold_keeps(monkeypatch):
    """A 200-label sigmoid head: with --min-iou the guard is the target's metric, a note names the
    output, the gate gives its value, and the answer keeps the sets above 0.25-0.5 on unseen
    inputs; --min-iou 0 turns the guard off."""
    import edgeq
    from edgeq.auto import latency
    from edgeq.config import QuantConfig
    from ortutil import int8_pays_timing, run_ort

    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    rng = np.random.default_rng(0)
    proto = build(MULTI_LABEL, {"W1": rng.normal(0, 0.2, (128, 64)), "B1": rng.normal(0, 0.1, 128),
                                "W2": rng.normal(0, 0.1, (200, 128)), "B2": np.zeros(200)})
    calib = [{"x": np.random.default_rng([1, i]).normal(0, 1, (1, 64)).astype(np.float32)} for i in range(32)]
    unseen = [{"x": np.random.default_rng([2, i]).normal(0, 1, (1, 64)).astype(np.float32)} for i in range(200)]
    ref = np.concatenate([run_ort(proto, f)[0] for f in unseen])

    def worst_iou(result) -> float:
        got = np.concatenate([run_ort(ir.to_proto(result.model), f)[0] for f in unseen])
        return min(((ref > t) & (got > t)).sum() / max(1, ((ref > t) | (got > t)).sum()) for t in THRESHOLDS)

    guarded = edgeq.quantize(proto, QuantConfig(mode="auto"), calib, progress=False)  # the default: 0.95
    auto = guarded.report["auto"]
    assert auto["target"]["min_score"] == 0.95 and auto["target"]["metric"].startswith("IoU of scores")
    assert any("y holds sigmoid scores" in n for n in auto["notes"])
    assert worst_iou(guarded) >= 0.95
    assert auto["verdict"].startswith("fp32") or auto["gate"]["metric"] >= 0.95
    off = edgeq.quantize(proto, QuantConfig(mode="auto", min_iou=0.0), calib, progress=False)
    assert off.report["auto"]["target"]["metric"] is None
