"""StripDebugMetadataPass: exporters' stack traces, program signatures and per-value records do not
ship in the quantized model; other keys do."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

import edgeq


def _net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(8, 4, 3, 3)).astype(np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4)
    relu = helper.make_node("Relu", ["c"], ["y"], name="relu")
    for node in (conv, relu):
        for key, value in (("pkg.torch.onnx.stack_trace", 'File "/home/me/secret/model.py", line 3'),
                           ("namespace", ": Net/conv"), ("pkg.torch.onnx.fx_node", "%conv"),
                           ("my.own.tag", "keep me")):
            node.metadata_props.add(key=key, value=value)
    graph = helper.make_graph([conv, relu], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature",
                             value="p_w: PARAMETER target='w' " * 40)
    graph.metadata_props.add(key="my.graph.tag", value="keep me")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="author", value="me")
    ir_model = ir.from_proto(model)  # a value's metadata (onnx keeps it in value_info, onnx_ir on the value)
    ir_model.graph.initializers["w"].metadata_props.update(
        {"pkg.torch.export.graph_signature.InputSpec.kind": "PARAMETER", "pkg.torch.onnx.original_node_name": "p_w"})
    ir_model.graph.inputs[0].metadata_props["my.value.tag"] = "keep me"
    return ir.to_proto(ir_model)


def test_debug_metadata_dropped_other_keys_kept():
    feeds = [{"x": np.random.default_rng(i).normal(size=(1, 4, 8, 8)).astype(np.float32)} for i in range(4)]
    result = edgeq.quantize(_net(), edgeq.QuantConfig(mode="static"), data=feeds, progress=False)
    proto = ir.to_proto(result.model)
    keys = {p.key for n in proto.graph.node for p in n.metadata_props}
    assert keys == {"my.own.tag"}, keys
    assert "secret" not in proto.SerializeToString().decode("latin-1")
    assert {p.key: p.value for p in proto.metadata_props}.get("author") == "me"
    assert {p.key for p in proto.graph.metadata_props} == {"my.graph.tag"}
    text = proto.SerializeToString().decode("latin-1")
    assert "PARAMETER" not in text and "p_w" not in text and "InputSpec" not in text
    assert result.model.graph.inputs[0].metadata_props == {"my.value.tag": "keep me"}
