"""modelinfo.describe: MACs, parameters, int8 share against figures computed by hand."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rt_nets import conv_net, save

from edgeq.errors import ModelLoadError
from edgeq.modelinfo import describe
from ortutil import run_ort


def test_conv_net_figures():
    info = describe(conv_net()[0])
    # Conv: out [1,8,4,4] = 128 outputs x (3*3*3) = 3456; Gemm: 10 outputs x K=128 = 1280
    assert info.macs_by_op == {"Conv": 3456, "Gemm": 1280}
    assert info.macs == 4736 and info.int8_macs == 0 and info.int8_share == 0.0
    assert info.params == 8 * 27 + 8 + 10 * 128 + 10
    assert info.params_by_dtype == {"float32": {"count": 1514, "bytes": 1514 * 4}}
    assert info.op_histogram == {"Conv": 1, "Relu": 1, "Flatten": 1, "Gemm": 1}
    assert info.opsets == {"ai.onnx": 17}
    assert info.inputs == [{"name": "x", "dtype": "float32", "shape": ["N", 3, 8, 8]}]
    assert info.fixed_dims == {"N": 1}
    assert describe(conv_net()[0], dims={"N": 4}).macs == 4 * 4736


def test_other_compute_ops():
    nodes = [
        helper.make_node("ConvTranspose", ["x", "Wt"], ["ct"]),  # [1,2,4,4] -> [1,3,6,6]
        helper.make_node("MatMul", ["a", "B"], ["mm"]),  # [2,3,4] x [4,6] -> [2,3,6]
        helper.make_node("Gemm", ["g", "C"], ["gm"], transA=1),  # [5,3]^T x [5,7] -> [3,7]
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.ones((2, 2), np.float32))),
        helper.make_node("Add", ["gm", "gm"], ["out"]),
    ]
    inits = [
        numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "Wt"),
        numpy_helper.from_array(np.ones((4, 6), np.float32), "B"),
        numpy_helper.from_array(np.ones((5, 7), np.float16), "C16"),
        numpy_helper.from_array(np.ones((5, 7), np.float32), "C"),
    ]
    graph = helper.make_graph(
        nodes, "ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("g", TensorProto.FLOAT, [5, 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("ct", "mm", "out", "k")],
        inits,
    )
    info = describe(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    # ConvTranspose: |input| 32 x |W[1:]| 27; MatMul: 36 outputs x K 4; Gemm(transA): 21 outputs x K 5
    assert info.macs_by_op == {"ConvTranspose": 32 * 27, "MatMul": 36 * 4, "Gemm": 21 * 5}
    assert info.params_by_dtype["float32"]["count"] == 54 + 24 + 35 + 4  # Constant's 4 included
    assert info.params_by_dtype["float16"] == {"count": 35, "bytes": 70}


def _qdq_model() -> onnx.ModelProto:
    """Q/DQ(int8) -> Conv with DQ(int8) weights: int8; then MatMul with float activations: not."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w2 = rng.integers(-127, 128, (256, 5)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("DequantizeLinear", ["w2q", "ws"], ["w2d"]),
        helper.make_node("MatMul", ["f", "w2d"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(w, "wq"),
        numpy_helper.from_array(w2, "w2q"),
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_qdq_int8_share():
    model = _qdq_model()
    (y,) = run_ort(model, {"x": np.ones((2, 3, 8, 8), np.float32)})  # a real, runnable QDQ graph
    assert y.shape == (2, 5)
    info = describe(model)
    assert info.macs_by_op == {"Conv": 256 * 27, "MatMul": 5 * 256}
    assert info.int8_macs == 256 * 27
    assert info.int8_share == pytest.approx(6912 / 8192)
    assert info.params_by_dtype["int8"] == {"count": 108 + 1280 + 1, "bytes": 108 + 1280 + 1}


def test_integer_ops_count_as_int8():
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (uint8[2, 3, 4] a, uint8[3, 4] c) => (uint8[2, 3, 6] y, int32[3, 2] z) {
            s = Constant<value = float {0.1}>()
            zp = Constant<value = uint8 {128}>()
            b = Constant<value = uint8[4, 6] {1,2,3,4,5,6,1,2,3,4,5,6,1,2,3,4,5,6,1,2,3,4,5,6}>()
            d = Constant<value = uint8[4, 2] {1,2,3,4,5,6,7,8}>()
            y = QLinearMatMul(a, s, zp, b, s, zp, s, zp)
            z = MatMulInteger(c, d)
        }
        """
    )
    run_ort(model, {"a": np.ones((2, 3, 4), np.uint8), "c": np.ones((3, 4), np.uint8)})
    info = describe(model)
    assert info.macs_by_op == {"QLinearMatMul": 36 * 4, "MatMulInteger": 6 * 4}
    assert info.int8_share == 1.0


def test_file_size_and_load_errors(tmp_path):
    path = str(tmp_path / "ext.onnx")
    onnx.save_model(conv_net()[0], path, save_as_external_data=True, location="w.bin", size_threshold=0)
    info = describe(path)
    assert info.file_bytes == (tmp_path / "ext.onnx").stat().st_size + (tmp_path / "w.bin").stat().st_size
    assert info.params == 1514 and info.macs == 4736
    data = open(save(conv_net()[0], tmp_path / "full.onnx"), "rb").read()
    (tmp_path / "bad.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        describe(tmp_path / "bad.onnx")
    with pytest.raises(ModelLoadError, match="does not exist"):
        describe(tmp_path / "none.onnx")
