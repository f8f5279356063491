"""The ``compress`` mode: the smallest file that runs anywhere, weights in N bits through codebooks.

    load -> prepare (BatchNorm folded ...) -> CodebookWeightsPass (passes/codebook_weights.py)
         -> exporters' metadata stripped -> the other float weights of 1024+ elements as fp16
         (passes/float_weights.py) -> check -> report

Edge updates ship over slow links, and devices keep several models in flash. Every Conv, MatMul
and Gemm weight and every Gather table (embeddings) of at least 1024 elements is stored as
N-bit indices into codebooks of its output channels (``--weights kmeans:N``, ``uniform:N`` or
``pot``); the graph rebuilds the float weights from them, and onnxruntime does that once, when
the session loads (constant folding): the kernels, and so the speed, are fp32's. No data needed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeq.config import QuantConfig
    from edgeq.stages.result import QuantResult

__all__ = ["quantize_compressed"]


def quantize_compressed(model: Any, config: QuantConfig, data: Any = None, *, eval_data: Any = None,
                        labels: Any = None, ranges: Any = None, progress: bool = True) -> QuantResult:
    """Handler of the ``compress`` row of the mode table (``data``, ``ranges`` unused)."""
    from edgeq.config import codebook_spec, weight_codebook
    from edgeq.errors import UsageError
    from edgeq.passes.codebook_weights import OPSET, CodebookWeightsPass
    from edgeq.passes.float_weights import store_float16
    from edgeq.passes.strip_debug import StripDebugMetadataPass
    from edgeq.stages.check import check
    from edgeq.stages.load import load, prepare
    from edgeq.stages.report import finish, plain_report
    from edgeq.stages.result import QuantResult

    start = time.perf_counter()
    loaded = load(model, None, keep_fp32=eval_data is not None)
    if loaded.model.opset_imports.get("", 1) < OPSET and (config.opset or 0) < OPSET:
        config = config.replace(opset=OPSET)  # codebook_weights.py (2)
    prepared = prepare(loaded, config)
    model = prepared.model
    scheme, bits = weight_codebook(config.weights)
    per_node = {name: codebook_spec(value) for name, value in config.precision.items() if value != "fp32"}
    known = {n.name for n in model.graph} | {n.op_type for n in model.graph}
    unknown = [name for name in config.precision if name not in known]
    if unknown:
        raise UsageError(f"precision names {unknown[0]!r}, which is neither a node nor an op type of the prepared "
                         "model: use the node names `edgeq inspect MODEL` shows")
    bad = [f"{name}={value}" for name, value in per_node.items() if value is None]
    if bad:
        raise UsageError(f"compress mode takes per-layer fp32, kmeans:N, uniform:N or pot, not {bad[0]}")
    stored = CodebookWeightsPass(scheme, bits, keep=frozenset(config.precision.nodes("fp32")), per_node=per_node)
    stored(model)
    StripDebugMetadataPass()(model)  # exporters' stack traces: not for deployment
    halves, saved = store_float16(model) if config.float_weights == "fp16" else (0, 0)
    check(model)
    weights = sum(int(layer["fp32_bytes"]) // 4 for layer in stored.layers)
    kept = sum(int(layer["bytes"]) for layer in stored.layers)
    notes = []
    if weights:
        kinds = sorted({f"{layer['scheme']} {layer['bits']}-bit" for layer in stored.layers})
        notes.append(f"{len(stored.layers)} weight tensor(s), {weights} weights, in {8 * kept / weights:.2f} bits a "
                     f"weight ({', '.join(kinds)}, codebooks included): {4 * weights / max(kept, 1):.1f}x smaller "
                     "than fp32; rebuilt when the session loads, so the kernels are fp32's")
    if halves:
        notes.append(f"{halves} other float weight tensor(s) stored as fp16 ({saved / 1e6:.2f} MB saved)")
    left = [{"node": name, "op": "", "reason": "kept fp32 as asked"} for name in config.precision.nodes("fp32")]
    report = plain_report(model, config, prepared, quantized_count=len(stored.layers), quantized=stored.layers,
                          left_float=left)
    report["notes"] = notes
    report["compress"] = {"scheme": scheme, "bits": bits, "weights": weights, "bytes": kept,
                          "bits_per_weight": round(8 * kept / weights, 3) if weights else None}
    result = QuantResult(model=model, report=report, ranges=None, source=prepared.source)
    return finish(result, prepared, config, eval_data, labels, start)

