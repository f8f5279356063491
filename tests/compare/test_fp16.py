"""convert_fp16 on a conv net and a transformer-like graph: ORT CPU fidelity and structure."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from compare.graphs import conv_feeds, conv_net, transformer_block, transformer_feeds
from edgeq.metrics import sqnr_db
from edgeq.passes.fp16 import DEFAULT_KEEP_FP32, Float16Pass, convert_fp16
from ortutil import op_types, run_ort

F16 = ir.DataType.FLOAT16
F32 = ir.DataType.FLOAT


def _check_casts_only_at_boundaries(model: ir.Model, keep: frozenset[str]) -> None:
    """Every Cast reads a graph input, writes a graph output, or borders a node kept in fp32."""
    graph = model.graph
    for node in graph:
        if node.op_type != "Cast":
            continue
        src = node.inputs[0]
        out = node.outputs[0]
        producer = src.producer()
        at_input = src.is_graph_input()
        at_output = out.is_graph_output()
        after_kept = producer is not None and producer.op_type in keep
        before_kept = any(use.node.op_type in keep for use in out.uses())
        assert at_input or at_output or after_kept or before_kept, f"stray Cast {node.name}"


def _float_io(model: ir.Model) -> list[ir.DataType]:
    return [v.dtype for v in [*model.graph.inputs, *model.graph.outputs] if v.dtype in (F16, F32)]


def test_conv_net_fp16_cpu_fidelity_and_structure():
    proto = conv_net()
    feeds = conv_feeds()
    ref = run_ort(proto, feeds)[0]
    model = ir.from_proto(proto)
    report = convert_fp16(model)
    got = run_ort(model, feeds)[0]
    assert got.dtype == np.float32
    assert sqnr_db(ref, got) > 40.0
    assert op_types(model)[0] == "Cast" and op_types(model)[-1] == "Cast"
    assert op_types(model).count("Cast") == 2  # one in, one out: every op runs in fp16
    assert _float_io(model) == [F32, F32]
    weights = list(model.graph.initializers.values())
    assert all(v.dtype == F16 for v in weights)
    assert report["nodes_fp32"] == 0 and report["casts_inserted"] == 2
    assert report["float_weight_bytes_after"] * 2 == report["float_weight_bytes_before"]


def test_transformer_fp16_keeps_range_ops_and_clamps_mask():
    proto = transformer_block()
    feeds = transformer_feeds()
    ref = run_ort(proto, feeds)[0]
    model = ir.from_proto(proto)
    report = convert_fp16(model)
    got = run_ort(model, feeds)[0]
    assert np.isfinite(got).all()
    assert sqnr_db(ref, got) > 40.0
    _check_casts_only_at_boundaries(model, DEFAULT_KEEP_FP32)
    assert report["kept_fp32_op_types"] == ["Pow", "ReduceMean"]
    assert all(k["reason"].startswith("range") for k in report["kept_fp32"])
    assert report["values_clamped"] == 1  # the -1e9 mask constant, clamped to -65504
    by_type = {n.op_type: n for n in model.graph}
    assert by_type["Softmax"].outputs[0].dtype == F16
    assert by_type["LayerNormalization"].outputs[0].dtype == F16
    assert by_type["Pow"].outputs[0].dtype == F32
    assert by_type["Shape"].outputs[0].dtype == ir.DataType.INT64
    ids = model.graph.inputs[0]
    assert ids.dtype == ir.DataType.INT64 and all(u.node.op_type != "Cast" for u in ids.uses())


def test_shared_initializer_gets_fp16_copy_for_fp16_users():
    text = """
    <ir_version: 9, opset_import: ["" : 17]>
    g (float[4] x) => (float[4] y, float[4] z) {
        a = Mul (x, w)
        y = Relu (a)
        z = Pow (x, w)
    }
    """
    from compare.graphs import with_weights

    proto = with_weights(text, {"w": np.array([1.5, 2.0, 0.5, 1.0], np.float32)})
    feeds = {"x": np.array([1.0, 2.0, 3.0, 4.0], np.float32)}
    ref = run_ort(proto, feeds)
    model = ir.from_proto(proto)
    report = convert_fp16(model)
    got = run_ort(model, feeds)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-3)
    dtypes = sorted(str(v.dtype) for v in model.graph.initializers.values())
    assert dtypes == ["FLOAT", "FLOAT16"]  # the original stays for Pow, a copy feeds Mul
    assert report["kept_fp32"] == [{"node": "", "op_type": "Pow", "reason": "range: output can overflow float16"}]


def test_cast_to_float_becomes_fp16_and_custom_keep_list():
    text = """
    <ir_version: 9, opset_import: ["" : 17]>
    g (int64[3] i, float[3] x) => (float[3] y) {
        f = Cast <to = 1> (i)
        s = Add (f, x)
        y = Sigmoid (s)
    }
    """
    from compare.graphs import with_weights

    proto = with_weights(text, {})
    feeds = {"i": np.array([1, 2, 3], np.int64), "x": np.array([0.5, -1.0, 2.0], np.float32)}
    ref = run_ort(proto, feeds)[0]
    model = ir.from_proto(proto)
    report = convert_fp16(model, keep_fp32_ops={"Sigmoid"})
    got = run_ort(model, feeds)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-3)
    cast = next(n for n in model.graph if n.op_type == "Cast" and n.inputs[0].name == "i")
    assert cast.attributes["to"].as_int() == F16
    assert [k["op_type"] for k in report["kept_fp32"]] == ["Sigmoid"]
    assert report["casts_inserted"] == 2  # x -> fp16 for Add; Add's fp16 output -> fp32 for Sigmoid


def test_pass_is_an_in_place_pass():
    model = ir.from_proto(conv_net())
    result = Float16Pass()(model)
    assert result.modified and result.model is model
    assert isinstance(Float16Pass(), ir.passes.InPlacePass)


@pytest.mark.parametrize("keep", [DEFAULT_KEEP_FP32 | {"Conv"}])
def test_keeping_conv_leaves_conv_weights_fp32(keep):
    model = ir.from_proto(conv_net())
    feeds = conv_feeds()
    ref = run_ort(conv_net(), feeds)[0]
    convert_fp16(model, keep_fp32_ops=keep)
    got = run_ort(model, feeds)[0]
    assert sqnr_db(ref, got) > 40.0
    for node in model.graph:
        if node.op_type == "Conv":
            assert node.inputs[1].dtype == F32


def test_subgraph_node_stays_fp32_and_shape_reads_fp32_input():
    text = """
    <ir_version: 9, opset_import: ["" : 17]>
    g (float[2, 3] x, bool c) => (float[2, 3] y, int64[2] s) {
        s = Shape (x)
        a = Relu (x)
        y = If (c) <then_branch = t () => (float[2, 3] o) { o = Neg (a) },
                    else_branch = e () => (float[2, 3] o) { o = Identity (a) }>
    }
    """
    from compare.graphs import with_weights

    proto = with_weights(text, {})
    feeds = {"x": np.array([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]], np.float32), "c": np.array(True)}
    ref = run_ort(proto, feeds)
    model = ir.from_proto(proto)
    report = convert_fp16(model)
    got = run_ort(model, feeds)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-3)
    np.testing.assert_array_equal(got[1], ref[1])
    assert [k["op_type"] for k in report["kept_fp32"]] == ["If"]
    shape = next(n for n in model.graph if n.op_type == "Shape")
    assert shape.inputs[0].is_graph_input()  # no Cast in front of Shape
