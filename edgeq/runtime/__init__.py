"""A light layer over onnxruntime for apps: sessions, run, bench. Imports neither torch nor onnx_ir.

    from edgeq.runtime import Session, CUDAOptions, TensorRTOptions, load_feeds
    sess = Session("model.onnx", providers=(TensorRTOptions(fp16=True), CUDAOptions(), "cpu"))
    outputs = sess.run(load_feeds("inputs.npz")[0])   # checked: names, dtypes, ranks, fixed dims
    sess.providers                                     # what onnxruntime actually used

    from edgeq.runtime.bench import bench             # latency, throughput, memory, size
    from edgeq.runtime.profile import profile         # time per op type and node

Names are imported lazily, so ``import edgeq.runtime`` does not even import onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "Session": "edgeq.runtime.session",
    "CPUOptions": "edgeq.runtime.providers",
    "CUDAOptions": "edgeq.runtime.providers",
    "TensorRTOptions": "edgeq.runtime.providers",
    "available_providers": "edgeq.runtime.providers",
    "TensorSpec": "edgeq.runtime.feeds",
    "check_feeds": "edgeq.runtime.feeds",
    "load_feeds": "edgeq.runtime.feeds",
    "iter_feeds": "edgeq.runtime.feeds",
    "random_feeds": "edgeq.runtime.feeds",
    "BenchResult": "edgeq.runtime.bench",
}

__all__ = [*_LAZY, "bench"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "bench":  # the submodule; call edgeq.runtime.bench.bench(...)
        return importlib.import_module("edgeq.runtime.bench")
    raise AttributeError(f"module 'edgeq.runtime' has no attribute {name!r}")
