"""stages/shapes_free.py: intermediate shapes are dropped from small files only where onnxruntime
runs the same operators without them (a transformer's Add + LayerNormalization fuse into
SkipLayerNormalization only with them), and compress mode keeps them where they are not free."""

from __future__ import annotations

import onnx
import onnx_ir as ir

import edgeq
from corpus.builders import transformer_layer
from edgeq.config import QuantConfig
from edgeq.stages.shapes_free import shapes_are_free
from passes.helpers import ort_optimized_ops
from passes.nets import conv_net


def _with_shapes(proto: onnx.ModelProto) -> ir.Model:
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def test_a_transformer_needs_its_shapes_and_a_conv_net_does_not(tmp_path):
    import collections

    transformer = _with_shapes(transformer_layer()[0])
    fused = collections.Counter(ort_optimized_ops(transformer, tmp_path))
    assert fused["SkipLayerNormalization"] == 2  # with the shapes
    assert not shapes_are_free(transformer)
    assert shapes_are_free(_with_shapes(conv_net()))
    assert len(transformer.graph.outputs) == 1 and any(v.shape for n in transformer.graph for v in n.outputs)  # unchanged


def test_compress_mode_keeps_the_shapes_a_transformer_needs():
    kept = edgeq.quantize(_with_shapes(transformer_layer()[0]), QuantConfig(mode="compress", weights="kmeans:4"),
                          progress=False)
    dropped = edgeq.quantize(_with_shapes(conv_net()), QuantConfig(mode="compress", weights="kmeans:4"), progress=False)
    proto_kept, proto_dropped = ir.to_proto(kept.model), ir.to_proto(dropped.model)
    assert len(proto_kept.graph.value_info) > 0 and len(proto_dropped.graph.value_info) == 0
