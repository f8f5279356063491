"""The ``compress`` mode: the smallest file that runs anywhere, weights in N bits through codebooks.

    load -> prepare (BatchNorm folded ...) -> CodebookWeightsPass (passes/codebook_weights.py)
         -> exporters' metadata and intermediate shapes (passes/drop_shapes.py; where onnxruntime runs
            the same operators without them, stages/shapes_free.py) stripped
         -> the other float weights of 1024+ elements as fp16
         (passes/float_weights.py), the smaller ones in one fp16 block (passes/pack_small_floats.py)
         -> check -> report

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


def _write(model: Any, config: QuantConfig, scheme: str, bits: int, keep: frozenset[str], per_node: dict,
           per_weight: dict, cache: dict, drop_shapes: bool = True) -> tuple[Any, tuple[int, int, int, int]]:
    """``model`` in place as this mode writes it: codebook weights, exporters' metadata stripped,
    the other float weights fp16 (``float_weights``), intermediate shapes dropped where
    ``drop_shapes`` (``stages/shapes_free.py``). Returns the codebook pass (its ``layers``), and
    the tensors stored as fp16 and bytes saved: alone, and packed."""
    from edgeq.passes.codebook_weights import CodebookWeightsPass
    from edgeq.passes.drop_shapes import DropShapesPass
    from edgeq.passes.float_weights import store_float16
    from edgeq.passes.pack_small_floats import PackSmallFloatsPass
    from edgeq.passes.strip_debug import StripDebugMetadataPass

    stored = CodebookWeightsPass(scheme, bits, keep=keep, per_node=per_node, per_weight=per_weight, cache=cache)
    stored(model)
    StripDebugMetadataPass()(model)  # exporters' stack traces: not for deployment
    halves = saved = 0
    packed = PackSmallFloatsPass()
    if config.float_weights == "fp16":
        halves, saved = store_float16(model)
        packed(model)  # the smaller ones (biases ...) in one fp16 block
    if drop_shapes:  # intermediate shapes: a tenth of a small model's file, where onnxruntime infers what it needs
        DropShapesPass()(model)
    return stored, (halves, saved, packed.count, packed.saved)


def _size_search(model: Any, config: QuantConfig, scheme: str, bits: int, keep: frozenset[str], per_node: dict,
                 prepared: Any, input_bytes: int, cache: dict, progress: bool, drop_shapes: bool) -> tuple[dict, dict]:
    """``stages/size_target.py`` on ``model``: each candidate written (``_write``) on a copy and
    measured; the output SQNR is the last one's, the file this handler then writes."""
    import itertools

    from edgeq.config import parse_size_target
    from edgeq.graph import copy_model
    from edgeq.io import model_bytes
    from edgeq.stages import size_target

    kind, amount = parse_size_target(config.max_size)
    limit = amount * 1e6 if kind == "mb" else input_bytes / amount
    built: list[bytes] = []

    def build(per_weight: dict) -> int:
        candidate = copy_model(model)
        _write(candidate, config, scheme, bits, keep, per_node, per_weight, cache, drop_shapes)
        built[:] = [model_bytes(candidate)]
        return len(built[0])

    feeds = list(itertools.islice(iter(prepared.data), size_target.MAX_FEEDS)) if prepared.data is not None else None
    widths = tuple(b for b in size_target.WIDTHS if b <= bits)
    plan, summary = size_target.size_plan(model, scheme, keep, per_node, feeds, cache, limit, build,
                                          progress=progress, widths=widths)
    if feeds:  # size_target.py (5): the file the search built last (its plan) on the samples it measured with
        summary["sqnr_db"] = round(size_target.measured_sqnr(model_bytes(model), built[0], feeds), 1)
    return plan, summary


def quantize_compressed(model: Any, config: QuantConfig, data: Any = None, *, eval_data: Any = None,
                        labels: Any = None, ranges: Any = None, progress: bool = True) -> QuantResult:
    """Handler of the ``compress`` row of the mode table (``ranges`` unused; ``data``: with
    ``config.max_size``, the samples each layer's effect on the outputs is measured on)."""
    from edgeq.config import codebook_spec, weight_codebook
    from edgeq.errors import UsageError
    from edgeq.passes.codebook_weights import OPSET
    from edgeq.stages.check import check
    from edgeq.stages.load import load, prepare
    from edgeq.stages.report import finish, plain_report
    from edgeq.stages.result import QuantResult

    start = time.perf_counter()
    loaded = load(model, data if config.max_size else None, keep_fp32=eval_data is not None)
    from edgeq.io import given_bytes

    input_bytes = given_bytes(loaded.model, loaded.source) if config.max_size else 0
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
    keep = frozenset(config.precision.nodes("fp32"))
    per_weight, cache, search = {}, {}, None
    from edgeq.stages.shapes_free import shapes_are_free

    drop_shapes = shapes_are_free(model)
    if config.max_size:
        per_weight, search = _size_search(model, config, scheme, bits, keep, per_node, prepared, input_bytes,
                                          cache, progress, drop_shapes)
    stored, (halves, saved, packs, packed) = _write(model, config, scheme, bits, keep, per_node, per_weight, cache,
                                                    drop_shapes)
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
    if packs:
        notes.append(f"{packs} small float tensor(s) (biases ...) stored in one fp16 block (about {packed} bytes saved)")
    left = [{"node": name, "op": "", "reason": "kept fp32 as asked"} for name in config.precision.nodes("fp32")]
    report = plain_report(model, config, prepared, quantized_count=len(stored.layers), quantized=stored.layers,
                          left_float=left)
    report["notes"] = notes
    report["compress"] = {"scheme": scheme, "bits": bits, "weights": weights, "bytes": kept,
                          "bits_per_weight": round(8 * kept / weights, 3) if weights else None}
    if search is not None:
        report["compress"]["size_target"] = search
        widths = ", ".join(f"{n} at {b} bits" for b, n in search["widths"].items() if n)
        forecast = (f"; output SQNR {search['sqnr_db']} dB on those samples (forecast {search['predicted_sqnr_db']} dB; "
                    "--eval measures it on others)" if "sqnr_db" in search else "")
        notes.insert(0, f"--max-size {config.max_size}: {search['bytes'] / 1e6:.3f} MB within {search['limit_bytes'] / 1e6:.3f}"
                        f" MB; {search['searched']} weights searched: {widths}; {search['sensitivity']}{forecast}")
    result = QuantResult(model=model, report=report, ranges=None, source=prepared.source)
    return finish(result, prepared, config, eval_data, labels, start)

