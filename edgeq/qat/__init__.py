"""Quantization-aware training that ends in edgeq's own QDQ model (docs/qat.md).

    qat = edgeq.qat.prepare(model, example_inputs, calib=feeds)   # torch module, fake-quantized
    edgeq.qat.fit(qat, loader, loss_fn, epochs=3, amp="bf16")     # or your own training loop
    edgeq.qat.export(qat, example_inputs, "model.int8.onnx")      # QDQ ONNX, checked vs torch

Needs torch (``pip install 'edgeq[torch]'``); ``edgeq.runtime`` never imports this package.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("torch") is None:
    raise ImportError("edgeq.qat (quantization-aware training) needs torch, which is not installed: "
                      "pip install 'edgeq[torch]'")

from edgeq.qat.config import QATConfig  # noqa: E402
from edgeq.qat.export import export  # noqa: E402
from edgeq.qat.fit import fit  # noqa: E402
from edgeq.qat.prepare import prepare  # noqa: E402

__all__ = ["QATConfig", "prepare", "fit", "export"]
