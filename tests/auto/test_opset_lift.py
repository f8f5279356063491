"""Auto on a model of MatMuls over rows of tokens below opset 21 searches at opset 21 (per-token
rows by one blocked QuantizeLinear); a float answer, a CNN, a model at 21 and the user's own
--opset keep theirs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import edgeq.auto.latency as latency
from edgeq.auto.opset_lift import LIFT_OPSET, lifted, rows_matmuls
from edgeq.config import QuantConfig
from edgeq.io import as_model

from .nets import build, relu_mlp

TOKENS = """<ir_version: 8, opset_import: ["" : 17]>
tokens (float[N,16,128] x) => (float[N,16,128] y) {
  a = MatMul(x, W1)
  b = Erf(a)
  c = MatMul(b, W2)
  d = Erf(c)
  e = MatMul(d, W3)
  f = Erf(e)
  y = MatMul(f, W4)
}"""


def _tokens(opset: int = 17):
    rng = np.random.default_rng(0)
    model = build(TOKENS.replace('"" : 17', f'"" : {opset}'), {f"W{i}": rng.normal(0, 0.1, (128, 128)) for i in range(1, 5)})
    feeds = [{"x": rng.standard_normal((1, 16, 128)).astype(np.float32)} for _ in range(12)]
    return model, feeds


def test_which_models_are_raised():
    from edgeq.prepare import prepare_model

    def decided(model, config=None):
        given, _ = as_model(model)
        prepared, _ = prepare_model(as_model(model)[0])
        return lifted(given, prepared, config or QuantConfig())

    tokens, _ = _tokens()
    assert rows_matmuls(as_model(tokens)[0]) == 1  # the ranks come from shape inference (prepare)
    assert rows_matmuls(prepare_model(as_model(tokens)[0])[0]) == 4
    config, note = decided(tokens)
    assert config.opset == LIFT_OPSET and "raised from opset 17 to 21 (4 MatMuls" in note and "--opset 17" in note
    assert decided(tokens, QuantConfig(opset=17)) == (QuantConfig(opset=17), "")  # the user's choice
    assert decided(_tokens(21)[0])[1] == ""  # already there
    assert decided(relu_mlp()[0])[1] == ""  # MatMuls of 2-D inputs


@pytest.mark.parametrize("opset", [None, 17])
def test_the_answer_is_at_opset_21_unless_told(monkeypatch, opset):
    from edgeq.auto import auto_quantize
    from ortutil import int8_pays_timing, run_ort

    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    model, feeds = _tokens()
    config = QuantConfig(opset=opset) if opset else None
    result = auto_quantize(model, feeds, min_sqnr=25.0, progress=False, config=config)
    auto = result.report["auto"]
    assert auto["verdict"].startswith("int8"), auto["verdict"]
    got = result.model.opset_imports[""]
    assert got == (LIFT_OPSET if opset is None else 17), (got, auto["notes"])
    assert any("raised from opset 17 to 21" in n for n in auto["notes"]) == (opset is None)
    assert {layer["precision"] for layer in auto["layers"]} <= {"int8-dynamic", "int8-per-token"}, auto["layers"]
    for feed in feeds[:3]:  # it runs, and stays near fp32
        a, b = run_ort(model, feed)[0], run_ort(result.model, feed)[0]
        assert 10 * np.log10(np.sum(a * a) / np.sum((a - b) ** 2)) > 20


def test_a_float_answer_keeps_the_models_opset(monkeypatch):
    from edgeq.auto import auto_quantize
    from ortutil import int8_pays_timing

    def fp32_wins(models, feed, **kw):
        times = int8_pays_timing(models, feed, **kw)
        return {k: (0.5 if k in ("fp32", "original") else v + 10.0) for k, v in times.items()}

    monkeypatch.setattr(latency, "measure", fp32_wins)
    model, feeds = _tokens()
    result = auto_quantize(model, feeds, min_sqnr=25.0, progress=False)
    assert result.report["auto"]["verdict"].startswith("fp32")
    assert result.model.opset_imports[""] == 17 and isinstance(result.model, ir.Model)
