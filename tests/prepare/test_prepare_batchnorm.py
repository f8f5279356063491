"""FoldBatchNormPass: BN folds into Conv, grouped ConvTranspose and Gemm with the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from edgeq.prepare.fold_batchnorm import FoldBatchNormPass
from ortutil import run_ort


def _bn_inits(rng, c: int, prefix: str = "bn") -> list[onnx.TensorProto]:
    arrays = [
        rng.uniform(0.5, 1.5, c),
        rng.standard_normal(c) * 0.1,
        rng.standard_normal(c) * 0.3,
        rng.uniform(0.3, 2.0, c),
    ]
    return [
        numpy_helper.from_array(a.astype(np.float32), f"{prefix}_{k}")
        for k, a in zip(("scale", "bias", "mean", "var"), arrays)
    ]


def _model(producer: onnx.NodeProto, inits, x_shape, y_shape, extra_nodes=(), outputs=("y",)):
    """x -> producer -> p -> BN -> y (+ extra nodes); outputs all have y's shape."""
    bn = helper.make_node("BatchNormalization", ["p", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["y"], epsilon=1e-3)
    graph = helper.make_graph(
        [producer, bn, *extra_nodes],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, y_shape) for o in outputs],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _fold_and_compare(proto, x, expect_ops):
    model = ir.from_proto(proto)
    p = FoldBatchNormPass()
    p(model)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    assert [n.op_type for n in out.graph.node] == expect_ops
    for got, want in zip(run_ort(out, {"x": x}), run_ort(proto, {"x": x})):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return model, p


def test_conv_bn_folds(rng):
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["p"], pads=[1, 1, 1, 1])
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), *_bn_inits(rng, 6)]
    proto = _model(conv, inits, [2, 3, 5, 5], [2, 6, 5, 5])
    model, p = _fold_and_compare(proto, rng.standard_normal((2, 3, 5, 5)).astype(np.float32), ["Conv"])
    assert model.graph.outputs[0].name == "y"  # BN output name kept
    assert p.notes == ["1 BatchNormalization node(s) folded into Conv/Gemm weights"]


def test_grouped_conv_transpose_bn_folds(rng):  # case 2
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)  # C_in=4, group=2 -> M=6
    conv = helper.make_node("ConvTranspose", ["x", "w"], ["p"], group=2, strides=[2, 2])
    proto = _model(conv, [numpy_helper.from_array(w, "w"), *_bn_inits(rng, 6)], [1, 4, 3, 3], [1, 6, 6, 6])
    _fold_and_compare(proto, rng.standard_normal((1, 4, 3, 3)).astype(np.float32), ["ConvTranspose"])


def test_gemm_bn_folds_with_alpha_beta(rng):  # case 3
    for trans_b in (0, 1):
        w = rng.standard_normal((5, 8) if trans_b else (8, 5)).astype(np.float32)
        c = rng.standard_normal(5).astype(np.float32)
        gemm = helper.make_node("Gemm", ["x", "w", "c"], ["p"], transB=trans_b, alpha=0.7, beta=1.3)
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c"), *_bn_inits(rng, 5)]
        proto = _model(gemm, inits, [3, 8], [3, 5])
        model, _ = _fold_and_compare(proto, rng.standard_normal((3, 8)).astype(np.float32), ["Gemm"])
        gemm_node = model.graph.node(0)
        assert gemm_node.attributes.get_float("alpha") == 1.0


def test_conv_output_with_other_user_is_not_folded(rng):  # case 4
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["p"])
    relu = helper.make_node("Relu", ["p"], ["r"])
    proto = _model(conv, [numpy_helper.from_array(w, "w"), *_bn_inits(rng, 4)], [1, 3, 2, 2], [1, 4, 2, 2],
                   extra_nodes=[relu], outputs=("y", "r"))
    _, p = _fold_and_compare(proto, rng.standard_normal((1, 3, 2, 2)).astype(np.float32),
                             ["Conv", "BatchNormalization", "Relu"])
    assert "could not be folded" in p.notes[0]


def test_shared_weight_is_copied_not_overwritten(rng):
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["p"])
    conv2 = helper.make_node("Conv", ["x", "w"], ["q"])
    proto = _model(conv, [numpy_helper.from_array(w, "w"), *_bn_inits(rng, 4)], [1, 3, 2, 2], [1, 4, 2, 2],
                   extra_nodes=[conv2], outputs=("y", "q"))
    model, _ = _fold_and_compare(proto, rng.standard_normal((1, 3, 2, 2)).astype(np.float32), ["Conv", "Conv"])
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), w)
