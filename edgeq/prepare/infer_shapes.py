"""Shape and type inference, with a fallback that runs the model on data.

    values with unknown dtype/shape  ==>  every float value typed, with rank and dims

Cases:
1. ONNX shape inference with data propagation (strict first, then lenient, as custom domains
   and partial information make strict mode fail).
2. Float-looking values of the main graph still lacking a dtype or a shape, when data is
   given: the model runs on onnxruntime on the first few feeds with those values added as
   outputs; dtype and rank are recorded. A dim that varies across feeds becomes symbolic, and
   so does one whose size equals a size a dynamic input dim took (batch 1 in every feed must
   not fix the batch dim); a dim derived from a dynamic one (H/8) is only caught when the
   feeds vary in size.
3. Values inside subgraphs cannot be made outputs: they keep what ONNX inference found.
4. Without data, what stays unknown is listed in a note that says to pass calibration data.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from edgeq.prepare._base import NotingPass

__all__ = ["InferShapesPass", "unknown_values"]

logger = logging.getLogger(__name__)

FALLBACK_FEEDS = 3


def unknown_values(graph: ir.Graph) -> list[ir.Value]:
    """Node outputs of ``graph`` whose dtype or shape is unknown (non-float known types skipped)."""
    unknown = []
    for node in graph:
        for value in node.outputs:
            if not value.name:
                continue
            if value.type is not None and not isinstance(value.type, ir.TensorType):
                continue  # sequences, optionals: not quantization candidates
            if value.dtype is None or value.shape is None:
                unknown.append(value)
    return unknown


def _merge_shape(shapes: list[tuple[int, ...]], dynamic_sizes: frozenset[int]) -> ir.Shape:
    """A dim is fixed when every feed gave it the same size and that size is not one a dynamic
    input dim took in the feeds (batch 1 in every feed must not make batch fixed)."""
    dims: list[int | ir.SymbolicDim] = []
    for sizes in zip(*shapes):
        fixed = len(set(sizes)) == 1 and sizes[0] not in dynamic_sizes
        dims.append(sizes[0] if fixed else ir.SymbolicDim(None))
    return ir.Shape(dims)


def _dynamic_sizes(graph: ir.Graph, feeds: list[Mapping[str, np.ndarray]]) -> frozenset[int]:
    """Sizes the feeds gave to graph-input dims that are not fixed in the model."""
    sizes = set()
    for value in graph.inputs:
        for feed in feeds:
            array = feed.get(value.name)
            if array is None:
                continue
            for axis, size in enumerate(np.shape(array)):
                if value.shape is None or axis >= len(value.shape) or not isinstance(value.shape[axis], int):
                    sizes.add(int(size))
    return frozenset(sizes)


def _merge(model: ir.Model, inferred_proto) -> bool:
    """Copy inferred types (whole types: sequences stay sequences) and shapes onto ``model``."""
    inferred = ir.serde.deserialize_model(inferred_proto)
    modified = False
    for graph, inferred_graph in zip(model.graphs(), inferred.graphs()):
        found = ir.convenience.create_value_mapping(inferred_graph)
        for name, value in ir.convenience.create_value_mapping(graph).items():
            other = found.get(name)
            if other is None:
                continue
            if other.type is not None and value.type != other.type:
                value.type = other.type
                modified = True
            if other.shape is not None and value.shape != other.shape:
                value.shape = other.shape
                modified = True
    return modified


class InferShapesPass(NotingPass):
    """ONNX shape inference, then a run-on-data fallback for what stays unknown."""

    def __init__(
        self, data: Iterable[Mapping[str, np.ndarray]] | None = None, *, quiet: bool = False
    ) -> None:
        super().__init__()
        self.data = data
        self.quiet = quiet  # an early run whose leftovers a later run reports

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = self._onnx_inference(model)
        unknown = unknown_values(model.graph)
        if unknown and self.data is not None:
            modified |= self._run_on_data(model, unknown)
            unknown = unknown_values(model.graph)
        if unknown and not self.quiet:  # case 4
            names = ", ".join(v.name for v in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            hint = "" if self.data is not None else "; pass calibration data to infer them by running the model"
            self.note(f"{len(unknown)} value(s) have unknown dtype or shape ({names}){hint}")
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _onnx_inference(model: ir.Model) -> bool:  # case 1
        import onnx
        from onnx_ir.passes.common import _c_api_utils

        for strict in (True, False):
            def infer(proto, strict=strict):
                return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=strict, data_prop=True)

            try:
                # onnx_ir's helper hands the C API a copy without large weights (>2 GB safe)
                inferred = _c_api_utils.call_onnx_api(infer, model)
            except Exception as e:  # onnx raises InferenceError / ValidationError / RuntimeError
                logger.info("ONNX shape inference (strict=%s) failed: %s", strict, e)
                continue
            return _merge(model, inferred)
        return False

    def _run_on_data(self, model: ir.Model, unknown: list[ir.Value]) -> bool:  # case 2
        import onnxruntime as ort

        from edgeq.runtime.memory import in_memory, inference_session

        feeds = list(itertools.islice(iter(self.data), FALLBACK_FEEDS))
        if not feeds:
            return False
        outputs_before = list(model.graph.outputs)
        extra = [v for v in unknown if v not in outputs_before]
        model.graph.outputs.extend(extra)
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 4  # errors reach the user once, as edgeq's one line
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sess = inference_session(in_memory(model), so, ["CPUExecutionProvider"])  # weights by reference
            names = [v.name for v in unknown]
            results = [sess.run(names, dict(feed)) for feed in feeds]
        except Exception as e:  # ORT errors: the model itself is broken or data does not fit
            logger.warning("running the model to infer shapes failed: %s", e)
            self.note(f"shape fallback could not run the model on data ({str(e).splitlines()[0]})")
            return False
        finally:
            model.graph.outputs.clear()
            model.graph.outputs.extend(outputs_before)
        dynamic = _dynamic_sizes(model.graph, feeds)
        for i, value in enumerate(unknown):
            if not all(isinstance(r[i], np.ndarray) for r in results):
                continue  # a sequence or optional: no tensor type to record
            arrays = [r[i] for r in results]
            if len({a.ndim for a in arrays}) != 1:
                continue
            if value.dtype is None:
                value.dtype = ir.DataType.from_numpy(arrays[0].dtype)
            if value.shape is None:
                value.shape = _merge_shape([a.shape for a in arrays], dynamic)
        self.note(f"{len(unknown)} value type(s)/shape(s) inferred by running the model on {len(feeds)} feed(s)")
        return True
