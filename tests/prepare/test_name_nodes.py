"""NameNodesPass: unnamed nodes get OpType_index (unique), named ones keep their names; the
report's labels are then names --exclude accepts."""

from __future__ import annotations

import onnx
import onnx_ir as ir

import edgeq
from edgeq.prepare.name_nodes import NameNodesPass


def _model() -> onnx.ModelProto:
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4] x) => (float[1, 4] y) {
        a = Relu(x)
        Relu_1 = Neg(a)
        b = Relu(Relu_1)
        y = Add(b, a)
    }"""
    model = onnx.parser.parse_model(text)
    model.graph.node[1].name = "Relu_1"  # a Neg named like a generated name: kept
    model.graph.node[3].name = "sum"
    return model


def test_unnamed_nodes_get_unique_op_index_names():
    model = ir.from_proto(_model())
    result = NameNodesPass()(model)
    assert result.modified
    assert [n.name for n in model.graph] == ["Relu_0", "Relu_1", "Relu_2", "sum"]
    clash = ir.from_proto(_model())
    clash.graph.node(0).name = "Relu_2"  # the generated name for node 2 is taken: it gets "_"
    NameNodesPass()(clash)
    assert [n.name for n in clash.graph] == ["Relu_2", "Relu_1", "Relu_2_", "sum"]
    assert not NameNodesPass()(clash).modified


def test_report_labels_are_names_exclude_accepts():
    from passes.nets import conv_net, feeds

    data = feeds((1, 3, 16, 16), n=2)
    first = edgeq.quantize(conv_net(), edgeq.QuantConfig(), data, progress=False).report
    conv = next(q["node"] for q in first["quantized"] if q["op"] == "Conv")
    again = edgeq.quantize(conv_net(), edgeq.QuantConfig(exclude=(conv,)), data, progress=False).report
    assert any(e["node"] == conv and "excluded" in e["reason"] for e in again["float"])
    assert len(again["quantized"]) < len(first["quantized"])
