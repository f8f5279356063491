"""Stage 7, ``check``: the result is a valid ONNX model, and meets ``min_sqnr`` where asked."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edgeq.errors import EdgeqError, FidelityError, ModelLoadError, UnsupportedError, one_line
from edgeq.io import EXTERNAL_DATA_THRESHOLD, inlined, weights_nbytes

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.config import QuantConfig

__all__ = ["check", "check_input", "check_min_sqnr"]


def check(model: ir.Model) -> None:
    """``onnx.checker`` on ``model``; an EdgeqError naming the first problem (a bug of edgeq's)."""
    import onnx
    import onnx_ir as ir

    if weights_nbytes(model) > EXTERNAL_DATA_THRESHOLD:
        return  # the checker cannot take a >2 GB proto in memory
    try:
        with inlined(model):  # weights in another folder's external data: the checker reads them here
            proto = ir.to_proto(model)
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise EdgeqError(f"internal error: the quantized model fails onnx.checker ({str(e).splitlines()[0]}); "
                         "please report it, and --exclude the node concerned meanwhile") from None


def check_input(model: ir.Model, source: str | None = None) -> None:
    """A model as given, before any work: ``onnx.checker`` (a cycle, a dangling input, an unknown
    operator, IR version, duplicate inputs ...), opsets onnx knows, then onnxruntime's own load
    (types, unknown domains, what the checker lets through) -> ModelLoadError or UnsupportedError
    (exit 2), one line naming the problem."""
    name = source or "the model"
    if weights_nbytes(model) <= EXTERNAL_DATA_THRESHOLD:  # the checker cannot take a >2 GB proto
        _checker(model, name)
    _opsets(model, name)
    _empty_weights(model, name)
    _runtime_load(model, name, source)


def _checker(model: ir.Model, name: str) -> None:
    import onnx
    import onnx_ir as ir

    try:
        proto = ir.to_proto(model)
    except Exception as e:  # onnx_ir's SerdeError: a name that is not text, a value no field can hold
        raise ModelLoadError(f"{name} cannot be written back as ONNX ({one_line(e.__cause__ or e)}): it is corrupt; "
                             "re-export it") from None
    try:
        for tensor in onnx.external_data_helper._get_all_tensors(proto):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            # the checker needs no weights here, only the graph: an empty stand-in of the tensor
            tensor.ClearField("external_data")
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.dims[:]
            tensor.dims.append(0)
        for info in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
            if info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape"):
                # no shape at all, as exporters write: onnxruntime takes it (a rank it learns on
                # the first run), the checker wants the field; an empty one stands in for it
                info.type.tensor_type.shape.SetInParent()
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelLoadError(f"{name} is not a valid ONNX model (onnx.checker: {one_line(e)}): fix or re-export it") from None


def _opsets(model: ir.Model, name: str) -> None:
    import onnx

    known = {"": onnx.defs.onnx_opset_version(), "ai.onnx": onnx.defs.onnx_opset_version()}
    for domain, version in model.opset_imports.items():
        if domain in known and version > known[domain]:
            raise ModelLoadError(f"{name} imports opset {version} of the default domain, above the newest "
                                   f"released ({known[domain]}): re-export it with a released opset")


_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
             "LayerNormalization"}


def _empty_weights(model: ir.Model, name: str) -> None:
    """A zero-size weight or bias of a compute node (onnxruntime loads it and fails only when run)."""
    for node in model.graph.all_nodes():
        if node.op_type not in _WEIGHTED or node.domain not in ("", "ai.onnx"):
            continue
        for value in node.inputs[1:]:
            tensor = value.const_value if value is not None else None
            if tensor is not None and tensor.size == 0:
                raise ModelLoadError(f"{node.op_type} node {node.name!r} of {name} has a zero-size weight or bias "
                                     f"{value.name!r} (shape {list(tensor.shape.numpy())}): the model is corrupt; re-export it")


def _runtime_load(model: ir.Model, name: str, source: str | os.PathLike | None = None) -> None:
    """A model read from a file is loaded from it: onnxruntime maps the file's external data but
    copies arrays it is handed (and twice with optimizations off: a 2.25 GiB model made ``edgeq
    prepare`` peak at 4.9 GiB)."""
    import onnxruntime as ort

    from edgeq.runtime.memory import in_memory, inference_session

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        path = os.fspath(source) if source is not None and os.path.isfile(source) else None
        inference_session(in_memory(model, path=path), options, ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        if type(e).__name__ == "NotImplemented":
            raise UnsupportedError(f"onnxruntime cannot run {name} ({one_line(e)}): use a supported "
                                   "opset/operator") from None
        raise ModelLoadError(f"onnxruntime cannot load {name} ({one_line(e)}): fix or re-export it") from None


def check_min_sqnr(report: dict[str, Any], config: QuantConfig) -> None:
    """FidelityError if an evaluated output's SQNR is below ``config.min_sqnr``."""
    if config.min_sqnr is None:
        return
    for name, metrics in report["evaluation"]["outputs"].items():
        sqnr = metrics.get("sqnr_db")
        if sqnr is not None and sqnr < config.min_sqnr:
            raise FidelityError(f"output {name!r} has SQNR {sqnr:.1f} dB, below --min-sqnr {config.min_sqnr}: "
                                "try --method entropy/percentile or --exclude the most sensitive layers")
