"""SmoothQuant (Xiao et al. 2023): move activation outliers of MatMul inputs into the weights.

    X -> MatMul(., W)   ==>   X / s -> MatMul(., diag(s) W)        s_k = max|X_k|^a / max|W_k|^(1-a)

Exact in float (``(X / s) (diag(s) W) == X W``); afterwards the activation channels are flatter,
so a per-tensor int8 range loses less, while per-channel int8 weights absorb the factors.

Cases:
1. Every consumer of X must be a MatMul (2-D constant weight, X as input A) or a Gemm
   (transA = 0, alpha = 1, constant B); one ``s`` serves them all (``max|W_k|`` over all).
   With ``partial``, X may have other consumers too (a LayerNorm output that also feeds the
   residual Add): ``Mul(X, 1/s)`` is then inserted for the MatMul/Gemm readers only, the others
   keep reading X (case 3).
2. X produced by LayerNormalization (normalized over the last axis, constant scale and bias):
   the ``1/s`` folds into its scale and bias; nothing is added to the graph.
3. Otherwise, with ``insert_mul``, ``Mul(X, 1/s)`` is inserted before the consumers; else skip.
4. Only X whose channel maxima have outliers (``max / median >= min_ratio``) are smoothed.
   ``absmax`` maps a value name to per-channel ``max|X_k|`` over calibration data (last axis).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from edgeq.graph import ONNX_DOMAINS, add_initializer, initializer_array
from edgeq.passes.equalize import replace_constant
from edgeq.passes.plan import attr_value

__all__ = ["SmoothQuantPass", "weight_rows"]

logger = logging.getLogger(__name__)


def weight_rows(node: ir.Node, x: ir.Value) -> np.ndarray | None:
    """W as [K, N] (K = X's channels) when ``node`` qualifies for case 1, else None."""
    if node.domain not in ONNX_DOMAINS or not node.inputs or node.inputs[0] is not x:
        return None
    w = initializer_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 2 or any(v is x for v in node.inputs[1:]):
        return None
    if node.op_type == "MatMul":
        return w
    if node.op_type == "Gemm" and not attr_value(node, "transA", 0) and attr_value(node, "alpha", 1.0) == 1.0:
        return w.T if attr_value(node, "transB", 0) else w
    return None


class SmoothQuantPass(ir.passes.InPlacePass):
    """Migrate activation scale into MatMul/Gemm weights (see the module docstring)."""

    def __init__(self, absmax: Mapping[str, np.ndarray], alpha: float = 0.5, min_ratio: float = 4.0,
                 insert_mul: bool = True, partial: bool = False) -> None:
        super().__init__()
        self.absmax = absmax
        self.alpha = alpha
        self.min_ratio = min_ratio
        self.insert_mul = insert_mul
        self.partial = partial
        self.smoothed: dict[str, float] = {}  # value -> channel outlier ratio before

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        candidates = {node.inputs[0] for node in graph if node.op_type in ("MatMul", "Gemm") and node.inputs
                      and node.inputs[0] is not None and node.inputs[0].const_value is None}
        for x in sorted(candidates, key=lambda v: v.name or ""):
            self._smooth(graph, x)
        logger.info("smoothquant: %d activations", len(self.smoothed))
        return ir.passes.PassResult(model, modified=bool(self.smoothed))

    def _smooth(self, graph: ir.Graph, x: ir.Value) -> None:
        amax = self.absmax.get(x.name)
        consumers = list(x.consumers())
        if amax is None or x.is_graph_output() or not consumers:
            return
        rows = [(node, weight_rows(node, x)) for node in consumers]
        readers = [node for node, w in rows if w is not None and w.shape[0] == amax.size]
        if not readers or (len(readers) < len(consumers) and not (self.partial and self.insert_mul)):
            return  # case 1
        weights = [w for node, w in rows if node in readers]
        amax = np.maximum(np.asarray(amax, np.float64), 1e-8)
        ratio = float(amax.max() / max(np.median(amax), 1e-8))
        if ratio < self.min_ratio:
            return  # case 4
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0).astype(np.float64)
        s = amax**self.alpha / np.maximum(wmax, 1e-8) ** (1.0 - self.alpha)
        s = np.clip(s, 1e-5, 1e5)
        if not self._scale_input(graph, x, 1.0 / s, readers if len(readers) < len(consumers) else None):
            return
        for node in readers:
            w = initializer_array(node.inputs[1]).astype(np.float64)
            transposed = node.op_type == "Gemm" and attr_value(node, "transB", 0)
            replace_constant(node, 1, w * s[None, :] if transposed else w * s[:, None])
        self.smoothed[x.name] = ratio

    def _scale_input(self, graph: ir.Graph, x: ir.Value, inv: np.ndarray, readers: list[ir.Node] | None) -> bool:
        """``x / s`` for every consumer (``readers`` None: folded into a LayerNorm where it can be)
        or for ``readers`` only (a Mul on their branch)."""
        producer = x.producer()
        if (readers is None and producer is not None and producer.op_type == "LayerNormalization"
                and producer.outputs[0] is x):
            axis = attr_value(producer, "axis", -1)
            gamma = initializer_array(producer.inputs[1])
            beta_in = producer.inputs[2] if len(producer.inputs) > 2 else None
            beta = initializer_array(beta_in)
            extra = [o for o in producer.outputs[1:] if o.uses() or o.is_graph_output()]
            if (axis == -1 and gamma is not None and gamma.size == inv.size and not extra
                    and (beta_in is None or beta is not None)):  # case 2
                replace_constant(producer, 1, gamma.reshape(-1) * inv)
                if beta is not None:
                    replace_constant(producer, 2, beta.reshape(-1) * inv)
                return True
        if not self.insert_mul:
            return False
        name = f"{x.name}_smooth"
        scale = add_initializer(graph, name + "_inv", inv.astype(np.float32).reshape(-1))
        consumers = list(x.consumers()) if readers is None else readers
        mul = ir.node("Mul", [x, scale], name=name)
        out = mul.outputs[0]
        out.name, out.shape, out.type = name, x.shape, x.type
        if producer is not None:
            graph.insert_after(producer, mul)
        else:
            graph.insert_before(next(iter(graph)), mul)
        for node in consumers:
            for i, v in enumerate(node.inputs):
                if v is x:
                    node.replace_input_with(i, out)
        return True
