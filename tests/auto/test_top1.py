"""Auto's default guard for classifiers: top-1 kept, estimated from margins (edgeq/auto/top1.py)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import edgeq
from edgeq.auto.top1 import class_outputs, estimate
from edgeq.config import QuantConfig
from edgeq.errors import UsageError
from ortutil import int8_pays_timing, run_ort

from .nets import build

CLOSE_CALLS = """<ir_version: 8, opset_import: ["" : 17]>
close_calls (float[N,64] x) => (float[N,200] logits) {
  h = Gemm<transB=1>(x, W1, B1)
  r = Relu(h)
  h2 = Gemm<transB=1>(r, W2, B2)
  r2 = Relu(h2)
  logits = Gemm<transB=1>(r2, W3, B3)
}"""


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def test_two_classes_give_the_normal_tail_of_margin_over_noise():
    ref = np.array([[2.0, 0.0]])
    got = ref + np.array([[-0.5, 0.5]])  # rms 0.5: the difference of two such noises spreads sqrt(2) * 0.5
    assert estimate(ref, got) == pytest.approx(1.0 - _phi(-2.0 / (math.sqrt(2.0) * 0.5)), rel=1e-9)
    assert estimate(ref, ref) == 1.0
    assert estimate(np.array([[10.0, 0.0, 0.0]]), np.array([[10.01, 0.0, -0.01]])) == 1.0  # 700 sigma away


def test_a_changed_top_class_counts_at_least_half_and_broken_outputs_nothing():
    ref = np.array([[1.0, 0.0], [1.0, 0.0]])
    got = np.array([[0.0, 1.0], [1.0, 0.0]])  # the first row flipped
    assert estimate(ref, got) <= 0.75
    assert estimate(ref, np.full_like(ref, np.nan)) == 0.0
    assert estimate(ref, ref[:1]) == 0.0  # a shape fp32 did not give


def test_estimate_sees_close_calls_that_did_not_flip_on_these_samples():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (4000, 100))
    got = ref + rng.normal(0, 0.05, ref.shape)
    counted = float(np.mean(ref.argmax(1) == got.argmax(1)))
    few = [estimate(ref[i : i + 32], got[i : i + 32]) for i in range(0, 4000, 32)]
    # over many small sets: close to the share counted on all of them, erring on the safe side (the
    # union bound over close classes and the floor for a changed class count a little more)
    assert counted - 0.03 < float(np.mean(few)) <= counted + 0.002
    # and steadier than counting on 32 samples: counts are multiples of 1/32
    assert np.std(few) < np.std([np.mean(ref[i : i + 32].argmax(1) == got[i : i + 32].argmax(1))
                                 for i in range(0, 4000, 32)])


def _model(text: str) -> ir.Model:
    return ir.serde.deserialize_model(onnx.parser.parse_model(text))


@pytest.mark.parametrize(("body", "out", "found"), [
    ("y = Gemm<transB=1>(x, W, B)", "float[N,10] y", True),
    ("m = MatMul(x, W)\n  y = Add(m, B)", "float[N,10] y", True),
    ("m = MatMul(x, W)\n  y = Softmax<axis=-1>(m)", "float[N,10] y", True),
    ("m = MatMul(x, W)\n  y = Softmax<axis=0>(m)", "float[N,10] y", False),  # not over the classes
    ("m = Gemm<transB=1>(x, W, B)\n  y = Relu(m)", "float[N,10] y", False),
    ("y = Gemm<transB=1>(x, W1, B1)", "float[N,1] y", False),  # one score: nothing to rank
    # a softmax written out (Magika's jax2tf export): Div(Exp(t), broadcast ReduceSum(Exp(t)))
    ("m = MatMul(x, W)\n  e = Exp(m)\n  a = Constant<value = int64[1] {1}>()\n  s = ReduceSum<keepdims=0>(e, a)\n"
     "  k = Unsqueeze(s, a)\n  y = Div(e, k)", "float[N,10] y", True),
    ("m = MatMul(x, W)\n  e = Exp(m)\n  y = Div(e, m)", "float[N,10] y", False),  # not over its own sum
])
def test_class_outputs_are_linear_heads_and_softmaxes(body, out, found):
    text = f"""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N,16] x) => ({out}) <float[10,16] W1, float[10] B1, float[16,10] W, float[10] B> {{
      {body}
    }}"""
    text = text.replace("<float[10,16] W1, float[10] B1, float[16,10] W, float[10] B>",
                        "<float[1,16] W1, float[1] B1, float[16,10] W, float[10] B>" if "N,1]" in out else
                        "<float[10,16] W1, float[10] B1, float[16,10] W, float[10] B>")
    if "Gemm<transB=1>(x, W, B)" in body:
        text = text.replace("float[16,10] W", "float[10,16] W")
    assert class_outputs(_model(text)) == (["y"] if found else [])


def _close_calls_net() -> onnx.ModelProto:
    """A 200-class MLP whose top classes are close: int8 meets 30 dB and changes ~4% of answers."""
    rng = np.random.default_rng(0)
    return build(CLOSE_CALLS, {"W1": rng.normal(0, 0.18, (128, 64)), "B1": rng.normal(0, 0.1, 128),
                               "W2": rng.normal(0, 0.12, (128, 128)), "B2": rng.normal(0, 0.1, 128),
                               "W3": rng.normal(0, 0.1, (200, 128)), "B3": np.zeros(200)})


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    return [{"x": np.random.default_rng([seed, i]).normal(0, 1, (1, 64)).astype(np.float32)} for i in range(n)]


def test_auto_keeps_a_classifiers_answers_not_only_its_sqnr(monkeypatch):
    from edgeq.auto import latency

    monkeypatch.setattr(latency, "measure", int8_pays_timing)  # tests check fidelity, not timings
    model, calib, unseen = _close_calls_net(), _feeds(32, 1), _feeds(300, 2)
    ref = np.concatenate([run_ort(model, f)[0] for f in unseen])

    def agreement(result) -> float:
        got = np.concatenate([run_ort(result.model, f)[0] for f in unseen])
        return float(np.mean(ref.argmax(1) == got.argmax(1)))

    # 28 dB: what this net's int8 meets with 7-bit weights (conftest); 30 dB with 8-bit ones
    off = edgeq.quantize(model, QuantConfig(mode="auto", min_top1=0.0, min_sqnr=28.0), calib, progress=False)
    assert off.report["auto"]["verdict"].startswith("int8")  # the SQNR target met ...
    assert agreement(off) < 0.98  # ... with answers changed: what the guard is for
    guarded = edgeq.quantize(model, None, calib, progress=False)  # the default, as users run it
    auto = guarded.report["auto"]
    assert auto["target"]["min_score"] == 0.995 and auto["target"]["metric"].startswith("top-1 agreement")
    assert any("logits holds class scores" in n for n in auto["notes"])
    assert agreement(guarded) >= 0.995
    gate = auto["gate"]
    assert auto["verdict"].startswith("fp32") or gate["metric"] >= 0.995
    assert "top-1 agreement" in auto["verdict"] or gate.get("metric", 1.0) >= 0.995
    if gate.get("metric") is not None:  # the report prints it as the CLI does, not rounded to "0.99"/"1.00"
        from edgeq.auto.render import auto_markdown

        assert f"top-1 agreement with fp32 (estimated from margins) {gate['metric']:.4f}" in auto_markdown(guarded.report)


def test_min_top1_is_a_share():
    with pytest.raises(UsageError, match="min_top1 must be between 0 and 1"):
        QuantConfig(mode="auto", min_top1=1.5)
