"""Upgrade the default-domain opset through onnx.version_converter; never downgrade.

    opset 11 model  ==>  opset 13 model (per-channel QDQ needs 13; int4 and blocks need 21)

Cases:
1. The model's opset is already at or above the target: nothing changes (a lower target is
   noted, never applied).
2. Large initializers travel to the converter as typed graph inputs without data, so a model
   over 2 GB converts without being serialized whole; they are put back afterwards by name.
3. The converter fails: UnsupportedError naming the operator(s) it could not convert.
4. Upsample (opset < 10) and Resize (opset 10) become Resize-11+ with their own meaning stated
   (coordinate_transformation_mode asymmetric, nearest_mode floor), not the default half_pixel.
"""

from __future__ import annotations

import logging
import re

import onnx_ir as ir

from edgeq.errors import UnsupportedError
from edgeq.graph import onnx_opset
from edgeq.prepare._base import NotingPass

__all__ = ["OpsetUpgradePass", "DEFAULT_MIN_OPSET"]

logger = logging.getLogger(__name__)

DEFAULT_MIN_OPSET = 13
# Initializers above this size are detached for the converter (case 2); small ones (shapes,
# axes) stay because some adapters read them.
_DETACH_BYTES = 4096


def _detach_large_initializers(model: ir.Model) -> dict[str, ir.Value]:
    detached: dict[str, ir.Value] = {}
    for name, value in list(model.graph.initializers.items()):
        tensor = value.const_value
        if tensor is None or tensor.nbytes <= _DETACH_BYTES or value.is_graph_input():
            continue
        detached[name] = value
    return detached


def _upsample_outputs(model: ir.Model) -> set[str]:
    """Outputs of Upsample (opset < 10) and Resize (opset 10) nodes: both mean 'asymmetric'."""
    return {node.outputs[0].name for node in model.graph if node.op_type in ("Upsample", "Resize")}


def _keep_upsample_semantics(graph: ir.Graph, outputs: set[str]) -> None:
    """case 4: the converter's Resize-11 takes the default coordinate mode (half_pixel); the
    opset < 11 ops it came from are asymmetric (and floor for nearest). Same values for integer
    scales, but onnxruntime's half_pixel kernel is several times slower; state the original."""
    for node in graph:
        if node.op_type != "Resize" or node.outputs[0].name not in outputs:
            continue
        node.attributes["coordinate_transformation_mode"] = ir.AttrString("coordinate_transformation_mode",
                                                                         "asymmetric")
        mode = node.attributes.get("mode")
        if mode is None or mode.as_string() == "nearest":
            node.attributes["nearest_mode"] = ir.AttrString("nearest_mode", "floor")


class OpsetUpgradePass(NotingPass):
    """Convert the model to ``target_opset`` (default: max(current, 13))."""

    def __init__(self, target_opset: int | None = None) -> None:
        super().__init__()
        self.target_opset = target_opset

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if "" not in model.opset_imports and "ai.onnx" not in model.opset_imports:
            return ir.passes.PassResult(model, modified=False)  # no default-domain op to convert
        current = onnx_opset(model)
        target = self.target_opset if self.target_opset is not None else max(current, DEFAULT_MIN_OPSET)
        if target <= current:  # case 1
            if target < current:
                self.note(f"opset {current} kept: edgeq never downgrades (asked for {target})")
            return ir.passes.PassResult(model, modified=False)
        import onnx

        upsampled = _upsample_outputs(model) if current < 11 else set()
        converted = self._convert(model, current, target)
        _keep_upsample_semantics(converted.graph, upsampled)
        model.graph = converted.graph
        needed = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", target)])
        model.ir_version = max(model.ir_version, converted.ir_version, needed)
        self.note(f"opset upgraded from {current} to {target}")
        return ir.passes.PassResult(model, modified=True)

    def _convert(self, model: ir.Model, current: int, target: int) -> ir.Model:
        import onnx
        import onnx.version_converter

        detached = _detach_large_initializers(model)  # case 2
        tensors = {name: value.const_value for name, value in detached.items()}
        inputs_before = list(model.graph.inputs)
        try:
            for name, value in detached.items():
                value.shape = value.shape or ir.Shape(value.const_value.shape)
                value.dtype = value.dtype or value.const_value.dtype
                model.graph.initializers.pop(name)
                model.graph.inputs.append(value)
            proto = ir.serde.serialize_model(model)
        finally:
            model.graph.inputs.clear()
            model.graph.inputs.extend(inputs_before)
            for name, value in detached.items():
                value.const_value = tensors[name]
                model.graph.register_initializer(value)
        try:
            converted_proto = onnx.version_converter.convert_version(proto, target)
        except Exception as e:  # case 3: the converter raises RuntimeError/ValueError
            raise UnsupportedError(self._explain(model, current, target, e)) from None
        converted = ir.serde.deserialize_model(converted_proto)
        graph = converted.graph
        kept_inputs = [v for v in graph.inputs if v.name not in detached]
        restored = [v for v in graph.inputs if v.name in detached]
        graph.inputs.clear()
        graph.inputs.extend(kept_inputs)
        for value in restored:
            value.const_value = tensors[value.name]
            graph.register_initializer(value)
        return converted

    @staticmethod
    def _explain(model: ir.Model, current: int, target: int, error: Exception) -> str:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        ops = sorted({n.op_type for n in model.graph.all_nodes() if n.op_type in text})
        if not ops:
            match = re.search(r"for (\w+)", text)
            ops = [match.group(1)] if match else []
        which = f"operator {', '.join(ops)}" if ops else "an operator"
        return (
            f"cannot upgrade the model from opset {current} to {target}: onnx's version "
            f"converter failed on {which} ({text}); re-export the model at opset >= {target} "
            "or pass a lower --opset"
        )
