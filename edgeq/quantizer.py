"""``edgeq.quantize``: an fp32 ONNX model in, a smaller, faster int8 model and its report out.

Order: load -> prepare -> select (what is int8, what stays float and why) -> calibrate the
activations the plan needs (one collect_ranges call) -> rewrite passes -> optional integer-only
rewrite -> onnx.checker -> report (and fidelity/latency with eval data).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from edgeq.config import PerBlock, QuantConfig
from edgeq.errors import EdgeqError, UnsupportedError, UsageError
from edgeq.io import weights_nbytes

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

    from edgeq.calibrate.ranges import RangesTable

__all__ = ["quantize", "QuantResult", "Loaded", "load_input", "load_and_prepare", "evaluate_against_fp32",
           "already_prepared"]

# Set by ``already_prepared()``: the models quantized in this context come out of prepare_model
# already (auto mode builds dozens of variants of one prepared graph): skip prepare and the checker.
_PREPARED = contextvars.ContextVar("edgeq_already_prepared", default=False)


@contextlib.contextmanager
def already_prepared():
    """Within this block ``quantize`` skips the prepare pipeline and the final onnx checker:
    only for models that prepare_model has already made quantizable (auto's variants)."""
    token = _PREPARED.set(True)
    try:
        yield
    finally:
        _PREPARED.reset(token)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class QuantResult:
    """The quantized model (onnx_ir), its JSON-ready report, and the ranges used (static)."""

    model: "ir.Model"
    report: dict[str, Any]
    ranges: "RangesTable | None" = None
    source: str | None = None

    def save(self, path: str | os.PathLike, report: str | os.PathLike | None = None) -> str:
        """Write the model atomically (never over the input) and, if asked, the JSON report
        and its Markdown rendering beside it."""
        from edgeq.io import save_model
        from edgeq.report.quant_report import write_report

        inputs = [self.source] if self.source else []
        if report is not None:
            inputs_r = [*inputs, path]
            write_report(self.report, report, inputs=inputs_r)
        return save_model(self.model, path, inputs=inputs)


def load_input(model: Any) -> tuple["ir.Model", str | None]:
    """``model`` (a path, onnx.ModelProto or onnx_ir.Model) as a fresh onnx_ir.Model, and its path if any."""
    import onnx
    import onnx_ir as ir

    from edgeq.io import load_model

    if isinstance(model, (str, os.PathLike)):
        return load_model(model), os.fspath(model)
    if isinstance(model, onnx.ModelProto):
        return ir.from_proto(model), None
    if isinstance(model, ir.Model):
        return ir.from_proto(ir.to_proto(model)), None  # never change the caller's model
    raise UsageError(f"model must be a path, onnx.ModelProto or onnx_ir.Model, not {type(model).__name__}")


def _check_config(config: QuantConfig, data: Any, ranges: Any) -> None:
    if config.weights != "int8" or isinstance(config.granularity, PerBlock):
        raise UnsupportedError("only int8 weights (per-channel or per-tensor) are implemented: "
                               "drop --weights int4 / per-block granularity")
    if config.format == "qoperator" and (config.activations == "int16" or config.int16_nodes or config.fp16_nodes):
        raise UnsupportedError("int16 activations and fp16 nodes need --format qdq (the QOperator format "
                               "has int8 kernels only)")
    if config.mode == "static" and data is None and ranges is None:
        raise UsageError("static quantization needs calibration data: pass --calib DATA (or data=...) "
                         "or reuse a ranges table with --ranges FILE; or use --mode dynamic")
    if config.format == "qoperator" and config.mode != "static":
        raise UsageError("--format qoperator needs static mode (activation scales fixed offline)")


@dataclasses.dataclass
class Loaded:
    """A model loaded and prepared for quantization, with what the report needs from before."""

    model: "ir.Model"
    source: str | None
    data: Any  # the validated FeedSource, or None
    notes: list[str]
    fp32_bytes: bytes | None  # the fp32 model as given, kept for evaluation
    size_before: int


def load_and_prepare(model: Any, config: QuantConfig, data: Any, *, keep_fp32: bool) -> Loaded:
    """Load ``model`` (never changing the caller's), validate ``data`` against it, prepare it."""
    from edgeq.io import model_bytes

    loaded, source = load_input(model)
    fp32_bytes = model_bytes(loaded) if keep_fp32 else None
    size_before = weights_nbytes(loaded)
    source_data = None
    if data is not None:
        from edgeq.calibrate import load_data

        source_data = load_data(data, loaded)
    loaded, notes = (loaded, []) if _PREPARED.get() else _prepare(loaded, config, source_data)
    return Loaded(loaded, source, source_data, notes, fp32_bytes, size_before)


def evaluate_against_fp32(report: dict[str, Any], fp32_bytes: bytes, model: "ir.Model", eval_data: Any,
                          labels: Any) -> tuple[Any, bytes]:
    """Put fidelity, accuracy and latency of ``model`` vs the fp32 model in ``report["evaluation"]``;
    return the evaluation feeds and the serialized model for further comparisons."""
    from edgeq.calibrate import load_data
    from edgeq.io import model_bytes
    from edgeq.report.evaluate import evaluate

    feeds = load_data(eval_data, _proto_of(fp32_bytes))
    candidate = model_bytes(model)
    report["evaluation"] = evaluate(fp32_bytes, candidate, feeds, labels=labels)
    return feeds, candidate


def _prepare(model: "ir.Model", config: QuantConfig, data: Any) -> tuple["ir.Model", list[str]]:
    try:
        from edgeq.prepare import prepare_model
    except ImportError:
        import onnx_ir as ir

        logger.info("edgeq.prepare not available: running shape inference only")
        ir.passes.common.ShapeInferencePass()(model)
        return model, ["prepare not available: shape inference only"]
    return prepare_model(model, target_opset=config.opset, data=data)


def _ranges(model: "ir.Model", names: list[str], config: QuantConfig, data: Any, ranges: Any,
            progress: bool) -> "RangesTable":
    from edgeq.calibrate import collect_ranges
    from edgeq.calibrate.ranges import RangesTable

    table = None
    if ranges is not None:
        table = ranges if isinstance(ranges, RangesTable) else RangesTable.load(ranges)
        missing = [n for n in names if n not in table]
        if not missing:
            return table
        if data is None:
            raise UsageError(
                f"the ranges table lacks {len(missing)} tensor(s) this model needs (e.g. {missing[0]!r}): "
                "recalibrate with --calib DATA --save-ranges FILE"
            )
        names = missing
    collected = collect_ranges(model, names, data, config, progress=progress)
    if table is None:
        return collected
    return RangesTable({**dict(table), **dict(collected)}, method=collected.method,
                       num_samples=collected.num_samples, meta=collected.meta)


def _assign_qparams(plan, table, config: QuantConfig) -> None:
    from edgeq.passes.plan import const_array, qparams_from_range

    for root in plan.roots():
        array = const_array(root)
        if array is not None:
            lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        elif root.name in table:
            lo, hi = table[root.name].lo, table[root.name].hi
        else:
            raise EdgeqError(f"no calibrated range for tensor {root.name!r}: calibration skipped it "
                             "(see the log); exclude its consumers with --exclude")
        plan.qparams[root] = qparams_from_range(lo, hi, config.activations, config.symmetric)


def quantize(
    model: "str | os.PathLike | onnx.ModelProto | ir.Model",
    config: QuantConfig | None = None,
    data: Any = None,
    *,
    eval_data: Any = None,
    labels: Any = None,
    ranges: "RangesTable | str | os.PathLike | None" = None,
    progress: bool = True,
) -> QuantResult:
    """Quantize ``model``; see the module docstring for the order of work.

    ``data``: calibration feeds (anything ``edgeq.calibrate.load_data`` takes). ``ranges``: a
    RangesTable or its JSON file (skips calibration for the tensors it covers). ``eval_data``
    (and ``labels``): adds fidelity, accuracy and latency vs fp32 to the report.

    Without ``config``, as on the command line: auto mode when there is calibration data (per-layer
    precision by measured error and speed, min output SQNR 30 dB, never slower than fp32 on the
    CPU provider at 1 thread), static mode with ``ranges`` only. A ``QuantConfig`` is taken as
    given (its ``mode`` defaults to static: uniform int8).
    """
    from edgeq.passes.pipeline import analysis_passes, rewrite_passes, run_passes
    from edgeq.passes.plan import QuantPlan, const_array
    from edgeq.report.quant_report import activation_params, build_report, node_labels

    if config is None:  # no options at all: what `edgeq quantize --calib DATA` does by default
        config = QuantConfig(mode="auto" if data is not None and ranges is None else "static")
    if config.mode == "fp16":
        from edgeq.modes import quantize_fp16

        return quantize_fp16(model, config, data=data, eval_data=eval_data, labels=labels)
    if config.mode == "auto":
        from edgeq.modes import quantize_auto

        return quantize_auto(model, config, data, eval_data=eval_data, labels=labels, progress=progress)
    _check_config(config, data, ranges)
    start = time.perf_counter()
    loaded = load_and_prepare(model, config, data, keep_fp32=eval_data is not None)
    model, source, source_data, notes = loaded.model, loaded.source, loaded.data, loaded.notes
    fp32_bytes, size_before = loaded.fp32_bytes, loaded.size_before
    if model.opset_imports.get("", 0) < 13:
        raise UnsupportedError(f"opset {model.opset_imports.get('')} is below 13 (needed for per-channel "
                               "DequantizeLinear): pass --opset 13 or re-export")
    plan = QuantPlan()
    run_passes(model, analysis_passes(config, plan))
    labels_by_node = node_labels(model.graph)
    table, ranges_info = None, None
    if config.mode == "static":
        names = [v.name for v in plan.roots() if const_array(v) is None]
        if names:
            table = _ranges(model, names, config, source_data, ranges, progress)
        else:  # nothing static to calibrate (e.g. every MatMul went dynamic)
            from edgeq.calibrate.ranges import RangesTable

            table = RangesTable({}, method=config.method)
        _assign_qparams(plan, table, config)
        ranges_info = {"method": table.method, "num_samples": table.num_samples, "tensors": len(names)}
    activations = activation_params(plan, labels_by_node)
    observed = [v.name for v in plan.values if const_array(v) is None and not v.is_graph_output() and v.name]
    run_passes(model, rewrite_passes(config, plan))
    report_extra: dict[str, Any] = {}
    if config.format == "qoperator":
        try:
            from edgeq.passes.qoperator import rewrite_qoperator
        except ImportError:
            raise UnsupportedError("--format qoperator is not available in this build: use --format qdq") from None
        report_extra["qoperator"] = rewrite_qoperator(model, config)
    _check(model)
    report = build_report(
        plan, labels_by_node, config, activations, source=source, size_before=size_before,
        size_after=weights_nbytes(model), prepare_notes=notes, ranges_info=ranges_info,
        seconds=time.perf_counter() - start,
    )
    report.update(report_extra)
    if eval_data is not None:
        from edgeq.report.evaluate import layer_errors

        feeds, int8_bytes = evaluate_against_fp32(report, fp32_bytes, model, eval_data, labels)
        if config.format == "qdq" and observed:
            report["evaluation"]["layers"] = layer_errors(fp32_bytes, int8_bytes, observed, feeds)
        _check_min_sqnr(report, config)
    report["summary"]["seconds"] = round(time.perf_counter() - start, 3)
    return QuantResult(model=model, report=report, ranges=table, source=source)


def _proto_of(data: bytes) -> "onnx.ModelProto":
    import onnx

    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    return proto


def _check(model: "ir.Model") -> None:
    import onnx
    import onnx_ir as ir

    if _PREPARED.get() or weights_nbytes(model) > 1_800_000_000:
        return  # the checker cannot take a >2 GB proto in memory
    try:
        onnx.checker.check_model(ir.to_proto(model))
    except onnx.checker.ValidationError as e:
        raise EdgeqError(f"internal error: the quantized model fails onnx.checker ({str(e).splitlines()[0]}); "
                         "please report it, and --exclude the node concerned meanwhile") from None


def _check_min_sqnr(report: dict[str, Any], config: QuantConfig) -> None:
    from edgeq.errors import FidelityError

    if config.min_sqnr is None:
        return
    for name, metrics in report["evaluation"]["outputs"].items():
        sqnr = metrics.get("sqnr_db")
        if sqnr is not None and sqnr < config.min_sqnr:
            raise FidelityError(f"output {name!r} has SQNR {sqnr:.1f} dB, below --min-sqnr {config.min_sqnr}: "
                                "try --method entropy/percentile or --exclude the most sensitive layers")
