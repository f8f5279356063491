"""QuantizeEmbeddingsPass: large Gather tables stored int8, rows dequantized after the Gather."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.config import QuantConfig
from edgeq.metrics import sqnr_db
from ortutil import op_types, run_ort
from passes.helpers import quantize_with_numpy_ranges
from passes.nets import build

EMBED = """<ir_version: 8, opset_import: ["" : 17]>
g (int64[2,6] ids) => (float[2,6,16] y) {
  e = Gather(T, ids)
  y = Relu(e)
}"""


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_embedding_table_is_int8_and_rows_are_per_row_exact(mode, rng):
    table = rng.normal(0, 1, (512, 16)) * rng.uniform(0.01, 3, (512, 1))  # rows of very different sizes
    proto = build(EMBED, {"T": table})
    data = [{"ids": rng.integers(0, 512, (2, 6)).astype(np.int64)} for _ in range(4)]
    model, plan = quantize_with_numpy_ranges(proto, data, QuantConfig(mode=mode))
    assert op_types(model) == ["Gather", "Gather", "Cast", "Mul", "Relu"]  # rows, row scales, dequantize
    tables = [v.const_value.numpy() for v in model.graph.initializers.values() if v.const_value.numpy().size == 512 * 16]
    assert len(tables) == 1 and tables[0].dtype == np.int8  # the float table is gone
    for feed in data:
        ref, got = run_ort(proto, feed)[0], run_ort(model, feed)[0]
        assert sqnr_db(ref, got) > 40  # per-row scales: each row within half a step
    gather = next(n for n in plan.weights if n.op_type == "Gather")
    assert plan.weights[gather]["granularity"] == "per-channel:0"
