"""Power-of-two weights (``--mode static --weights pot``, quantize_weights.py (9)): int8 levels 0
and +-2^e, run by onnxruntime as int8 weights and by the integer reference with shifts
(reference/shifts.py), the two within one LSB, and the shift path equal to the multiply path."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir
import pytest

import edgeq
from edgeq.config import QuantConfig
from edgeq.errors import UsageError
from edgeq.passes.quantize_weights import pot_levels
from edgeq.reference import export_params, run, shifts
from ortutil import run_ort
from qoperator.harness import assert_within_lsb, output_scales
from qoperator.qdq import with_weights
from reference.test_reference import CONV_NET


def _quantized(rng):
    proto = with_weights(CONV_NET, rng)
    feeds = [{"x": rng.standard_normal((4, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    config = QuantConfig(mode="static", weights="pot", format="qoperator", integer_only=True, reduce_range=False)
    return proto, feeds, edgeq.quantize(proto, config, feeds, progress=False)


def test_levels_are_the_nearest_powers_of_two():
    w = np.array([[0.0, 0.3, 0.6, 1.4, 1.6, 3.0, 5.9, 6.1, 70.0, -3.1]], np.float32)
    np.testing.assert_array_equal(pot_levels(w, np.ones(1, np.float32), 0, 64), [[0, 0, 1, 1, 2, 2, 4, 8, 64, -4]])


def test_pot_weights_run_by_shifts_in_the_reference(rng, monkeypatch):
    proto, feeds, result = _quantized(rng)
    model = onnx_ir.to_proto(result.model)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weighted = [(n, 3) for n in model.graph.node if n.op_type in ("QLinearConv", "QGemm")]
    assert len(weighted) == 5  # four convolutions (the depthwise one too) and the head
    for node, index in weighted:
        levels = np.abs(inits[node.input[index]].astype(np.int64))
        assert set(np.unique(levels)) <= {0, 1, 2, 4, 8, 16, 32, 64}
    assert {row["weights"]["bits"] for row in result.report["quantized"] if "weights" in row} == {"pot"}
    layers = [layer for layer in export_params(model)["layers"] if layer.get("weights") == "pot"]
    assert len(layers) == 4 and all(set(layer["exponents"]) <= set(range(7)) for layer in layers)  # the requantizing ones
    feed = feeds[0]
    by_shifts = run(model, feed)["y"]
    assert_within_lsb([by_shifts], run_ort(model, feed), output_scales(model))
    monkeypatch.setattr("edgeq.reference.ops_linear.planes", lambda w: None)  # the multiply path
    np.testing.assert_array_equal(run(model, feed)["y"], by_shifts)


def test_planes_refuse_other_levels_and_static_pot_needs_static_mode():
    assert shifts.planes(np.array([0, 3, -4])) is None and shifts.planes(np.zeros(3)) is None
    assert [e for e, _ in shifts.planes(np.array([[1, -2], [0, 8]]))] == [0, 1, 3]
    with pytest.raises(UsageError, match="pot also static"):
        QuantConfig(mode="dynamic", weights="pot")
    assert QuantConfig(mode="static", weights="pot").weights == "pot"
