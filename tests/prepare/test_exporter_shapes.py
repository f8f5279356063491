"""Input shapes as real exporters write them: ``dim_value`` -1 or 0, ``dim_param``, an empty
dim, no shape at all, and a scalar int64 input (a sample rate). None of them is refused, and
the quantized model takes other sizes where the original meant "unknown"
(edgeq/prepare/unknown_dims.py, edgeq/calibrate/data.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeq
from ortutil import op_types, run_ort


def _net(first, *, shape: bool = True) -> onnx.ModelProto:
    """x: float[first, 3, 8, 8], sr: int64 scalar; y = GAP(Conv(Relu(Conv(x)))) * sr / 16000."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    if shape:
        dims = x.type.tensor_type.shape.dim
        for d in [first, 3, 8, 8]:
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            elif d is not None:
                dim.dim_value = d
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
               for n, s in (("W1", (8, 3, 3, 3)), ("W2", (8, 8, 3, 3)))]
    weights.append(numpy_helper.from_array(np.array(1 / 16000, np.float32), "inv"))
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Mul", ["srf", "inv"], ["k"], name="scale"),
             helper.make_node("Mul", ["f", "k"], ["y"], name="out")]
    graph = helper.make_graph(nodes, "exported", [x, sr], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _feeds(n: int, batch: int = 1, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (batch, 3, 8, 8)).astype(np.float32), "sr": np.array(16000, np.int64)}
            for _ in range(n)]


@pytest.mark.parametrize("first", [-1, 0, "batch", "", None], ids=["minus1", "zero", "dim_param", "empty", "unset"])
def test_static_quantize_takes_exporter_dims(first):
    proto = _net(first)
    result = edgeq.quantize(proto, edgeq.QuantConfig(), _feeds(8), progress=False)
    assert "QuantizeLinear" in op_types(result.model)
    for feed in _feeds(2, batch=2):  # the batch the exporter left open
        got, ref = run_ort(result.model, feed)[0], run_ort(_net(-1), feed)[0]
        assert got.shape == ref.shape == (2, 8)
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99


def test_no_shape_at_all_and_auto_mode():
    from edgeq.calibrate import model_input_specs

    proto = _net(0, shape=False)
    assert [s.shape for s in model_input_specs(proto)] == [None, ()]
    result = edgeq.quantize(_net(0), data=_feeds(12), progress=False)  # auto: no "dim 0 must be 0"
    out = run_ort(result.model, _feeds(1, batch=3)[0])[0]
    assert out.shape == (3, 8)


def test_unknown_dims_pass_names_each_dim():
    import onnx_ir as ir

    from edgeq.prepare.unknown_dims import UnknownDimsPass

    model = ir.from_proto(_net(0))
    result = UnknownDimsPass()(model)
    dims = model.graph.inputs[0].shape.dims
    assert result.modified and isinstance(dims[0], ir.SymbolicDim) and dims[1:] == (3, 8, 8)
    assert not UnknownDimsPass()(ir.from_proto(_net("batch"))).modified


def test_fixed_dims_are_still_checked():
    from edgeq.errors import DataError

    with pytest.raises(DataError, match="dim 1 must be 3, not 4"):
        edgeq.quantize(_net(-1), edgeq.QuantConfig(), [{"x": np.zeros((1, 4, 8, 8), np.float32),
                                                         "sr": np.array(16000, np.int64)}], progress=False)


def _question_marks() -> onnx.ModelProto:
    """x: float[-1, 3, ?, ?], as Paddle2ONNX writes an image input of any height and width."""
    proto = _net(-1)
    for dim in proto.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.Clear()
        dim.dim_param = "?"
    out = proto.graph.output[0].type.tensor_type.shape.dim
    out.add().dim_param, out.add().dim_value = "?", 8  # the checker wants an output's shape
    return proto


@pytest.mark.parametrize("mode", ["static", "auto"])
def test_question_mark_dims_are_not_tied(mode):
    """Two dims named "?" may differ (onnxruntime lets them): 8 high, 16 wide is a valid feed."""
    from edgeq.calibrate import model_input_specs

    assert model_input_specs(_question_marks())[0].shape == (None, 3, None, None)
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.normal(0, 1, (1, 3, 8, 16)).astype(np.float32), "sr": np.array(16000, np.int64)}
             for _ in range(12)]
    config = edgeq.QuantConfig(mode=mode)
    result = edgeq.quantize(_question_marks(), config, feeds, progress=False)
    if mode == "static":  # auto may answer with the model as given (fp32), "?" and all
        dims = [str(d) for d in result.model.graph.inputs[0].shape.dims[2:]]
        assert "QuantizeLinear" in op_types(result.model)
        assert "?" not in dims and dims[0] != dims[1], dims  # each its own name in the written model
    feed = {"x": rng.normal(0, 1, (2, 3, 12, 20)).astype(np.float32), "sr": np.array(16000, np.int64)}
    got, ref = run_ort(result.model, feed)[0], run_ort(_question_marks(), feed)[0]
    assert got.shape == ref.shape == (2, 8)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99
