"""Recurrent cells with int8 weights: ONNX LSTM ==> onnxruntime's DynamicQuantizeLSTM.

    LSTM(X, W[D,4H,I], R[D,4H,H], B, seq_lens, h0, c0, P)
    ==> com.microsoft.DynamicQuantizeLSTM(X, W_q[D,I,4H] int8, R_q[D,H,4H] int8, B, seq_lens, h0, c0, P,
                                          W_scale[D,4H], W_zp[D,4H] = 0, R_scale[D,4H], R_zp[D,4H] = 0)

1. The kernel reads W and R transposed, ``[num_directions, in, 4*hidden]`` (the K x N of its
   GEMMs), as int8 or uint8. int8 symmetric in [-127, 127] with zero points 0 (the kernel
   requires 0 for int8 per-column zero points), one scale per direction and gate column
   (``[D, 4H]``, the output channels); per-tensor granularity gives one per direction (``[D]``).
   Where the CPU saturates 8-bit products (x86 without VNNI: runtime/cpu.py), the kernel's GEMMs
   pair rows 2i, 2i + 1 of each direction's [K, 4H] as a MatMul's (measured against X and the
   hidden state at code 255: tests/runtime/test_cpu.py), so the levels keep 8 bits with each
   same-sign pair there within 128 (``weights.quantize_paired``, ``pairs_form``); with
   ``reduce_range`` True, or a kernel that pairs otherwise, 7 bits ([-63, 63]: ``weight_qmax``).
2. X and the hidden state are quantized to uint8 by the kernel at run time, asymmetric from
   their min/max (X once for the whole sequence in one GEMM, the hidden state at every step),
   so nothing is calibrated. B, P, the initial
   states and the outputs stay float; every attribute carries over (direction, activations,
   activation_alpha/beta, clip, input_forget). ``hidden_size``, optional in ONNX, is required
   by the kernel: taken from R when absent.
3. Missing optional inputs (B, sequence_lens, initial_h, initial_c, P: empty names) stay
   missing; the scales sit at fixed positions 8 to 11 behind them.
4. A W or R read by several LSTMs is quantized once: every reader reads the same int8
   initializers (``share_weights.py`` would merge equal copies anyway; this spares the work).
5. Float, with the reason ``recurrent_float_reason`` gives (select.py (10)): layout=1
   (batch-major: no onnxruntime LSTM kernel, float or int8, takes it, and the contrib op has
   no layout attribute), W or R not a constant, X not float32; GRU and RNN (onnxruntime has
   no int8 kernel for them).
6. An LSTM with hidden_size < ``MIN_HIDDEN`` stays float: each step's run-time quantization of
   the hidden state costs more than its int8 GEMMs save (measured on onnxruntime 1.32, 1 thread,
   10 to 50 steps: hidden 16 and 32 up to 20% slower than fp32, 48 even, 64 1.1x to 1.4x faster).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.config import PerTensor, QuantConfig
from edgeq.graph import MS_DOMAIN, add_initializer, const_array, graphs_of, remove_unused_initializers
from edgeq.passes.plan import QuantPlan, Role, attr_value, derived_name, fresh_base, is_float, node_label
from edgeq.passes.weights import QMAX, note_reduced, pairs_form, quantize_paired, quantize_weight, weight_qmax

__all__ = ["QuantizeRecurrentPass", "recurrent_float_reason", "RECURRENT"]

logger = logging.getLogger(__name__)

RECURRENT = frozenset({"LSTM", "GRU", "RNN"})
MIN_HIDDEN = 64  # (6)


def recurrent_float_reason(node: ir.Node) -> str | None:
    """(5) None when ``node`` (an LSTM) can run as DynamicQuantizeLSTM, else why it stays float."""
    if node.op_type != "LSTM":
        return (f"{node.op_type} has no int8 kernel in onnxruntime (no quantized {node.op_type} contrib op; "
                "only LSTM has one, DynamicQuantizeLSTM)")
    if attr_value(node, "layout", 0) != 0:
        return ("LSTM with layout=1 (batch-major): onnxruntime's LSTM kernels, DynamicQuantizeLSTM "
                "included, take only layout=0")
    x = node.inputs[0]
    if not is_float(x):
        return f"input {x.name!r} is {x.dtype}, not float32"
    directions = 2 if attr_value(node, "direction", "forward") == "bidirectional" else 1
    for index, name in ((1, "W"), (2, "R")):
        weight = const_array(node.inputs[index])
        if weight is None:
            return f"LSTM weight {name} is not a constant (int8 weights are quantized offline)"
        if weight.ndim != 3 or weight.shape[0] != directions or weight.shape[1] % 4:
            return f"LSTM weight {name} has shape {list(weight.shape)}, not [{directions}, 4*hidden, ...]"
    hidden = const_array(node.inputs[2]).shape[2]
    if hidden < MIN_HIDDEN:  # (6)
        return (f"LSTM with hidden_size {hidden} (< {MIN_HIDDEN}): quantizing the hidden state at every step "
                "would cost more than its int8 GEMMs save")
    return None


class QuantizeRecurrentPass(ir.passes.InPlacePass):
    def __init__(self, config: QuantConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan
        self.qmax = weight_qmax(config)
        self.paired = self.qmax != QMAX and pairs_form(config)  # (1) 8 bits, pairs along K within 128

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        self._done: dict[tuple[ir.Value, ir.Graph], tuple[ir.Value, ir.Value, ir.Value, dict]] = {}  # (4)
        for graph in graphs_of(model):  # subgraphs too (select.py (11)), each with its own weights
            for node in list(graph):
                if node.op_type == "LSTM" and self.plan.role(node) == Role.DYNAMIC:
                    self._lstm(graph, node)
                    count += 1
        if count:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        logger.info("quantize_recurrent: %d LSTM to DynamicQuantizeLSTM", count)
        if count and self.qmax != QMAX:
            note_reduced(self.plan.notes, self.config, paired=self.paired)
        return ir.passes.PassResult(model, modified=count > 0)

    def _weight(self, graph: ir.Graph, value: ir.Value, label: str) -> tuple[ir.Value, ir.Value, ir.Value, dict]:
        """(1) [D, 4H, K] float ==> [D, K, 4H] int8, scales and zero points [D, 4H] (or [D])."""
        if (value, graph) in self._done:  # (4)
            return self._done[(value, graph)]
        weight = const_array(value).astype(np.float32)
        per_channel = not isinstance(self.config.granularity, PerTensor)
        transposed = np.ascontiguousarray(weight.transpose(0, 2, 1))
        axis = 1 if per_channel else None
        parts = [quantize_paired(w, axis, "MatMul") if self.paired else quantize_weight(w, axis, qmax=self.qmax)
                 for w in transposed]  # (1) each direction's [K, 4H]
        values = np.stack([q.values for q in parts])
        scale = np.stack([q.scale for q in parts]).astype(np.float32)
        errors = [float(np.max(np.abs(w - q.dequantize()))) if w.size else 0.0 for w, q in zip(transposed, parts)]
        base = fresh_base(graph, value.name or label, ("_q", "_scale", "_zp"))
        out = (add_initializer(graph, f"{base}_q", values), add_initializer(graph, f"{base}_scale", scale),
               add_initializer(graph, f"{base}_zp", np.zeros(scale.shape, np.int8)),
               {"granularity": "per-channel:gate-column" if per_channel else "per-direction",
                "channels": int(scale.size), "scale_min": float(scale.min()), "scale_max": float(scale.max()),
                "max_abs_error": max(errors)})
        self._done[(value, graph)] = out
        return out

    def _lstm(self, graph: ir.Graph, node: ir.Node) -> None:
        label = node_label(node)
        w_q, w_scale, w_zp, w_summary = self._weight(graph, node.inputs[1], f"{label}_W")
        r_q, r_scale, r_zp, r_summary = self._weight(graph, node.inputs[2], f"{label}_R")
        optional = list(node.inputs[3:8]) + [None] * (8 - len(node.inputs))  # (3)
        attrs = dict(node.attributes.items())  # (2)
        if "hidden_size" not in attrs:
            hidden = const_array(node.inputs[2]).shape[2]
            attrs["hidden_size"] = ir.AttrInt64("hidden_size", int(hidden))
        new = ir.Node(MS_DOMAIN, "DynamicQuantizeLSTM",
                      [node.inputs[0], w_q, r_q, *optional, w_scale, w_zp, r_scale, r_zp], attrs.values(),
                      num_outputs=len(node.outputs), name=derived_name(node, "int8"))
        graph.insert_before(node, new)
        names = [out.name for out in node.outputs]
        for old, out in zip(node.outputs, new.outputs):
            # every output is of X's type T; an unused, unnamed Y carries no type after a copy through the protobuf
            out.shape, out.dtype = old.shape, old.dtype or node.inputs[0].dtype
            old.replace_all_uses_with(out, replace_graph_outputs=True)
        old_weights = list(node.inputs[1:3])
        graph.remove(node, safe=True)
        for out, name in zip(new.outputs, names):
            out.name = name
        remove_unused_initializers(graph, old_weights)
        self.plan.weights[node] = {  # the report's keys (markdown.py), over W and R together
            "granularity": w_summary["granularity"], "channels": w_summary["channels"] + r_summary["channels"],
            "scale_min": min(w_summary["scale_min"], r_summary["scale_min"]),
            "scale_max": max(w_summary["scale_max"], r_summary["scale_max"]),
            "max_abs_error": max(w_summary["max_abs_error"], r_summary["max_abs_error"]), "kernel": new.op_type}
