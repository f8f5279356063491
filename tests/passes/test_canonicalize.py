"""CanonicalizePass: ReduceMean over H, W becomes GlobalAveragePool (which has an int8 kernel)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgeq.passes.canonicalize import CanonicalizePass
from ortutil import op_types, run_ort
from passes.nets import build

MEAN_18 = """<ir_version: 8, opset_import: ["" : 18]>
g (float[2,4,5,6] x) => (float[2,4{shape}] y) {{
  y = ReduceMean<keepdims={keep}>(x, axes)
}}"""

MEAN_13_LAST = """<ir_version: 8, opset_import: ["" : 13]>
g (float[2,4,5,6] x) => (float[2,4,5,1] y) {
  y = ReduceMean<axes=[-1]>(x)
}"""


@pytest.mark.parametrize("keep, shape, ops", [(1, ",1,1", ["GlobalAveragePool"]),
                                               (0, "", ["GlobalAveragePool", "Flatten"])])
def test_spatial_reduce_mean_becomes_global_average_pool(keep, shape, ops, rng):
    proto = build(MEAN_18.format(keep=keep, shape=shape), {"axes": np.array([2, 3])})
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    assert CanonicalizePass()(model).modified
    assert op_types(model) == ops and model.graph.outputs[0].name == "y"
    feed = {"x": rng.normal(size=(2, 4, 5, 6)).astype(np.float32)}
    np.testing.assert_allclose(run_ort(model, feed)[0], run_ort(proto, feed)[0], rtol=1e-5, atol=1e-6)


def test_other_reductions_are_left_alone():
    model = ir.from_proto(onnx.shape_inference.infer_shapes(build(MEAN_13_LAST, {})))
    assert not CanonicalizePass()(model).modified and op_types(model) == ["ReduceMean"]
