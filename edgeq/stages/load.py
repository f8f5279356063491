"""Stages 1 and 2: ``load`` (the caller's model as a fresh graph, the data checked against it)
and ``prepare`` (make it quantizable: ``edgeq.prepare``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from edgeq.io import as_model, weights_nbytes

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.config import QuantConfig
    from edgeq.runtime.memory import InMemoryModel

__all__ = ["Loaded", "Prepared", "load", "prepare"]


@dataclasses.dataclass
class Loaded:
    """The model as given (a fresh copy: the caller's is never changed), and what the report
    needs from before any change."""

    model: ir.Model
    source: str | None  # its path, if it came from a file
    data: Any  # the calibration data as a FeedSource checked against the model, or None
    fp32: InMemoryModel | None  # the fp32 model as given (its weights by reference), for evaluation
    size_before: int  # weight bytes as given


@dataclasses.dataclass
class Prepared(Loaded):
    """A loaded model after ``prepare``, with prepare's notes for the report. The input of
    ``build_variant``: a search builds many variants of one ``Prepared``."""

    notes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, model: ir.Model, notes: list[str] | tuple[str, ...] = ()) -> Prepared:
        """Wrap a model that ``prepare`` already made quantizable (auto's float model and its
        repaired variants): no source file, no data, its own weight bytes as the size before."""
        return cls(model, None, None, None, weights_nbytes(model), list(notes))


def load(model: Any, data: Any = None, *, keep_fp32: bool = False) -> Loaded:
    """Stage 1. ``model``: a path, onnx.ModelProto or onnx_ir.Model; ``data``: anything
    ``edgeq.calibrate.load_data`` takes (validated against the model's inputs now)."""
    from edgeq.modelinfo import refuse_quantized
    from edgeq.runtime.memory import in_memory

    loaded, source = as_model(model)
    refuse_quantized(loaded, source)  # a second quantization would round int8 weights twice
    # a model read from a file: its sessions load that file (memory.InMemoryModel.path)
    fp32 = in_memory(loaded, path=source if isinstance(source, str) else None) if keep_fp32 else None
    size_before = weights_nbytes(loaded)
    feeds = None
    if data is not None:
        from edgeq.calibrate import load_data

        feeds = load_data(data, loaded)
    return Loaded(loaded, source, feeds, fp32, size_before)


def prepare(loaded: Loaded, config: QuantConfig) -> Prepared:
    """Stage 2: ``edgeq.prepare.prepare_model`` in place (opset, constants, BatchNorm folding,
    shapes ...), its notes kept for the report."""
    from edgeq.prepare import prepare_model

    model, notes = prepare_model(loaded.model, target_opset=config.opset, data=loaded.data, upcast_float16=True)
    return Prepared(model, loaded.source, loaded.data, loaded.fp32, loaded.size_before, notes)
