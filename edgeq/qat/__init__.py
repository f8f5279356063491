"""Quantization-aware training that ends in edgeq's own QDQ model (docs/qat.md).

    qat = edgeq.qat.prepare(model, example_inputs, calib=feeds)   # torch module, fake-quantized
    edgeq.qat.fit(qat, loader, loss_fn, epochs=3, amp="bf16")     # or your own training loop
    edgeq.qat.export(qat, example_inputs, "model.int8.onnx")      # QDQ ONNX, checked vs torch

Needs torch (``pip install 'edgeq[torch]'``); ``edgeq.runtime`` never imports this package.
"""

from __future__ import annotations

from edgeq.qat.config import QATConfig
from edgeq.qat.export import export
from edgeq.qat.prepare import prepare

__all__ = ["QATConfig", "prepare", "export"]
