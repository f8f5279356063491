"""The prepare pipeline: a literal list of passes, and ``prepare_model`` which runs it (with
:func:`edgeq.graph.run_passes`, the runner of the quantize passes too)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from edgeq.graph import run_passes
from edgeq.prepare._base import FLOAT_TYPES, NotingPass
from edgeq.prepare.constants_to_initializers import ConstantsToInitializersPass
from edgeq.prepare.eliminate_identity import EliminateIdentityPass
from edgeq.prepare.fold_batchnorm import FoldBatchNormPass
from edgeq.prepare.fold_constants import FoldConstantsPass
from edgeq.prepare.infer_shapes import InferShapesPass
from edgeq.prepare.initializers_not_inputs import InitializersNotInputsPass
from edgeq.prepare.name_nodes import NameNodesPass
from edgeq.prepare.opset_upgrade import OpsetUpgradePass
from edgeq.prepare.remove_dead_code import RemoveDeadCodePass
from edgeq.prepare.unknown_dims import UnknownDimsPass
from edgeq.prepare.upcast_float16 import UpcastFloat16Pass

__all__ = ["prepare_passes", "prepare_model", "float_dtypes"]

logger = logging.getLogger(__name__)

Feeds = Iterable[Mapping[str, np.ndarray]]


def prepare_passes(target_opset: int | None = None, data: Feeds | None = None,
                   upcast_float16: bool = False) -> list[NotingPass]:
    """The passes ``prepare_model`` runs, in order."""
    return [
        UnknownDimsPass(),
        InitializersNotInputsPass(),
        ConstantsToInitializersPass(),
        *([UpcastFloat16Pass()] if upcast_float16 else []),  # before folding: fp32 constants fold as fp32
        OpsetUpgradePass(target_opset),
        ConstantsToInitializersPass("the opset converter"),  # Split/Squeeze axes, Dropout ratio
        EliminateIdentityPass(),
        InferShapesPass(quiet=True),  # static shapes let Shape nodes fold
        FoldBatchNormPass(),
        FoldConstantsPass(),
        RemoveDeadCodePass(),
        InferShapesPass(data),
        NameNodesPass(),
    ]


def float_dtypes(model: ir.Model) -> set[ir.DataType]:
    """Float dtypes of the model's inputs, outputs and float initializers."""
    graph = model.graph
    values = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
    return {v.dtype for v in values if v.dtype in FLOAT_TYPES}


def prepare_model(
    model: ir.Model, *, target_opset: int | None = None, data: Feeds | None = None, upcast_float16: bool = False
) -> tuple[ir.Model, list[str]]:
    """Make ``model`` quantizable in place; return it with notes for the report.

    ``target_opset`` defaults to max(current, 13) and is never lower than the model's opset.
    ``data`` (an iterable of feeds) is only read when shape inference leaves values unknown:
    its first few feeds are run; pass a list (or another re-iterable) if you reuse it.
    ``upcast_float16``: an fp16/bf16 model computes in fp32, its inputs and outputs keeping their
    type (``upcast_float16.py``; the quantize paths ask for it).
    """
    notes: list[str] = []
    dtypes = float_dtypes(model)
    if not upcast_float16 and (ir.DataType.FLOAT16 in dtypes or ir.DataType.BFLOAT16 in dtypes):
        notes.append(
            "model holds fp16/bf16 tensors: int8 quantization needs an fp32 model; "
            "re-export it in fp32 (prepare still cleaned the graph)"
        )
    passes = prepare_passes(target_opset, data, upcast_float16)
    model = run_passes(model, passes)
    for p in passes:
        notes.extend(p.notes)
        logger.info("%s: %s", type(p).__name__, "; ".join(p.notes) or "no change")
    return model, list(dict.fromkeys(notes))
