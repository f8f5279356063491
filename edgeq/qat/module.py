"""``QATModel``: edgeq's QDQ model run in torch, every Q/DQ pair a trainable fake quantizer.

    W_q -> DQ(s_w) -> Conv <- DQ <- Q <- x      ==>   Conv(fq_a(x), fq_w(W))   (W float, trained)

The module is built from the very QDQ graph that edgeq writes for the model, so it quantizes
exactly the tensors edgeq quantizes, on edgeq's grids (per-channel weight levels, zero points,
shared scales, channel scales, layers left float), and ``export`` writes that graph back with
the trained values.

1. An activation pair ``Q(x, s, z) -> DQ(s, z)`` becomes a ``FakeQuant``; pairs that share their
   scale and zero-point initializers (edgeq's shared scales) share one quantizer.
2. A weight ``W_q -> DQ(s_w, axis)`` read as input 1 of Conv, ConvTranspose, Gemm or MatMul
   becomes a float parameter (initialised from the float model's weight, not the rounded one)
   and a per-channel symmetric weight quantizer: its levels [-qmax, qmax] are the ones edgeq
   used (127, or 63 where the CPU saturates 8-bit products), or [-7, 7] for 4-bit weights.
3. An int32 bias DQ becomes a float parameter; ``export`` rounds it to int32 with the trained
   scales (s_in * s_w), an error far below one activation step.
4. Any other constant DQ (an int8 Add's constant) is a fixed float tensor read through the
   quantizer of its scale.
5. ``DynamicQuantizeMatMul`` (edgeq's MatMuls between float ops), and ``DynamicQuantizeLinear``
   shared by several ``MatMulIntegerToFloat``: A fake-quantized as onnxruntime does at run time
   (uint8, per tensor, range including 0), B as a weight (2).
6. Float initializers of more than one element that are a layer's parameters (weights and
   biases of layers left float, LayerNorm) are trained too; scalars, integer tensors and the
   graph's other constants (a preprocessing mean, a mask, Resize scales, a per-token front's row
   arithmetic: passes/per_token.py (10)) are fixed.
8. Per-token MatMuls (``passes/per_token.py``): the rows' scales and centres are the graph's own
   float ops; their Cast to uint8 (or blocked QuantizeLinear) passes the gradient straight
   through, and the centred form's column sums follow the trained weight.
7. A convolution the exporter folded a BatchNorm into (``batchnorms``, from ``batchnorm.py``)
   keeps the BatchNorm beside it, and its own bias: the weight quantizer sees the folded weight,
   and the batch statistics update until ``fit`` freezes them.
9. If: each branch is built as a program of its own (its quantizers, weights and constants among
   the module's) and the branch the condition picks runs on the outer values, as onnxruntime runs
   it. Loop and Scan bodies are refused. Constants are kept by name: an initializer named as one
   in another graph is renamed first.
10. ``DynamicQuantizeLSTM`` (edgeq's int8 LSTM, ``passes/quantize_recurrent.py``): W and R are
   weights (2), one scale per gate column, read transposed; X (the whole sequence) and the hidden
   state before each step are fake-quantized as the kernel quantizes them at run time (5); B
   trains as a float parameter. A float LSTM runs as ONNX defines it (``ops.lstm``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from edgeq.errors import UsageError
from edgeq.graph import MS_DOMAIN, const_array
from edgeq.qat.batchnorm import FoldedBatchNorm
from edgeq.qat.fake_quant import FakeQuant, round_ste
from edgeq.qat.ops import OPS, lstm

__all__ = ["QATModel", "WeightRef", "BiasRef"]

_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _key(name: str, taken: set[str]) -> str:
    key = re.sub(r"\W", "_", name) or "t"
    key = key if not key[0].isdigit() else f"t_{key}"
    base, i = key, 1
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    taken.add(key)
    return key


def _attrs(node: ir.Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, attr in node.attributes.items():
        value = attr.value
        if isinstance(value, ir.TensorProtocol):
            value = torch.from_numpy(np.array(value.numpy()))
        elif isinstance(value, (tuple, list)):
            value = list(value)
        out[name] = value
    out["_outputs"] = len(node.outputs)
    return out


def _tensor(array: np.ndarray) -> torch.Tensor:
    array = np.array(array)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return torch.from_numpy(array)


class WeightRef:
    """Where a trained weight goes back in the graph: the initializers of its levels, scale and
    zero point (a DQ's inputs 0-2, or a DynamicQuantizeMatMul's 1-3)."""

    def __init__(self, values: list[ir.Value | None], param: str, quant: str, consumer: ir.Node) -> None:
        self.q_name, self.scale_name = values[0].name, values[1].name
        self.zp_name = values[2].name if len(values) > 2 and values[2] is not None else None
        self.param, self.quant, self.consumer = param, quant, consumer.name
        self.bn: str | None = None  # (7) its FoldedBatchNorm's key
        # onnxruntime's dynamic MatMul kernels take 8-bit B only: 4-bit levels stay in int8 storage there
        self.int4_storage = consumer.op_type not in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat")


class BiasRef:
    """An int32 bias: its DQ's initializers and the quantizers whose scales multiply into its scale."""

    def __init__(self, dq: ir.Node, param: str, act: str | None, weight: str | None) -> None:
        self.q_name, self.scale_name = dq.inputs[0].name, dq.inputs[1].name
        self.param, self.act, self.weight = param, act, weight
        self.bn: str | None = None


class QATModel(nn.Module):
    """See the module doc. ``model(*inputs)`` or ``model(**feeds)``: the graph's outputs (one
    tensor, or a tuple). ``qdq`` is the graph it runs; ``export`` writes it back trained."""

    def __init__(self, qdq: ir.Model, float_model: ir.Model | None = None, *, weight_bits: int = 8,
                 learn: bool = True, batchnorms: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        graph = qdq.graph
        _check_subgraphs(qdq)  # (9)
        self.qdq = qdq
        self.weight_bits = weight_bits
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = [v.name for v in graph.outputs]
        self.quants = nn.ModuleDict()
        self.params = nn.ParameterDict()
        self.bns = nn.ModuleDict()  # (7) BatchNorms folded into convolutions, by the convolution's name
        self._bn_source = dict(batchnorms or {})
        self._bn_key: dict[str, str] = {}
        self._taken: set[str] = set()
        self._buffers_by_value: dict[str, str] = {}
        self.program: list[tuple] = []
        self.weights: list[WeightRef] = []
        self.biases: list[BiasRef] = []
        self.float_params: dict[str, str] = {}  # initializer name -> parameter key (6)
        self.activation_quants: dict[str, tuple[str, str | None]] = {}  # quantizer -> (scale, zp) initializer names
        self.constants: list[tuple[str, str, str]] = []  # (q initializer, buffer key, quantizer) (4)
        self.colsums: list[tuple[str, str, str]] = []  # (colsum initializer, weight quantizer, weight param) (8)
        self._float = {n.name: n for g in float_model.graphs() for n in g} if float_model is not None else {}
        self._float_inits = ({k: v for g in float_model.graphs() for k, v in g.initializers.items()}
                             if float_model is not None else {})
        self._learn = learn
        self._pairs: dict[tuple[int, int], str] = {}
        self._build(graph)

    # -- building ---------------------------------------------------------------------------

    def _buffer(self, value: ir.Value, array: np.ndarray, *, trainable: bool = False) -> str:
        if value.name in self._buffers_by_value:
            return self._buffers_by_value[value.name]
        key = _key(value.name or "const", self._taken)
        tensor = _tensor(array)
        if trainable:
            self.params[key] = nn.Parameter(tensor.float())
        else:
            self.register_buffer(key, tensor)
        self._buffers_by_value[value.name] = key
        return key

    def _pair_quant(self, q: ir.Node) -> str:
        scale, zp = q.inputs[1], q.inputs[2] if len(q.inputs) > 2 else None
        ident = (id(scale), id(zp))
        if ident in self._pairs:
            return self._pairs[ident]
        s = const_array(scale)
        z = const_array(zp) if zp is not None else np.zeros((), np.uint8)
        info = np.iinfo(z.dtype)
        axis = q.attributes.get_int("axis", 1) if np.size(s) > 1 else None
        key = _key(f"fq_{scale.name}", self._taken)
        self.quants[key] = FakeQuant(s, z.astype(np.float32), info.min, info.max, axis=axis, learn=self._learn)
        self.activation_quants[key] = (scale.name, zp.name if zp is not None else None)
        self._pairs[ident] = key
        return key

    def _original(self, consumer: ir.Node, q: ir.Value, index: int, shape: tuple) -> np.ndarray | None:
        """The float model's weight (or bias) behind quantized ``q``: input ``index`` of the node of
        the same name (or the name its rewrite derived, ``<name>_dynamic``), else the initializer
        that ``q`` was named after (``<name>_q``)."""
        for name in (consumer.name, consumer.name.rsplit("_", 1)[0] if consumer.name else None):
            source = self._float.get(name)
            if source is not None and len(source.inputs) > index:
                array = const_array(source.inputs[index])
                if array is not None and array.size == int(np.prod(shape)):
                    return array.astype(np.float32).reshape(shape)
        if q.name and q.name.endswith("_q") and q.name[:-2] in self._float_inits:
            array = const_array(self._float_inits[q.name[:-2]])
            if array is not None and array.size == int(np.prod(shape)):
                return array.astype(np.float32).reshape(shape)
        return None

    def _bn(self, consumer: ir.Node | None) -> str | None:
        """(7) The FoldedBatchNorm of a convolution the exporter folded one into, made once."""
        if consumer is None or consumer.op_type != "Conv" or consumer.name not in self._bn_source:
            return None
        if consumer.name not in self._bn_key:
            p = self._bn_source[consumer.name]
            key = _key(f"bn_{consumer.name}", self._taken)
            self.bns[key] = FoldedBatchNorm(p["gamma"], p["beta"], p["mean"], p["var"], p["eps"], p["momentum"])
            self._bn_key[consumer.name] = key
        return self._bn_key[consumer.name]

    def weight_value(self, ref: WeightRef) -> torch.Tensor:
        """The float weight that goes into the file: folded with its BatchNorm (7), if any."""
        weight = self._get(ref.param)
        return self.bns[ref.bn].fold_weight(weight) if ref.bn else weight

    def bias_value(self, ref: BiasRef) -> torch.Tensor:
        bias = self._get(ref.param)
        return self.bns[ref.bn].fold_bias(bias) if ref.bn else bias

    def _weight(self, dq: ir.Node, consumer: ir.Node) -> str:
        """(2) A weight DQ read by a Conv/Gemm/MatMul, with its BatchNorm (7) if one was folded in."""
        s = const_array(dq.inputs[1])
        axis = dq.attributes.get_int("axis", 1) if np.size(s) > 1 else None
        ref = self._weight_quant(consumer, list(dq.inputs[:3]), axis)
        bn = self._bn(consumer)
        if bn is not None and self._get(ref.param).shape[0] == self.bns[bn].gamma.numel():
            ref.bn = bn
        return ref.quant

    def _weight_quant(self, consumer: ir.Node, values: list[ir.Value | None], axis: int | None, *,
                      transposed: bool = False) -> WeightRef:
        """(2) Quantized levels (``values``: levels, scale, zero point) as a float parameter, from
        the float model's weight where it is found, and their weight quantizer. ``transposed``: the
        levels are the float weight with its last two axes swapped (an LSTM's, (10))."""
        levels, s = const_array(values[0]), const_array(values[1])
        if transposed:
            index = 1 if consumer.inputs[1] is values[0] else 2
            swapped = (*levels.shape[:-2], levels.shape[-1], levels.shape[-2])
            weight = self._original(consumer, values[0], index, swapped)
            weight = np.ascontiguousarray(np.swapaxes(weight, -1, -2)) if weight is not None else None
        else:
            weight = self._original(consumer, values[0], 1, levels.shape)
        if weight is None:  # the levels dequantized
            shape = [-1 if i == axis % levels.ndim else 1 for i in range(levels.ndim)] if axis is not None else []
            weight = levels.astype(np.float32) * (s.reshape(shape) if axis is not None else s)
        qmax = 7 if self.weight_bits == 4 else int(max(np.abs(levels.astype(np.int64)).max(), 1))
        param = self._buffer(values[0], weight, trainable=True)
        key = _key(f"fq_{values[0].name}", self._taken)
        scale = s.astype(np.float32)
        if self.weight_bits == 4:  # start the 4-bit grid from the weight's own max |w| per channel
            dims = tuple(d for d in range(weight.ndim) if axis is None or d != axis % weight.ndim)
            amax = np.abs(weight).max(axis=dims) if dims else np.abs(weight)
            scale = np.maximum(np.asarray(amax, np.float32).reshape(np.shape(s)) / qmax, 1e-12)
        self.quants[key] = FakeQuant(scale, np.zeros(np.size(s), np.float32), -qmax, qmax, axis=axis,
                                     learn=self._learn, weight=True)
        self.weights.append(WeightRef(values, param, key, consumer))
        return self.weights[-1]

    def _build(self, graph: ir.Graph, top: bool = True) -> None:
        done: set[ir.Node] = set()
        # pass 1: activation pairs (1), so constants sharing their scales find their quantizer (4)
        for node in graph:
            if node.op_type == "QuantizeLinear" and node.domain in ("", MS_DOMAIN) and not _token_front(node):
                self._pair_quant(node)
        unsupported: dict[str, int] = {}
        for node in graph:
            if node in done:
                continue
            kind = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            if self._token_step(node):  # (8)
                continue
            if kind == "QuantizeLinear" and const_array(node.inputs[0]) is None:
                fq = self._pair_quant(node)
                for out in node.outputs:
                    for use in list(out.uses()):
                        dq = use.node
                        if dq.op_type != "DequantizeLinear":
                            raise UsageError(f"{node.name}: its output is read by {dq.op_type}, not a DequantizeLinear")
                        self.program.append(("fq", fq, [node.inputs[0].name], [dq.outputs[0].name], out.name))
                        done.add(dq)
                continue
            if kind == "DequantizeLinear" and const_array(node.inputs[0]) is not None:
                self._constant_dq(node)
                continue
            if kind in (f"{MS_DOMAIN}.DynamicQuantizeMatMul", f"{MS_DOMAIN}.MatMulIntegerToFloat"):
                self._dynamic_matmul(node)
                continue
            if kind == "DynamicQuantizeLinear":
                self._dynamic_quantize(node)
                continue
            if kind == "If":  # (9) each branch a program of its own, run on the outer values
                branches = []
                for attr in ("then_branch", "else_branch"):
                    body, saved = node.attributes[attr].as_graph(), self.program
                    self.program = []
                    self._build(body, top=False)
                    branches.append((self.program, [v.name for v in body.outputs]))
                    self.program = saved
                self.program.append(("if", None, [node.inputs[0].name], [v.name for v in node.outputs], branches))
                continue
            if kind == f"{MS_DOMAIN}.DynamicQuantizeLSTM":
                self._dynamic_lstm(node)
                continue
            if kind == "Constant":
                value = node.attributes["value"].value if "value" in node.attributes else None
                if value is None:
                    unsupported[kind] = unsupported.get(kind, 0) + 1
                    continue
                self._buffer(node.outputs[0], np.array(value.numpy()))
                continue
            if kind not in OPS:
                unsupported[kind] = unsupported.get(kind, 0) + 1
                continue
            for value in node.inputs:
                if value is not None and const_array(value) is not None and value.name not in self._buffers_by_value:
                    array = const_array(value)
                    trainable = array.dtype == np.float32 and array.size > 1 and _is_parameter(value)  # (6)
                    key = self._buffer(value, array, trainable=trainable)
                    if trainable:
                        self.float_params[value.name] = key
            names = [v.name if v is not None else None for v in node.inputs]
            bn = self._bn_key.get(node.name) if kind == "Conv" else None
            if bn is not None:  # (7)
                bias = next((r.param for r in self.biases if r.bn == bn), None)
                self.program.append(("convbn", bn, [*names[:3], bias], [node.outputs[0].name], _attrs(node)))
                continue
            self.program.append(("op", kind, names, [v.name for v in node.outputs], _attrs(node)))
        if unsupported:
            listing = ", ".join(f"{k} ({n})" for k, n in sorted(unsupported.items()))
            raise UsageError(f"quantization-aware training cannot run these operators in torch: {listing}")
        if top:
            self._colsums()

    def _constant_dq(self, dq: ir.Node) -> None:
        q = const_array(dq.inputs[0])
        s = const_array(dq.inputs[1])
        uses = list(dq.outputs[0].uses())
        weight_use = [u for u in uses if u.idx == 1 and u.node.op_type in _WEIGHT_OPS]
        if q.dtype in (np.int8, np.uint8, np.int16) and weight_use and len(weight_use) == len(uses):
            fq = self._weight(dq, weight_use[0].node)
            param, bn = self.weights[-1].param, self.weights[-1].bn
            self.program.append(("weight", fq, [param], [dq.outputs[0].name], bn))
            return
        zp = const_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else np.zeros((), q.dtype)
        axis = dq.attributes.get_int("axis", 1) if np.size(s) > 1 else None
        shape = [-1 if axis is not None and i == axis % q.ndim else 1 for i in range(q.ndim)] if axis is not None else None
        scale = s.reshape(shape) if shape else s
        zero = zp.reshape(shape) if shape else zp
        values = ((q.astype(np.float64) - zero.astype(np.float64)) * scale).astype(np.float32)
        if q.dtype == np.int32:  # (3) a bias
            consumer = uses[0].node if uses else None
            act, weight = self._bias_links(consumer)
            original = self._original(consumer, dq.inputs[0], 2, values.shape) if uses and uses[0].idx == 2 else None
            if original is not None:
                values = original
            bn = self._bn(consumer) if uses and uses[0].idx == 2 else None
            if bn is not None:  # (7) the parameter is the convolution's own bias
                values = self.bns[bn].unfold_bias(values).reshape(values.shape)
            param = self._buffer(dq.inputs[0], values, trainable=True)
            self.biases.append(BiasRef(dq, param, act, weight))
            self.biases[-1].bn = bn
            self.program.append(("bias", bn, [param], [dq.outputs[0].name]))
            return
        key = self._buffer(dq.inputs[0], values)  # (4)
        fq = self._pairs.get((id(dq.inputs[1]), id(dq.inputs[2]) if len(dq.inputs) > 2 else id(None)))
        if fq is None:
            fq = _key(f"fq_{dq.inputs[1].name}", self._taken)
            info = np.iinfo(q.dtype)
            self.quants[fq] = FakeQuant(s, zp.astype(np.float32), info.min, info.max, axis=axis, learn=False)
            self.activation_quants[fq] = (dq.inputs[1].name, dq.inputs[2].name if len(dq.inputs) > 2 else None)
        self.constants.append((dq.inputs[0].name, key, fq))
        self.program.append(("fq", fq, [key], [dq.outputs[0].name], None))

    def _bias_links(self, consumer: ir.Node | None) -> tuple[str | None, str | None]:
        """The quantizers of the input and weight that a bias's scale is the product of."""
        if consumer is None:
            return None, None
        node = consumer
        if node.op_type == "Add":  # a MatMul's bias, stored after it (quantize_weights case 4)
            producers = [v.producer() for v in node.inputs if v is not None and v.producer() is not None]
            node = next((p for p in producers if p.op_type == "MatMul"), node)
        act = weight = None
        a = node.inputs[0].producer() if node.inputs else None
        if a is not None and a.op_type == "DequantizeLinear" and a.inputs[0].producer() is not None:
            q = a.inputs[0].producer()
            act = self._pairs.get((id(q.inputs[1]), id(q.inputs[2] if len(q.inputs) > 2 else None)))
        w = node.inputs[1].producer() if len(node.inputs) > 1 else None
        if w is not None:
            weight = next((r.quant for r in self.weights if r.q_name == w.inputs[0].name), None)
        return act, weight

    def _dynamic_matmul(self, node: ir.Node) -> None:
        """(5) DynamicQuantizeMatMul(A, B, b_scale, b_zp[, bias]), or MatMulIntegerToFloat(A_q, B,
        a_scale, b_scale, a_zp, b_zp[, bias]) after a DynamicQuantizeLinear shared by several."""
        fused = node.op_type == "DynamicQuantizeMatMul"
        b_index, s_index, z_index, bias_index = (1, 2, 3, 4) if fused else (1, 3, 5, 6)
        axis = 1 if np.size(const_array(node.inputs[s_index])) > 1 else None  # B is [K, N]: per column
        refs = [node.inputs[b_index], node.inputs[s_index], node.inputs[z_index] if len(node.inputs) > z_index else None]
        ref = self._weight_quant(node, refs, axis)
        fq, param = ref.quant, ref.param
        bias = None
        if len(node.inputs) > bias_index and node.inputs[bias_index] is not None:
            bias = self._buffer(node.inputs[bias_index], const_array(node.inputs[bias_index]), trainable=True)
            self.float_params[node.inputs[bias_index].name] = bias
        if fused:
            self.program.append(("dynmatmul", fq, [node.inputs[0].name, param, bias], [node.outputs[0].name]))
        else:
            names = [node.inputs[i].name for i in (0, 2, 4)]  # codes, a_scale, a_zp of the shared quantization
            for i in (2, 4):  # per-token MatMuls (8): a constant zero point 128
                if const_array(node.inputs[i]) is not None:
                    self._buffer(node.inputs[i], const_array(node.inputs[i]))
            self.program.append(("intmatmul", fq, [*names, param, bias], [node.outputs[0].name]))

    def _dynamic_lstm(self, node: ir.Node) -> None:
        """(10) DynamicQuantizeLSTM(X, W_q[1,I,4H], R_q[1,H,4H], B, seq_lens, h0, c0, P, W_scale, W_zp,
        R_scale, R_zp): W and R trained as weights (one scale per gate column), X and each step's
        hidden state fake-quantized as the kernel does at run time (uint8, per tensor, from min/max)."""
        names = [v.name if v is not None else None for v in node.inputs]
        if const_array(node.inputs[1]).shape[0] != 1:
            raise UsageError(f"{node.name}: quantization-aware training of a bidirectional DynamicQuantizeLSTM "
                             "is not supported (keep it float: recurrent='float')")
        keys = []
        for index, scale_index, zp_index in ((1, 8, 9), (2, 10, 11)):
            values = [node.inputs[index], node.inputs[scale_index], node.inputs[zp_index]]
            axis = 2 if np.size(const_array(values[1])) > 1 else None  # [1, K, 4H]: one scale per gate column
            ref = self._weight_quant(node, values, axis, transposed=True)
            ref.int4_storage = False  # the kernel takes 8-bit weights
            keys.append((ref.quant, ref.param))
        for value in node.inputs[3:8]:
            if value is not None and const_array(value) is not None and value.name not in self._buffers_by_value:
                key = self._buffer(value, const_array(value), trainable=value is node.inputs[3])  # B trains
                if value is node.inputs[3]:
                    self.float_params[value.name] = key
        attrs = _attrs(node)
        self.program.append(("qlstm", keys, [names[0], *names[3:8]], [v.name for v in node.outputs], attrs))

    def _token_step(self, node: ir.Node) -> bool:
        """(8) The quantization of a per-token MatMul's rows: Cast(uint8) of the shifted rows (below
        opset 21) or a blocked QuantizeLinear, read by MatMulIntegerToFloat as its A."""
        if not _token_front(node):
            return False
        out = node.outputs[0]
        names = [v.name if v is not None else None for v in node.inputs]
        if node.op_type == "Cast":
            self.program.append(("castq", None, names[:1], [out.name]))
        else:  # the row centre too (the Sub before it), which the centre's correction reads: forced with the rest
            centred = node.inputs[0].producer() if node.inputs[0] is not None else None
            mid = centred.inputs[1].name if centred is not None and centred.op_type == "Sub" else None
            self.program.append(("tokenq", None, [*names[:3], mid], [out.name], node.attributes.get_int("block_size", 0)))
        return True

    def _colsums(self) -> None:
        """(8) A centred per-token MatMul adds m * colsum(dequantized W) back: the column sums follow
        the trained weight (a step after the MatMul, before the correction reads them)."""
        steps = []
        for i, step in enumerate(self.program):
            if step[0] != "intmatmul":
                continue
            node = next(n for n in self.qdq.graph if n.outputs and n.outputs[0].name == step[3][0])
            for use in node.outputs[0].uses():
                if use.node.op_type != "Add":
                    continue
                other = use.node.inputs[1 - use.idx]
                mul = other.producer() if other is not None else None
                const = next((v for v in (mul.inputs if mul is not None and mul.op_type == "Mul" else [])
                              if v is not None and const_array(v) is not None and v.name.endswith("_colsum")), None)
                if const is not None:
                    steps.append((i + 1, ("colsum", step[1], [step[2][3]], [const.name])))
                    self.colsums.append((const.name, step[1], step[2][3]))
        for offset, (i, step) in enumerate(steps):
            self.program.insert(i + offset, step)

    def _dynamic_quantize(self, node: ir.Node) -> None:
        self.program.append(("dql", None, [node.inputs[0].name], [v.name for v in node.outputs]))

    # -- running ----------------------------------------------------------------------------

    def _get(self, key: str) -> torch.Tensor:
        return self.params[key] if key in self.params else getattr(self, key)

    def forward(self, *args: Any, **feeds: Any) -> Any:
        return self._run(args, feeds)

    def dynamic_values(self) -> tuple[list[str], list[str]]:
        """The inputs and outputs of the run-time quantized MatMuls (and their DynamicQuantizeLinear):
        what ``codes`` forces and compares where the graph has no QuantizeLinear."""
        inputs = [name for step in self.program for name in _forced_inputs(step)]
        outputs = [step[3][0] for step in self.program if step[0] in ("dynmatmul", "intmatmul")]
        return list(dict.fromkeys(inputs)), outputs

    def codes(self, feeds: dict[str, Any], forced: dict[str, np.ndarray] | None = None) -> tuple[Any, dict[str, np.ndarray]]:
        """The outputs, and by name in ``qdq``: the integer codes of every activation quantizer
        (its QuantizeLinear's output) and the outputs of run-time quantized MatMuls (the check of
        ``export``). ``forced``: values by the same names (codes), or by the names of those MatMuls'
        float inputs, that replace torch's own downstream, so that each is compared on the same input."""
        found: dict[str, np.ndarray] = {}
        with torch.no_grad():
            out = self._run((), feeds, found, forced)
        return out, found

    def _run(self, args: tuple, feeds: dict, probe: dict[str, np.ndarray] | None = None,
             forced: dict[str, np.ndarray] | None = None) -> Any:
        env: dict[str, Any] = {}
        if args and feeds:
            raise UsageError("pass the inputs by position or by name, not both")
        values = dict(zip(self.input_names, args)) if args else feeds
        missing = [n for n in self.input_names if n not in values]
        if missing:
            raise UsageError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(self.input_names)}")
        for name in self.input_names:
            x = values[name]
            env[name] = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        for name, key in self._buffers_by_value.items():
            env[name] = self._get(key)
        self._exec(self.program, env, probe, forced)
        result = tuple(env[n] for n in self.output_names)
        return result[0] if len(result) == 1 else result

    def _exec(self, program: list[tuple], env: dict[str, Any], probe: dict[str, np.ndarray] | None,
              forced: dict[str, np.ndarray] | None) -> None:
        for step in program:
            kind, what, ins, outs = step[:4]
            if forced is not None:
                for name in _forced_inputs(step):
                    if name in forced:
                        env[name] = torch.from_numpy(np.asarray(forced[name], np.float32))
            if kind == "fq":
                env[outs[0]] = self.quants[what](env[ins[0]])
                if probe is not None and step[4]:
                    probe[step[4]] = self.quants[what].quantize(env[ins[0]]).numpy()
                if forced is not None and step[4] in forced:
                    env[outs[0]] = self.quants[what].dequantize(torch.from_numpy(forced[step[4]].astype(np.float32)))
            elif kind == "weight":
                weight = self._get(ins[0])
                env[outs[0]] = self.quants[what](self.bns[step[4]].fold_weight(weight) if step[4] else weight)
            elif kind == "const":
                env[outs[0]] = self._get(ins[0])
            elif kind == "bias":
                bias = self._get(ins[0])
                env[outs[0]] = self.bns[what].fold_bias(bias) if what else bias
            elif kind == "convbn":
                bn = self.bns[what]
                x, w = env[ins[0]], env[ins[1]]
                if self.training and not bool(bn.frozen) and ins[3] is not None:
                    env[outs[0]] = bn.train_forward(OPS["Conv"]([x, w], step[4]), self._get(ins[3]))
                else:
                    env[outs[0]] = OPS["Conv"]([x, w, env[ins[2]] if ins[2] else None], step[4])
            elif kind == "dynmatmul":
                a = _dynamic_fake_quant(env[ins[0]])[0]
                y = torch.matmul(a, self.quants[what](self._get(ins[1])))
                env[outs[0]] = y + self._get(ins[2]) if ins[2] is not None else y
                if probe is not None:
                    probe[outs[0]] = env[outs[0]].numpy()
            elif kind == "castq":  # (8) Cast(uint8) truncates; the gradient passes straight through
                x = env[ins[0]].float()
                env[outs[0]] = x + (torch.clamp(torch.trunc(x), 0, 255) - x).detach()
            elif kind == "tokenq":  # (8) blocked QuantizeLinear of the rows (one block = one row)
                x, scale, zp = env[ins[0]].float(), env[ins[1]], env[ins[2]].float()
                env[outs[0]] = torch.clamp(round_ste(x / scale) + zp, 0, 255)
            elif kind == "colsum":  # (8)
                env[outs[0]] = self.quants[what](self._get(ins[0])).sum(dim=0)
            elif kind == "dql":
                _, codes, scale, zp = _dynamic_fake_quant(env[ins[0]])
                env[outs[0]], env[outs[1]], env[outs[2]] = codes, scale, zp
            elif kind == "intmatmul":
                a = (env[ins[0]].float() - env[ins[2]].float()) * env[ins[1]]
                y = torch.matmul(a, self.quants[what](self._get(ins[3])))
                env[outs[0]] = y + self._get(ins[4]) if ins[4] is not None else y
                if probe is not None:
                    probe[outs[0]] = env[outs[0]].numpy()
            elif kind == "if":  # (9) the branch reads the outer values; its outputs become the If's
                body, names = step[4][0 if bool(env[ins[0]]) else 1]
                inner = dict(env)
                self._exec(body, inner, probe, forced)
                for name, inner_name in zip(outs, names):
                    env[name] = inner[inner_name]
            elif kind == "qlstm":  # (10)
                (wq, wp), (rq, rp) = what
                x, *rest = [env[n] if n else None for n in ins]
                result = lstm(x.float(), self.quants[wq](self._get(wp)), self.quants[rq](self._get(rp)),
                              *rest, step[4], quantize=lambda t: _dynamic_fake_quant(t)[0])
                for name, value in zip(outs, result):
                    if name:
                        env[name] = value
            else:
                inputs = [env[n] if n else None for n in ins]
                result = OPS[what](inputs, step[4])
                if isinstance(result, (tuple, list)):
                    for name, value in zip(outs, result):
                        env[name] = value
                else:
                    env[outs[0]] = result


def _check_subgraphs(model: ir.Model) -> None:
    """(9) If bodies are run; Loop and Scan bodies are refused. The module keeps constants by
    name, so an initializer whose name another graph's initializer has too (two If branches
    built alike) is renamed, in ``model`` itself, which ``export`` writes back."""
    names = {v.name for g in model.graphs() for n in g for v in n.outputs if v.name}
    names |= {name for g in model.graphs() for name in g.initializers}
    seen: set[str] = set()
    for graph in model.graphs():
        for node in graph:
            if node.op_type in ("Loop", "Scan") and node.domain in ("", "ai.onnx"):
                raise UsageError(f"{node.name}: quantization-aware training of {node.op_type} bodies is not supported "
                                 "(If bodies are)")
        for name, value in list(graph.initializers.items()):
            if name in seen:
                i = 1
                while f"{name}_{i}" in names:
                    i += 1
                value.name = f"{name}_{i}"
                names.add(value.name)
            seen.add(value.name)


def _forced_inputs(step: tuple) -> list[str]:
    """The float inputs of a run-time quantization that the export check takes from onnxruntime:
    the values quantized, and a blocked per-token front's row scales and row centres. The scales
    are read by MatMulIntegerToFloat and the centres by the centre's correction, which nearly
    cancels the kernel's output where a row's midpoint is far from most of its values (MiniLM's
    outlier channels): taken from onnxruntime one without the other, the two no longer cancel alike
    and the outputs part by several steps (MiniLM at opset 21: 8.8% within one step)."""
    kind, ins = step[0], step[2]
    if kind in ("dynmatmul", "dql", "castq"):
        return [ins[0]]
    if kind == "tokenq":  # with the row centre where the rows are centred (the correction reads it)
        return [ins[0], ins[1], *([ins[3]] if len(ins) > 3 and ins[3] else [])]
    return []


def _token_front(node: ir.Node) -> bool:
    """(8) Cast or QuantizeLinear whose output only per-token MatMuls read, as their A."""
    out = node.outputs[0] if node.outputs else None
    if out is None or node.op_type not in ("Cast", "QuantizeLinear") or not out.uses():
        return False
    return all(u.node.op_type == "MatMulIntegerToFloat" and u.idx == 0 for u in out.uses())


_PARAMETER_READERS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LayerNormalization", "BatchNormalization",
                      "InstanceNormalization")


def _is_parameter(value: ir.Value) -> bool:
    """(6) A weight, bias or normalization parameter of a layer, not a constant of the graph's own
    arithmetic (a preprocessing mean, a mask, Resize scales): every reader is such a layer, or an
    Add that adds it to one's output (a bias stored apart). A per-token front's row arithmetic
    (passes/per_token.py (10): [hi, lo] times a constant, by a MatMul) is the graph's own."""
    from edgeq.passes.per_token import TERMS

    if value.name and value.name.endswith(TERMS):
        return False
    for node, _ in value.uses():
        if node.op_type in _PARAMETER_READERS:
            continue
        if node.op_type == "Add":
            producers = [v.producer() for v in node.inputs if v is not None and v is not value]
            if any(p is not None and p.op_type in _PARAMETER_READERS for p in producers):
                continue
        return False
    return True


def _dynamic_fake_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """onnxruntime's DynamicQuantizeLinear, simulated: uint8, per tensor, range including 0 (5).
    The dequantized value, and the codes (straight-through), scale and zero point."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        lo = torch.clamp(x.detach().min(), max=0.0)
        hi = torch.clamp(x.detach().max(), min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
        zp = torch.clamp(torch.round(-lo / scale), 0, 255)
        q = torch.clamp(round_ste(x / scale) + zp, 0, 255)
        return (q - zp) * scale, q, scale, zp
