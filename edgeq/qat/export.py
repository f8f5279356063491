"""``export``: the trained QAT module written back as edgeq's QDQ model, then checked.

    QATModel (float weights, trained scales) ==> the same QDQ graph, its initializers replaced:
    W_q = clamp(round(W / s_w), -qmax, qmax)   scale s_w, zero point 0   (int8, or int4 at opset 21)
    b_q = round(b / (s_in * s_w))              int32
    activation scales and zero points          as trained; constants re-quantized on their grid

1. The graph is the one edgeq's static mode wrote for the model (``prepare``); only values
   change, so the file has exactly edgeq's layout and onnxruntime fuses it as it fuses edgeq's.
2. The file then goes through edgeq's checks (onnx.checker; the model loads in onnxruntime) and
   is compared with the torch module on ``example_inputs``: onnxruntime's integer codes at every
   QuantizeLinear within one step of torch's on at least 99.9% of elements (its fused integer
   kernels round once more), each quantizer's torch input computed from onnxruntime's codes
   upstream (so that a one-step difference is not compounded layer after layer); the outputs of
   MatMuls quantized at run time (their inputs forced the same way) and the graph's float outputs
   within one 8-bit step of their own range, (max - min) / 255, on 99.9% of elements. Else an
   ExportError naming the first tensor that differs. The end-to-end difference is reported.
3. Weights of layers left float are stored as float16 (cast back when the session loads), as
   edgeq's quantize stores them by default; ``float_weights="fp32"`` keeps them float32. The
   check runs the torch module with those weights rounded as stored.
4. Written atomically, never over an input.
5. 4-bit weights stay int4 in the file, each read through a Cast to int8 before its
   DequantizeLinear (``passes/int4_storage.py``): onnxruntime folds the Cast at load and runs the
   layer with its int8 kernels, where a DequantizeLinear of int4 codes would run on every
   inference in front of a float Conv.
6. On a CPU whose onnxruntime saturates products of 8-bit weights (x86 without VNNI:
   ``runtime/cpu.py``), a model with 8-bit weights (where static mode measured and kept them,
   ``stages/weight_bits.py``) is checked with onnxruntime's QDQ fusion off
   (``session.disable_quant_qdq``) and its integer MatMuls written as exact float64 arithmetic
   (``passes/integer_as_float.py``): the arithmetic the file states and torch simulates. This
   CPU's kernels differ from both where a pair of products passes 32767 (MiniLM: 99.65% of the
   first MatMul's codes within one step), which is the CPU's, not the export's; the model's
   fidelity on those kernels is what static mode measured in choosing 8 bits, and what a user's
   own measurement sees. ``ExportCheck.fused`` says which form the check ran. ConvInteger and
   DynamicQuantizeLSTM have no exact form: a model with them keeps 7 bits here (``prepare.py`` (4)).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx_ir as ir

from edgeq.errors import EdgeqError, ExportError, UsageError
from edgeq.graph import copy_model

__all__ = ["export", "ExportCheck", "to_onnx", "as_feeds"]

MIN_AGREEMENT = 0.999


@dataclasses.dataclass
class ExportCheck:
    """What ``export`` checked: tensors compared, the worst one's agreement within one step,
    and the outputs' largest difference from torch."""

    path: str
    tensors: int  # quantizer codes, run-time quantized MatMul outputs and float outputs compared
    worst_tensor: str | None
    worst_agreement: float
    output_max_abs: float
    samples: int
    fused: bool = True  # onnxruntime's fused int8 kernels ran (False: QDQ fusion off, (6))


def _set(inits: dict[str, ir.Value], name: str | None, array: np.ndarray, dtype: ir.DataType | None = None) -> None:
    if name is None or name not in inits:
        return
    value = inits[name]
    old = value.const_value
    array = np.asarray(array).reshape(tuple(old.shape)) if old is not None and np.size(array) == np.prod(old.shape) else array
    value.const_value = ir.tensor(array, dtype=dtype or (old.dtype if old is not None else None), name=name)


def to_onnx(qat: Any) -> ir.Model:
    """(1) A copy of ``qat.qdq`` with the trained values."""
    import torch

    model = copy_model(qat.qdq)
    inits = {name: value for graph in model.graphs() for name, value in graph.initializers.items()}  # If bodies too
    qat.eval()
    with torch.no_grad():
        for ref in qat.weights:
            fq = qat.quants[ref.quant]
            weight = qat.weight_value(ref)
            levels = fq.quantize(weight).numpy().astype(np.int64)
            old = inits[ref.q_name].const_value
            if qat.weight_bits == 4 and ref.int4_storage:
                dtype = ir.DataType.INT4
                _set(inits, ref.zp_name, np.zeros(inits[ref.zp_name].const_value.shape, np.int8), ir.DataType.INT4)
            else:
                dtype = old.dtype
            np_type = np.int16 if dtype == ir.DataType.INT16 else np.int8
            _set(inits, ref.q_name, levels.astype(np_type), dtype)
            _set(inits, ref.scale_name, fq.step().numpy())
        for key, (scale_name, zp_name) in qat.activation_quants.items():
            fq = qat.quants[key]
            _set(inits, scale_name, fq.step().numpy())
            if zp_name in inits:
                old = inits[zp_name].const_value
                _set(inits, zp_name, fq.zero_point.numpy().round().astype(old.numpy().dtype))
        for q_name, key, quant in qat.constants:
            fq = qat.quants[quant]
            old = inits[q_name].const_value
            _set(inits, q_name, fq.quantize(qat._get(key)).numpy().astype(old.numpy().dtype))
        for ref in qat.biases:
            bias = qat.bias_value(ref).numpy().astype(np.float64).reshape(-1)
            if ref.act is not None and ref.weight is not None:
                scale = float(qat.quants[ref.act].step().reshape(-1)[0]) * qat.quants[ref.weight].step().numpy().astype(np.float64)
            else:
                scale = inits[ref.scale_name].const_value.numpy().astype(np.float64)
            levels = np.clip(np.round(bias / np.maximum(scale, 1e-30)), -(2**31 - 1), 2**31 - 1).astype(np.int32)
            _set(inits, ref.scale_name, scale.astype(np.float32))
            _set(inits, ref.q_name, levels)
        for name, quant, param in qat.colsums:  # per-token MatMuls' column sums, of the trained weight
            _set(inits, name, qat.quants[quant](qat._get(param)).sum(dim=0).numpy().astype(np.float32))
        for name, key in qat.float_params.items():
            _set(inits, name, qat._get(key).detach().numpy().astype(np.float32))
    return model


def _probe_model(model: ir.Model, names: list[str]) -> ir.Model:
    probe = copy_model(model)
    values = {v.name: v for n in probe.graph for v in n.outputs}
    for name in names:
        if name in values and not values[name].is_graph_output():
            probe.graph.outputs.append(values[name])
    return probe


def saturating(qat: Any) -> bool:
    """(6) Whether ``qat`` has weights of more than 7 bits (|level| > 63) and this CPU's onnxruntime
    saturates products of 8-bit weights (``runtime/cpu.py``)."""
    from edgeq.passes.weights import REDUCED_QMAX
    from edgeq.runtime.cpu import int8_saturates

    wide = any(qat.quants[w.quant].qmax > REDUCED_QMAX for w in qat.weights)
    return wide and int8_saturates()


def check_against_torch(qat: Any, model: ir.Model, feeds: list[dict[str, np.ndarray]],
                        fused: bool = True) -> tuple[str | None, float, float, int]:
    """(2) onnxruntime vs torch, each compared on onnxruntime's own upstream values: the codes at
    every QuantizeLinear (within one code), the outputs of run-time quantized MatMuls and the
    graph's float outputs (within one 8-bit step of their range). Returns the first tensor (graph
    order) below the bar, else the worst; its share within one step; the outputs' largest absolute
    difference end to end; how many tensors were compared. ``fused=False``: onnxruntime's QDQ
    fusion off (6)."""
    import onnxruntime as ort

    from edgeq.io import model_bytes
    from edgeq.passes.integer_as_float import IntegerAsFloatPass

    qat.eval()
    _, codes = qat.codes(feeds[0])
    dyn_in, dyn_out = qat.dynamic_values()
    code_names = [n for n in codes if n not in dyn_out]
    probed = list(dict.fromkeys(code_names + dyn_in + dyn_out))
    probe = _probe_model(model, probed)
    options = ort.SessionOptions()
    if not fused:  # (6) the file's own arithmetic, not this CPU's saturating kernels
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        IntegerAsFloatPass()(probe)
    session = ort.InferenceSession(model_bytes(probe), options, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in session.get_outputs()]
    n_graph = len(model.graph.outputs)
    floats: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in dyn_out + out_names[:n_graph]}
    agree = {n: [0, 0] for n in code_names}
    out_max = 0.0
    for feed in feeds:
        ort_all = dict(zip(out_names, session.run(out_names, feed)))
        torch_out, _ = qat.codes(feed)  # end to end
        torch_out = torch_out if isinstance(torch_out, tuple) else (torch_out,)
        for name, got in zip(out_names[:n_graph], torch_out):
            ref = np.asarray(ort_all[name])
            if np.issubdtype(ref.dtype, np.floating):
                out_max = max(out_max, float(np.max(np.abs(ref.astype(np.float64) - got.numpy()))))
        forced = {n: ort_all[n] for n in code_names + dyn_in if n in ort_all}
        forced_out, found = qat.codes(feed, forced=forced)  # layer by layer
        forced_out = forced_out if isinstance(forced_out, tuple) else (forced_out,)
        found.update({n: o.numpy() for n, o in zip(out_names[:n_graph], forced_out)})
        for name in code_names:
            if name in ort_all and name in found:
                diff = np.abs(np.asarray(ort_all[name], np.int64) - found[name].astype(np.int64))
                agree[name][0] += int(np.sum(diff <= 1))
                agree[name][1] += diff.size
        for name in floats:
            ref = np.asarray(ort_all.get(name))
            if name in found and np.issubdtype(ref.dtype, np.floating):
                floats[name].append((ref.astype(np.float64), found[name].astype(np.float64)))
    for name, pairs in floats.items():  # one step of 8 bits over the tensor's own range
        if pairs:
            ref = np.concatenate([r.reshape(-1) for r, _ in pairs])
            got = np.concatenate([g.reshape(-1) for _, g in pairs])
            step = max(float(ref.max() - ref.min()) / 255, 1e-12)
            agree[name] = [int(np.sum(np.abs(ref - got) <= step)), ref.size]
    order = [n for n in list(code_names) + list(floats) if agree.get(n, [0, 0])[1]]  # graph order, outputs last
    order = list(dict.fromkeys(order))
    shares = {n: agree[n][0] / agree[n][1] for n in order}
    first = next((n for n in order if shares[n] < MIN_AGREEMENT), None)
    worst = first or (min(order, key=shares.get) if order else None)
    return worst, shares.get(worst, 1.0), out_max, len(order)


def export(qat: Any, example_inputs: Any, path: str | os.PathLike, *, check: bool = True,
           float_weights: str = "fp16") -> ExportCheck:
    """Write ``qat`` (a ``QATModel``) as a QDQ ONNX file at ``path`` and check it; see the module
    doc. ``example_inputs``: a feed dict, a list of feed dicts, or the model's inputs (tensors).
    ``float_weights``: "fp16" stores the weights of layers left float as float16, cast to float32
    when the session loads, as edgeq's quantize does by default (``passes/float_weights.py``)."""
    from edgeq.io import save_model
    from edgeq.passes.float_weights import float16_forms, store_float16
    from edgeq.passes.int4_storage import Int4StoragePass
    from edgeq.stages.check import check as onnx_check

    if float_weights not in ("fp16", "fp32"):
        raise UsageError(f"float_weights={float_weights!r}: choose fp16 or fp32")
    model = to_onnx(qat)
    Int4StoragePass()(model)  # (5) int4 codes packed, read at int8 speed
    stored = float16_forms(model) if float_weights == "fp16" else {}  # (3) what the check's torch side reads too
    if float_weights == "fp16":
        store_float16(model)
    feeds = as_feeds(example_inputs, qat.input_names)
    try:
        onnx_check(model)
    except EdgeqError:
        raise
    except Exception as e:  # noqa: BLE001 - the checker's own errors
        raise ExportError(f"the exported QAT model fails onnx.checker: {e}") from None
    worst, share, out_max, count = (None, 1.0, 0.0, 0)
    fused = not saturating(qat)
    if check:
        with _as_stored(qat, stored):
            worst, share, out_max, count = check_against_torch(qat, model, feeds, fused)
        if worst is not None and share < MIN_AGREEMENT:
            raise ExportError(
                f"onnxruntime and the torch QAT model differ at {worst!r}: {share:.2%} of its codes within one "
                f"step (needs {MIN_AGREEMENT:.1%}); the first such tensor in the graph order is where they part")
    saved = save_model(model, os.fspath(path), inputs=[])
    return ExportCheck(saved, count, worst, share, out_max, len(feeds), fused)


@contextlib.contextmanager
def _as_stored(qat: Any, stored: dict[str, np.ndarray]) -> Iterator[None]:
    """(3) The module's float weights as the file stores them (float16) while the check runs, then
    back: otherwise the check sees the rounding as a difference, and where it cannot force
    onnxruntime's codes into torch (inside If branches) the difference compounds (vad, 4-bit)."""
    import torch

    saved = {}
    with torch.no_grad():
        for name, half in stored.items():
            key = qat._buffers_by_value.get(name)
            if key is None:
                continue
            tensor = qat._get(key)
            saved[key] = tensor.detach().clone()
            tensor.copy_(torch.from_numpy(half.astype(np.float32)).reshape(tensor.shape))
    try:
        yield
    finally:
        with torch.no_grad():
            for key, value in saved.items():
                qat._get(key).copy_(value)


def as_feeds(example_inputs: Any, names: list[str]) -> list[dict[str, np.ndarray]]:
    """Feed dicts from a feed dict, a list of them, or a model's inputs in order (tensors or
    arrays, named ``names``)."""
    import torch

    def as_np(x: Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    if isinstance(example_inputs, dict):
        return [{k: as_np(v) for k, v in example_inputs.items()}]
    if isinstance(example_inputs, list) and example_inputs and isinstance(example_inputs[0], dict):
        return [{k: as_np(v) for k, v in f.items()} for f in example_inputs]
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return [{n: as_np(t) for n, t in zip(names, inputs)}]
