"""Bias correction (Nagel et al. 2019): remove the mean output error that int8 weights cause.

    Conv(x, W, b)  ==>  Conv(x, W, b - (Wq - W) . E[x])      (likewise Gemm)

``Wq`` is W after the int8 round trip the quantizer will do (symmetric, per channel or per
tensor: ``edgeq.passes.weights.quantize_weight``); ``E[x]`` is the per-channel mean of the input
on calibration data. The quantized model's expected output then equals the float one's.

Cases:
1. Conv with group 1: ``err[o] = sum_{i,k} (Wq - W)[o, i, k] * E[x_i]``.
2. Depthwise Conv (group == channels, one input channel per group): ``err[o] = sum_k (Wq-W)[o,0,k] * E[x_o]``.
3. Gemm (alpha = beta = 1, transA = 0): ``err[n] = sum_k (Wq - W)[k, n] * E[x_k]`` (transB
   transposes W); C must be absent or a constant of one value per output.
4. Skipped: other grouped convs, a weight or bias that is not a constant, nodes without input
   means, and corrections that are all zero. A missing bias is added; a shared one is copied.
5. Skipped: a weight read by several nodes (an unrolled LSTM's 40 steps). Each reader's input
   mean differs, so each would get its own corrected bias, stored once per reader
   (``share_weights.py`` stores the weight and its bias once when they stay shared).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from edgeq.graph import ONNX_DOMAINS, initializer_array
from edgeq.passes.equalize import conv_groups, replace_constant
from edgeq.passes.plan import attr_value

__all__ = ["BiasCorrectionPass"]

logger = logging.getLogger(__name__)


class BiasCorrectionPass(ir.passes.InPlacePass):
    """Subtract the expected int8 weight error per output channel (see the module docstring)."""

    def __init__(self, means: Mapping[str, np.ndarray], per_channel: bool = True,
                 nodes: Sequence[str] | None = None, qmax: int | None = None, paired: bool | None = None) -> None:
        super().__init__()
        from edgeq.passes.weights import weight_qmax

        # the grid QuantizeWeightsPass will use: ``weights.weight_qmax`` of the config (None: the default's)
        self.qmax = weight_qmax(None) if qmax is None else qmax
        # 8-bit weights with pairs limited (weights.quantize_paired) where qmax is 7 bits: the config's
        # ``weights.pairs_form`` (None: the default's)
        from edgeq.passes.weights import pairs_form

        self.paired = pairs_form(None) if paired is None else paired
        self.means = means
        self.per_channel = per_channel
        self.nodes = None if nodes is None else frozenset(nodes)
        self.corrected: dict[str, float] = {}  # node -> max |correction|

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for node in list(model.graph):
            if node.domain not in ONNX_DOMAINS or (self.nodes is not None and node.name not in self.nodes):
                continue
            if node.op_type in ("Conv", "Gemm") and node.inputs[0] is not None:
                mean = self.means.get(node.inputs[0].name)
                if mean is not None:
                    self._correct(node, np.asarray(mean, np.float64))
        logger.info("bias correction: %d nodes", len(self.corrected))
        return ir.passes.PassResult(model, modified=bool(self.corrected))

    def _error(self, node: ir.Node, w: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
        from edgeq.passes.quantize_weights import is_depthwise, weight_axis
        from edgeq.passes.weights import QMAX, pairs_apply, quantize_paired, quantize_weight

        axis = weight_axis(node, w.ndim) if self.per_channel else None
        qmax = QMAX if is_depthwise(node, w) else self.qmax
        if self.paired and qmax != QMAX and pairs_apply(node.op_type, w):
            qw = quantize_paired(w, axis, node.op_type, trans_b=bool(attr_value(node, "transB", 0)))
        else:
            qw = quantize_weight(w, axis, qmax=qmax)
        err = qw.dequantize().astype(np.float64) - w.astype(np.float64)
        if node.op_type == "Conv":
            groups = conv_groups(node)
            if groups == 1 and mean.size == w.shape[1]:  # case 1
                return np.einsum("oik,i->o", err.reshape(*err.shape[:2], -1), mean)
            if groups == w.shape[0] and w.shape[1] == 1 and mean.size == w.shape[0]:  # case 2
                return err.reshape(w.shape[0], -1).sum(axis=1) * mean
            return None
        if attr_value(node, "transA", 0) or attr_value(node, "alpha", 1.0) != 1.0 or attr_value(node, "beta", 1.0) != 1.0:
            return None
        err = err.T if attr_value(node, "transB", 0) else err  # case 3: [K, N]
        return mean @ err if mean.size == err.shape[0] else None

    def _correct(self, node: ir.Node, mean: np.ndarray) -> None:
        w = initializer_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None or len(node.inputs[1].uses()) > 1:  # case 5
            return
        error = self._error(node, w, mean)
        if error is None or not np.any(error):
            return
        has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
        bias = initializer_array(node.inputs[2]) if has_bias else np.zeros(error.shape, np.float32)
        if bias is None or bias.size != error.size:
            return
        replace_constant(node, 2, (bias.astype(np.float64).reshape(-1) - error).reshape(bias.shape))
        self.corrected[node.name] = float(np.abs(error).max())
