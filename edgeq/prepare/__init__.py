"""Make any real-world ONNX graph quantizable: passes that run before calibration.

``prepare_model(model, target_opset=None, data=None) -> (model, notes)`` runs the pipeline in
:mod:`edgeq.prepare.pipeline`; :func:`edgeq.prepare.quantizability.check` lists what would block
or limit quantization before any work.
"""

from __future__ import annotations

from edgeq.prepare.pipeline import prepare_model, prepare_passes

__all__ = ["prepare_model", "prepare_passes"]
