"""``prepare``: a torch module that simulates, and trains, the QDQ model edgeq writes for a model.

    torch module --export (dynamo, torchscript fallback)--> float ONNX --edgeq static--> QDQ graph
    QDQ graph --QATModel--> torch module: fake quantizers where the graph has Q/DQ, float weights

1. The float model goes through edgeq's own prepare, plan and calibration on ``calib``: the
   ranges that start training are edgeq's static ones, on edgeq's grids. BatchNorms the exporter
   folded into convolutions of a torch module are found again (``batchnorm.py``) and keep
   updating their statistics in training until ``fit`` freezes them.
2. ``plan``: per-layer precision, as a map ({node or op type: "fp32" | "int16" | "int8-per-token"}),
   or the ``QuantResult`` (or its report) of an auto-mode run: its fp32 (and fp16) layers stay
   float, its int16 layers int16, its per-token MatMuls per token (a scale per row at run time,
   as ``per_token=True`` gives every run-time MatMul); the rest int8. Per-token layers need 8-bit
   weights, as ``per_token`` does.
3. 4-bit weights need opset 21 (int4 DequantizeLinear): the model is upgraded to it.
4. 8-bit weights take the width static mode gives the model on this CPU: where onnxruntime
   saturates 8-bit products (x86 without VNNI), 7 or 8 bits as measured on ``calib``
   (``stages/weight_bits.py``); ``quant_config.reduce_range`` records it. The export check and
   the recipe's validation then allow for torch not simulating the saturation
   (``export.py`` (6), ``zoo_recipe.py`` (6)). A model with int8 LSTMs or ConvIntegers
   (``UNCHECKED``: the exact form of the check has none for them) keeps 7 bits there.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from edgeq.errors import UsageError
from edgeq.qat.config import QATConfig

__all__ = ["prepare", "plan_precision"]

logger = logging.getLogger(__name__)

UNCHECKED = frozenset({"ConvInteger", "DynamicQuantizeLSTM"})  # (4) no form in passes/integer_as_float.py


def plan_precision(plan: Any) -> dict[str, str]:
    """(2) ``plan`` as a precision map of the layers to keep float."""
    if plan is None:
        return {}
    report = getattr(plan, "report", plan)
    if isinstance(report, Mapping) and "auto" in report:  # fp16 regions train (and stay) float
        layers = report["auto"].get("layers", [])
        kept = {"fp32": "fp32", "fp16": "fp32", "int16": "int16", "int8-per-token": "int8-per-token"}
        return {e["node"]: kept[e["precision"]] for e in layers if e.get("precision") in kept}
    if isinstance(report, Mapping):
        bad = {k: v for k, v in report.items() if v not in ("fp32", "int16", "int8", "int8-per-token")}
        if bad:
            raise UsageError(f"plan: precision {bad}: QAT keeps a layer fp32, int16, int8 or int8-per-token")
        return {str(k): str(v) for k, v in report.items() if v != "int8"}
    raise UsageError("plan= takes a precision map ({node: 'fp32'}) or an auto-mode QuantResult or report")


def _forward_names(model: Any, count: int) -> list[str] | None:
    """The names of a module's forward parameters, for the ONNX inputs (so feeds keep them)."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[:count] if len(names) >= count else None


def _float_onnx(model: Any, example_inputs: Any, workdir: str, input_names: Sequence[str] | None) -> Any:
    """A path or ONNX model as it is; a torch module (or zoo name) exported, checked against torch;
    a module's inputs named after its forward's parameters unless ``input_names`` says."""
    import torch

    if isinstance(model, torch.nn.Module) or (isinstance(model, str) and not os.path.exists(model)
                                              and not model.endswith(".onnx")):
        from edgeq.exporter import export

        if isinstance(model, torch.nn.Module) and input_names is None and example_inputs is not None:
            count = len(example_inputs) if isinstance(example_inputs, (tuple, list)) else 1
            input_names = _forward_names(model, count)
        path = os.path.join(workdir, "float.onnx")
        result = export(model, path, example_inputs=example_inputs, dynamic_batch=True, input_names=input_names)
        logger.info("qat: exported with %s", result.exporter)
        return path
    return model


def prepare(model: Any, example_inputs: Any = None, *, calib: Any = None, config: QATConfig | None = None,
            plan: Any = None, input_names: Sequence[str] | None = None, batchnorms_from: Any = None,
            progress: bool = False):
    """A ``QATModel`` (a torch module) simulating edgeq's QDQ model of ``model`` (a torch module,
    a zoo name, an ONNX path or model); see the module doc. ``calib``: calibration feeds (anything
    ``edgeq.quantize`` takes); without it, ``example_inputs`` alone calibrates (a warning).
    ``input_names``: the ONNX inputs of an exported module (default: its forward's parameters).
    ``batchnorms_from``: for an ONNX ``model`` that the dynamo exporter wrote, the torch module it
    came from, whose BatchNorms then come back as for a module given directly."""
    import torch

    from edgeq.config import PerChannel, PerTensor, PerToken, QuantConfig
    from edgeq.graph import copy_model, graphs_of
    from edgeq.io import as_model
    from edgeq.qat.batchnorm import batchnorms_of
    from edgeq.qat.export import as_feeds
    from edgeq.qat.module import QATModel
    from edgeq.stages.load import load
    from edgeq.stages.load import prepare as prepare_stage
    from edgeq.stages.variant import build_variant
    from edgeq.stages.weight_bits import choose_weight_bits, weight_bits_to_choose

    config = config or QATConfig()
    precision = dict(config.precision) | plan_precision(plan)
    with tempfile.TemporaryDirectory(prefix="edgeq-qat-") as workdir:
        source = _float_onnx(model, example_inputs, workdir, input_names)
        loaded_model, _ = as_model(source)
        names = [v.name for v in loaded_model.graph.inputs if v.const_value is None]
        if calib is None:
            if example_inputs is None:
                raise UsageError("prepare needs calib= (calibration feeds) or example_inputs to calibrate on")
            logger.warning("qat: calibrating on example_inputs alone; pass calib= with representative data")
            calib = as_feeds(example_inputs, names)
        qconfig = QuantConfig(
            mode="static",
            granularity=PerChannel() if config.per_channel else PerTensor(),
            activations=config.activations,
            symmetric=config.activations == "int8",
            precision=precision,
            float_weights="fp32",
            opset=21 if config.weight_bits == 4 else None,
            reduce_range=False if config.weight_bits == 4 else None,
            dynamic_granularity=PerToken() if config.per_token else PerTensor(),
            # per_token.py (9): a per-token kernel's centred rows meet the masked channels' codes, whose products
            # cancel against the float correction in float in torch and in int32 in onnxruntime (not within a step)
            outlier_channels=not config.per_token,
        )
        module = model if isinstance(model, torch.nn.Module) else batchnorms_from
        batchnorms = batchnorms_of(module, loaded_model) if module is not None else {}
        prepared = prepare_stage(load(loaded_model, calib), qconfig)
        float_model = copy_model(prepared.model)
        if weight_bits_to_choose(qconfig, prepared):  # (4) static mode's 7 or 8 bits, measured on this CPU's kernels
            def allow_eight(model: Any) -> bool:  # (4) kernels the export check cannot run exactly: 7 bits never saturate
                unchecked = sorted({n.op_type for g in graphs_of(model) for n in g} & UNCHECKED)
                if unchecked:
                    logger.info("qat: 7-bit weights, where static mode keeps 8: %s saturate here and has no exact "
                                "form for the export check", ", ".join(unchecked))
                return not unchecked

            result, bits = choose_weight_bits(prepared, qconfig, progress=progress, allow_eight=allow_eight,
                                              paired=False)  # its fake quantization knows 7 or 8 bits
            qconfig = qconfig.replace(reduce_range=bits == 7)
        else:
            from edgeq.passes.weights import QMAX, weight_qmax

            if weight_qmax(qconfig) != QMAX:  # 7 bits, not 8 with pairs limited: its fake quantization knows no pairs
                qconfig = qconfig.replace(reduce_range=True)
            result = build_variant(prepared, qconfig, progress=progress)
    qat = QATModel(result.model, float_model, weight_bits=config.weight_bits, learn=config.scales == "learned",
                   batchnorms=batchnorms)
    qat.config = config
    qat.quant_config = qconfig
    qat.float_model = float_model
    qat.ptq_report = result.report
    return qat
