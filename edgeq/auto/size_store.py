"""How auto's answer stores its weights for a size target (``size_fit.py``): the options of each
weight, the file a plan makes, and what that file computes.

    ladders, probe_error, kinds = ladders_of(answer, cache)   # per weight: (bits or None, bytes, error)
    stored = apply_plan(answer, {name: bits}, cache)          # the file: codebooks unpacked at load
    judged = rebuilt_model(answer, {name: bits}, cache)       # what it computes, weights written out

1. Options per weight, widest (as auto stored it) first: an int8 weight (a Conv's, a MatMul's
   through its DequantizeLinear, a dynamic or per-token MatMul's B, an embedding table) at 8 bits
   or through integer codebooks of ``INT_WIDTHS`` bits (``passes/integer_codebooks.py``); a
   float weight (fp16 behind a Cast, or fp32 where fp16 would not hold it) as stored or through
   k-means codebooks of ``FLOAT_WIDTHS`` bits. Each weight clustered once per width (``cache``).
2. ``apply_plan``: the weights a plan names through codebooks (``CodebookWeightsPass(integer=
   True, only=...)``), the other float weights fp16 again, exporters' metadata dropped, and
   intermediate shapes where ``drop_shapes`` (``stages/shapes_free.py``).
3. ``rebuilt_model``: the same plan with each weight replaced by the tensor the folded chain makes
   (exactly: tests/auto/test_size_fit.py runs both bit for bit), for the probes and checks: their
   sessions have nothing to unpack when they load.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ladders_of", "apply_plan", "rebuilt_model", "candidates", "INT_WIDTHS", "FLOAT_WIDTHS"]

INT_WIDTHS = (6, 5, 4, 3, 2)  # (1) below the int8 weight itself
FLOAT_WIDTHS = (8, 6, 5, 4, 3, 2)


def _widen(model: Any) -> set[str]:
    """fp16 weight -> Cast(to=FLOAT) -> readers  ==>  an fp32 initializer of the Cast's output name
    (exact: the fp16 values), so that codebooks see it as a float weight; the names widened."""
    import onnx_ir as ir

    from edgeq.graph import add_initializer, const_array

    graph, widened = model.graph, set()
    for node in list(graph):
        if node.op_type != "Cast" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 1:
            continue
        source, out = node.inputs[0], node.outputs[0]
        to = node.attributes.get("to")
        if (to is None or to.as_int() != ir.DataType.FLOAT or source is None or not source.is_initializer()
                or len(source.uses()) != 1 or out.is_graph_output()):
            continue
        array = const_array(source)
        if array is None or array.dtype != np.float16:
            continue
        name = out.name
        graph.remove(node, safe=False)
        graph.initializers.pop(source.name)
        wide = add_initializer(graph, f"{name}__wide", array.astype(np.float32))
        out.replace_all_uses_with(wide)
        graph.initializers.pop(wide.name)
        wide.name = name
        graph.register_initializer(wide)
        widened.add(name)
    return widened


def _codes(cache: dict, value: Any, transposed: bool, bits: int) -> tuple:
    """A weight's codes at ``bits`` (integer codebooks for int8), from ``cache`` where the same
    data was clustered before (a refit of the answer stores the same weights)."""
    from edgeq.graph import const_array
    from edgeq.passes.codebook_weights import encode
    from edgeq.passes.integer_codebooks import encode_integer

    array = np.asarray(const_array(value))
    integer = array.dtype == np.int8
    key = (value.name, "int" if integer else "kmeans", bits)
    hit = cache.get(key)
    rows = np.ascontiguousarray(array.T) if transposed else array.reshape(array.shape[0], -1)
    if hit is not None and hit[0].shape == rows.shape and np.array_equal(hit[0], rows.astype(np.float32)):
        return hit
    codes = encode_integer(array, transposed, bits) if integer else encode(array.astype(np.float32), transposed,
                                                                            "kmeans", bits)
    shared = cache.setdefault(("rows", value.name), codes[0])  # one copy of a weight's rows for all its widths
    if shared.shape == codes[0].shape and np.array_equal(shared, codes[0]):
        codes = (shared, *codes[1:])
    cache[key] = codes
    return codes


def candidates(model: Any) -> dict[Any, bool]:
    from edgeq.passes.codebook_weights import compressible
    from edgeq.passes.integer_codebooks import integer_compressible
    from edgeq.passes.per_token import TERMS

    keep = frozenset(n.name for n in model.graph if n.name and n.name.endswith(TERMS))  # per-token row arithmetic
    return {**compressible(model.graph, keep), **integer_compressible(model.graph, keep)}


def _working_copy(model: Any) -> tuple[Any, set[str], dict[Any, bool]]:
    """A copy of ``model`` with its fp16 weights widened, the names widened, and its candidates."""
    from edgeq.graph import copy_model

    model = copy_model(model)
    widened = _widen(model)
    return model, widened, candidates(model)


def apply_plan(model: Any, plan: dict[str, int], cache: dict, drop_shapes: bool = True) -> Any:
    """``model`` (a copy is changed) with the weights ``plan`` names stored at its widths (1), the
    rest as they were; exporters' metadata dropped, and intermediate shapes where ``drop_shapes``
    (``stages/shapes_free.py``: where onnxruntime runs the same operators without them)."""
    from edgeq.passes.codebook_weights import CodebookWeightsPass
    from edgeq.passes.drop_shapes import DropShapesPass
    from edgeq.passes.float_weights import store_float16
    from edgeq.passes.strip_debug import StripDebugMetadataPass

    model, widened, found = _working_copy(model)
    chosen = {name: bits for name, bits in plan.items() if bits is not None}
    if chosen:
        local: dict = {}
        for value, transposed in found.items():
            if value.name in chosen:
                codes = _codes(cache, value, transposed, chosen[value.name])
                local[(value.name, "int" if codes[1].dtype == np.int8 else "kmeans", chosen[value.name])] = codes
        CodebookWeightsPass("kmeans", 8, per_weight={n: ("kmeans", b) for n, b in chosen.items()}, cache=local,
                            integer=True, only=frozenset(chosen))(model)
    if widened:
        store_float16(model)  # the float weights not stored by codebooks: fp16 again, as they were
    StripDebugMetadataPass()(model)
    if drop_shapes:
        DropShapesPass()(model)
    return model


def rebuilt_model(model: Any, plan: dict[str, int], cache: dict, drop_shapes: bool = True) -> Any:
    """What ``apply_plan(model, plan, cache, drop_shapes)`` computes once onnxruntime has folded its
    codebooks: a copy with each weight ``plan`` names replaced by its rebuilt values (exactly the
    tensor the folded chain makes; the same shapes dropped, which can change onnxruntime's fusions),
    for judging and probing: no unpacking to fold when its session loads."""
    import onnx_ir as ir

    from edgeq.passes.codebook_weights import rebuilt
    from edgeq.passes.drop_shapes import DropShapesPass

    model, _, found = _working_copy(model)
    chosen = {name: bits for name, bits in plan.items() if bits is not None}
    for value, transposed in found.items():
        if value.name not in chosen:
            continue
        rows, book, indices = _codes(cache, value, transposed, chosen[value.name])
        # float32 holds an int8 codebook's entries exactly: the int8 tensor the folded chain makes
        values = rebuilt(rows, book, indices).astype(np.int8 if book.dtype == np.int8 else np.float32)
        values = np.ascontiguousarray(values.T if transposed else values.reshape(tuple(value.const_value.shape)))
        value.const_value = ir.Tensor(values, name=value.name)
    if drop_shapes:
        DropShapesPass()(model)
    return model


def ladders_of(model: Any, cache: dict) -> tuple[dict[str, list], dict[str, float], dict[str, str]]:
    """(1) Per weight its options ``(bits or None, bytes, squared error)``, its probe error, and
    whether it is an int8 or a float weight, by name."""
    from edgeq.passes.codebook_weights import stored_bytes
    from edgeq.stages.size_target import PROBE_BITS

    _, widened, found = _working_copy(model)
    ladders, probe_error, kinds = {}, {}, {}
    for value, transposed in found.items():
        codes = {}
        integer = np.asarray(value.const_value.numpy()).dtype == np.int8
        widths = INT_WIDTHS if integer else FLOAT_WIDTHS
        for bits in sorted(set(widths) | {PROBE_BITS}):
            codes[bits] = _codes(cache, value, transposed, bits)
        size = value.const_value.size
        first = (None, size * (1 if integer else 2 if value.name in widened else 4), 0.0)
        errors = {b: float(np.square(c[0].astype(np.float64) - _rebuilt(c)).sum()) for b, c in codes.items()}
        ladders[value.name] = [first, *((b, stored_bytes(codes[b][1], codes[b][2], b), errors[b]) for b in widths)]
        probe_error[value.name] = errors[PROBE_BITS]
        kinds[value.name] = "int8" if integer else "float"
    return ladders, probe_error, kinds


def _rebuilt(codes: tuple) -> np.ndarray:
    from edgeq.passes.codebook_weights import rebuilt

    rows, book, indices = codes
    return rebuilt(rows, book, indices).astype(np.float64)
