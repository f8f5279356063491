"""Per-token dynamic quantization: each row of a MatMul's input gets its own int8 grid at run time.

    A -> MatMul(W)      ==>  A -> ReduceMax, ReduceMin (axis -1) = hi, lo [.., M, 1]
    A -> Gemm(W, C)          s = Max((hi - lo) / 254, hi / 2^15, -lo / 2^15, tiny),  m = (hi + lo) / 2   (10)
                             A, s, m -> A_q uint8 = round((A - m) / s) + 128        (3)
                             com.microsoft.MatMulIntegerToFloat(A_q, W_q, s, s_w[N], 128, 0)
                               -> Add(m * colsum(s_w * W_q))  [-> Add(C)]          (8)

Transformers' activations carry outlier tokens (and channels): one scale for the whole tensor,
static or measured at run time (DynamicQuantizeMatMul), spends the int8 levels on the outliers.
One scale per row (per token) is what they need; measured on one [1,128,384] x [384,1536]
MatMul with an outlier token, 1 thread (bench/per_token_design.py, docs/per_token.md): fp32
1.33 ms, DynamicQuantizeMatMul 0.38 ms at 15.9 dB, the symmetric form 0.40 ms at 30.8 dB.

1. Row grid, centred (the default, ``CENTER``): each row is quantized around its midpoint
   m = (max + min) / 2 with s = (max - min) / 254, so its 255 levels span the row's range instead
   of [-max |A|, max |A|]; a row with a DC offset, or one-sided like a GELU output, gains up to
   a bit per element or more (MiniLM, every MatMul per token: 22.9 -> 26.8 dB, docs/per_token.md).
   The scale is floored at max |A| / 2^15 (a constant row: its values quantize to 0 around m,
   and below opset 21 (3) A / s and m / s stay within 2^15, where float32 is exact to 1/256 of a
   level) and at float32's smallest normal number (a zero row: 0, no NaN). Symmetric
   (``center=False``): s = max |A| / 127 from Abs -> ReduceMax, m = 0, no correction.
   MatMulIntegerToFloat takes one zero point for A, so the per-row centre cannot be the kernel's:
   it is taken out before it and added back after it (8).
2. uint8 activations with zero point 128 and int8 weights: onnxruntime's u8s8 kernel. int8 x int8
   (MatMulIntegerToFloat or MatMulInteger) measured 11-20x slower (4.6-8.5 ms) on the same CPU.
   The kernel multiplies the raw uint8 A_q (not A_q - 128) by the weights: on x86 without VNNI
   it adds the products of weight rows 2i and 2i + 1 in int16, which saturates once
   a1 w1 + a2 w2 passes 32767 (``runtime/cpu.py``). There (``row_form``) the weights keep 8 bits
   with each same-sign pair of levels in rows 2i, 2i + 1 within 128 (``weights.quantize_paired``,
   as every u8s8 weight there: 255 x 128 = 32640), or, with ``token_rows`` "narrow", rows narrow
   to ``cpu.NARROW_LEVELS`` = 181 levels around zero point 91 (s = (max - min) / 180) and the
   pairs may reach ``cpu.NARROW_PAIR_LIMIT`` = 181 (181 x 181 = 32761). Each weight column's largest
   level is chosen so that few pairs need a cut (``weights.paired_qmax``). Measured on MiniLM,
   every MatMul per token, 48 unseen sentences, this CPU (AMD EPYC, no VNNI): 7-bit weights
   26.4 dB; full rows, pairs within 128: 30.7; narrow rows, pairs within 181: 30.3; 8-bit weights
   stored uint8 (u8u8, exact) 31.5, but that kernel runs 15-24% slower here. Where
   ``cpu.pairs_exact()`` fails (a kernel pairing other rows) or ``reduce_range`` is True,
   weights keep 7 bits and rows 255 levels.
3. Quantizing A: from opset 21 Sub(A, m) and one QuantizeLinear with ``block_size`` = K along the
   last axis (its zero point 128 built by ConstantOfShape, since M is known only at run time);
   below opset 21 Mul(A, 1/s) -> Add(128.5 - m/s) -> Cast(uint8): the centre is folded into the
   per-row offset (no pass over A for it); Cast truncates, so that is round half up where
   QuantizeLinear rounds half to even (ties only); (A - m) / s is within [-127, 127], so nothing
   saturates. Symmetric, the offset is the constant 128.5 and opset 21 needs no Sub.
4. MatMulIntegerToFloat scales its int32 result by the per-column weight scales inside the kernel
   and by the per-row scale ``s`` (shape [.., M, 1]) in one broadcast multiply after it. That
   multiply comes after the kernel's bias is added (onnxruntime 1.32), so a bias would be scaled
   too: no bias input here (a Linear layer's MatMul -> Add stays as it is).
5. Gemm: a transB weight is transposed offline to [K, N]; C goes to an Add after the kernel (4),
   after the correction (8), next to what reads it (onnxruntime fuses Add -> Gelu to BiasGelu).
6. Several per-token MatMuls reading one input (attention's Q, K, V projections) share its front
   end: the input is quantized once, and its centre serves every reader's correction.
7. Weights: int8, symmetric, one scale per output column (per tensor with per-tensor granularity);
   zero point one scalar 0.
8. The correction: the kernel computes (A_q - 128) s x W_q s_w ~ (A - m) W_deq, so m times the
   column sums of W_deq = s_w * W_q, the weights the kernel really multiplies by, is added back:
   A W_deq, the symmetric form's target, with the centred form's error. A broadcast Mul
   m [.., M, 1] x colsum [N] and an Add after the kernel. Rule: every per-token MatMul is
   centred; measured on MiniLM, centring the attention output projection's input alone gained
   nothing, the others (Q/K/V, FFN in and out) all of the gain, and no rule that needs no
   calibration tells them apart (docs/per_token.md).
9. Outlier channels (with calibration data, ``QuantConfig.outlier_channels``): input channels whose
   calibrated max |A| exceeds ``OUTLIER_RATIO`` times the median channel's (at most K / ``OUTLIER_SHARE``,
   the largest first: ``outlier_channels``) are taken out of the int8 product and multiplied in
   float, beside the centre's correction (8), after LLM.int8() (Dettmers et al. 2022):

       A -> Mul(mask: 0 at O, 1 elsewhere) -> the front end (1) (3)      (O left out of the row's range)
       A -> Gather(O, axis -1) = A_O [.., M, |O|]
       Concat(hi, lo, A_O) [.., M, 2 + |O|] -> MatMul([colsum / 2; colsum / 2; W_O]) -> Add after the kernel   (10)

   W_q keeps its rows O: the masked channels are 0, so with the centre's correction (8) over all
   of K their int8 products cancel (but for the rounding of -m / s), and the int8 weights stay one
   copy however many readers share them. W_O [|O|, N] are the float weights' rows, exact. Only
   where no reader's weight is read by a MatMul of another input too (``shared_weights``):
   a weight shared across inputs (an unrolled recurrence: 40 steps, one W) would otherwise get one
   float correction per step. Transformers' LayerNorm outputs carry a few channels 5-20x the
   median on every token (MiniLM: channel 99 and 2-5 others), which otherwise set most rows'
   range: MiniLM with every
   MatMul per token 23.5 -> 26.4 dB on unseen sentences, at the same latency (one multiply over A,
   a Gather, and a MatMul of depth 1 + |O| in place of the correction's Mul). Activations without
   such channels (a GELU output, whose large values move from token to token) have none (no change).
10. The row arithmetic in few nodes: every node costs onnxruntime a few microseconds whatever its
   size, and the front end's [.., M, 1] arithmetic for s and m was seven of them (Sub, Mul, Mul,
   Mul, Max, Add, Mul). Here hi and lo are concatenated (with A_O where (9) applies) and one MatMul
   by a constant [2 (+ |O|), 4] gives (hi - lo) / (2 * half), hi / 2^15, -lo / 2^15 and
   (hi + lo) / 2 at once; Split and one Max make s, the last column is m. The same numbers but
   for float rounding (hi / L - lo / L against (hi - lo) / L). With outlier channels the
   correction MatMul reads that concatenation, [hi, lo, A_O] x [colsum / 2; colsum / 2; W_O], so
   no Concat of its own. MiniLM, every MatMul per token (780 -> 690 nodes), 1 thread, AMD EPYC
   without VNNI, medians of 5 interleaved rounds in two runs: 12.16 -> 11.57 and 12.59 -> 12.14 ms
   (3.6-4.9%), the same SQNR (30.67 -> 30.71 dB unseen).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import onnx_ir as ir

from edgeq.config import PerTensor, QuantConfig
from edgeq.graph import MS_DOMAIN, add_initializer, graphs_of, remove_unused_initializers, split_node
from edgeq.passes.dynamic import quantize_matmul_weight, replace_nodes
from edgeq.passes.outliers import outlier_channels, own_weights, shared_weights
from edgeq.passes.plan import QuantPlan, Role, derived_name, fresh_base, node_label
from edgeq.passes.weights import PAIR_LIMIT, QMAX, note_reduced, pairs_form, weight_qmax

__all__ = ["PerTokenMatMulPass", "row_form", "TERMS"]

logger = logging.getLogger(__name__)

TINY = np.finfo(np.float32).tiny  # (1) the smallest row scale
REL = 2.0 ** -15  # (1) the smallest row scale, relative to max |A|
CENTER = True  # (1) (8) rows quantized around their midpoint; False: symmetric around 0
TERMS = "_token_terms"  # (10) the name ending of the row arithmetic's MatMul ("terms" below) and of its constant matrix


def row_form(config: QuantConfig) -> tuple[int, int | None, int]:
    """(2) (levels either side of a row's zero point, the weights' pair limit or None, their
    largest level): (127, None, 127) where products do not saturate; where they do (or with
    ``reduce_range``), full rows with 8-bit weights whose pairs stay within 128 (127, 128, 127:
    ``weights.pairs_form``) or, with ``reduce_range`` True or a kernel that pairs otherwise,
    7-bit weights (127, None, 63); with ``config.token_rows`` "narrow", narrow rows (90, 181, 127)."""
    qmax = weight_qmax(config)
    if qmax == QMAX:
        return 127, None, qmax
    from edgeq.runtime import cpu

    if getattr(config, "token_rows", None) == "narrow" and cpu.pairs_exact():
        return cpu.NARROW_LEVELS // 2, cpu.NARROW_PAIR_LIMIT, QMAX
    if pairs_form(config):
        return 127, PAIR_LIMIT, QMAX
    return 127, None, qmax


class Front(NamedTuple):
    """(6) An input quantized per row: A_q, its row scales, its row centres (None: symmetric)."""

    q: ir.Value
    scale: ir.Value
    mid: ir.Value | None
    extra: ir.Value | None = None  # (9) (10) Concat(hi, lo, A_O) (or A_O when symmetric): the float correction's left side
    outliers: np.ndarray | None = None  # (9) the channels O


class PerTokenMatMulPass(ir.passes.InPlacePass):
    """``center``: rows quantized around their midpoint (1) (8); None: the module's ``CENTER``."""

    def __init__(self, config: QuantConfig, plan: QuantPlan, center: bool | None = None) -> None:
        super().__init__()
        self.config = config
        self.plan = plan
        self.center = CENTER if center is None else center
        self.half, self.pair_limit, self.qmax = row_form(config)  # (2)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count, self._opset = 0, model.opset_imports.get("", 13)
        for graph in graphs_of(model):
            fronts: dict[ir.Value, Front] = {}  # (6) input -> its quantized form
            self._shared = shared_weights(graph)  # (9)
            self._consts: dict[str, ir.Value] = {}
            for node in list(graph):
                if node in self.plan.per_token and self.plan.role(node) == Role.DYNAMIC:
                    self._matmul(graph, node, fronts)
                    count += 1
        if count:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        if count and self.qmax != QMAX:
            note_reduced(self.plan.notes, self.config)
        if count and self.pair_limit is not None:
            note = (f"per-token MatMuls: rows on {2 * self.half + 1} levels and 8-bit weights, no two same-sign weight "
                    f"levels of rows 2i, 2i + 1 above {self.pair_limit} in sum: this CPU's onnxruntime adds pairs of "
                    "u8s8 products in int16 (x86 without VNNI)")
            if note not in self.plan.notes:
                self.plan.notes.append(note)
        logger.info("per-token: %d MatMul/Gemm to per-token dynamic int8 (%s)", count,
                    "rows centred" if self.center else "symmetric")
        return ir.passes.PassResult(model, modified=count > 0)

    def _const(self, graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
        if name not in self._consts:
            self._consts[name] = add_initializer(graph, f"per_token_{name}", array)
        return self._consts[name]

    def _f32(self, graph: ir.Graph, name: str, value: float) -> ir.Value:
        return self._const(graph, name, np.array(value, np.float32))

    def _reduce(self, graph: ir.Graph, op: str, x: ir.Value, name: str) -> ir.Node:
        if self._opset >= 18:
            return ir.node(op, [x, self._const(graph, "axes", np.array([-1], np.int64))], {"keepdims": 1}, name=name)
        return ir.node(op, [x], {"axes": [-1], "keepdims": 1}, name=name)

    def _front(self, graph: ir.Graph, x: ir.Value, before: ir.Node, k: int) -> Front:
        """(1) (3) A's row scales (and centres) and A quantized with them, inserted before ``before``."""
        label = x.name or node_label(before)
        nodes: list[ir.Node] = []

        def add(op: str, inputs: list, suffix: str, attributes: dict | None = None) -> ir.Value:
            nodes.append(ir.node(op, inputs, attributes or {}, name=f"{label}_token_{suffix}"))
            return nodes[-1].outputs[0]

        absmax = self.plan.token_channels.get(x) if self.config.outlier_channels and own_weights(x, self._shared) else None
        outliers = outlier_channels(absmax) if absmax is not None and absmax.size == k else None
        a_o = None
        if outliers is not None:  # (9) O out of the int8 product, into the float correction
            mask = np.ones(k, np.float32)
            mask[outliers] = 0.0
            a_o = add("Gather", [x, add_initializer(graph, f"{label}_token_outliers", outliers)], "outliers",
                      {"axis": -1})
            x = add("Mul", [x, add_initializer(graph, f"{label}_token_mask", mask)], "masked")

        mid = extra = None
        if self.center:  # (1) midpoint and range, (10) from one small MatMul
            nodes += [self._reduce(graph, "ReduceMax", x, f"{label}_token_max"),
                      self._reduce(graph, "ReduceMin", x, f"{label}_token_min")]
            hi, lo = nodes[-2].outputs[0], nodes[-1].outputs[0]
            bounds = add("Concat", [hi, lo] + ([a_o] if a_o is not None else []), "extra", {"axis": -1})
            extra = bounds if a_o is not None else None  # (9) [hi, lo, A_O]
            terms = np.zeros((2 + (0 if outliers is None else outliers.size), 4), np.float32)
            terms[:2] = [[1 / (2 * self.half), REL, 0.0, 0.5], [-1 / (2 * self.half), 0.0, -REL, 0.5]]
            y = add("MatMul", [bounds, add_initializer(graph, f"{label}{TERMS}", terms)], "terms")
            nodes.append(split_node(y, [1] * 4, -1, self._opset, f"{label}_token_split",
                                    lambda sizes: self._const(graph, "ones4", sizes)))
            for i, out in enumerate(nodes[-1].outputs):
                out.name = f"{label}_token_split_{i}"
            width, rel_hi, rel_lo, mid = nodes[-1].outputs
            s = add("Max", [width, rel_hi, rel_lo, self._f32(graph, "tiny", TINY)], "scale")
            mid.name, mid.dtype = f"{label}_token_mid", ir.DataType.FLOAT
        else:  # (1) symmetric
            nodes.append(ir.node("Abs", [x], name=f"{label}_token_abs"))
            nodes.append(self._reduce(graph, "ReduceMax", nodes[-1].outputs[0], f"{label}_token_max"))
            raw = add("Mul", [nodes[-1].outputs[0], self._f32(graph, f"inv{self.half}", 1 / self.half)], "div")
            s = add("Max", [raw, self._f32(graph, "tiny", TINY)], "scale")
        if self._opset >= 21:  # (3) one blocked QuantizeLinear (of A - m)
            source = x if mid is None else add("Sub", [x, mid], "centred")
            zp = add("ConstantOfShape", [add("Shape", [s], "shape")], "zp",
                     {"value": ir.tensor(np.array([self.half + 1], np.uint8))})
            q = add("QuantizeLinear", [source, s, zp], "q", {"axis": -1, "block_size": k})
        else:  # (3) elementwise: one multiply, one add, one truncating cast over A
            inv = add("Div", [self._f32(graph, "one", 1.0), s], "inv")
            offset = self._f32(graph, f"f{self.half + 1}_5", self.half + 1.5)
            if mid is not None:  # the centre folded into the per-row offset 128.5 - m / s
                offset = add("Sub", [offset, add("Mul", [mid, inv], "mid_steps")], "offset")
            shift = add("Add", [add("Mul", [x, inv], "mul"), offset], "shift")
            q = add("Cast", [shift], "q", {"to": ir.DataType.UINT8})
        if a_o is not None and mid is None:  # (9)
            extra = a_o
        s.name, s.dtype = f"{label}_token_scale", ir.DataType.FLOAT
        q.name, q.dtype = f"{label}_token_q", ir.DataType.UINT8
        graph.insert_before(before, nodes)
        return Front(q, s, mid, extra, outliers)

    def _matmul(self, graph: ir.Graph, node: ir.Node, fronts: dict[ir.Value, Front]) -> None:
        weight, qw, bias = quantize_matmul_weight(node, not isinstance(self.config.granularity, PerTensor),
                                                  self.qmax, self.pair_limit)  # (5), (7)
        x = node.inputs[0]
        if x not in fronts:  # (6)
            fronts[x] = self._front(graph, x, node, weight.shape[0])
        front = fronts[x]
        base = fresh_base(graph, node.inputs[1].name or node_label(node), ("_q", "_scale", "_bias", "_colsum"))
        inputs = [front.q, add_initializer(graph, f"{base}_q", qw.values), front.scale,
                  add_initializer(graph, f"{base}_scale", qw.scale),
                  self._const(graph, f"zp{self.half + 1}", np.array(self.half + 1, np.uint8)),  # (2)
                  self._const(graph, "zp0", np.array(0, np.int8))]  # (7)
        new = [ir.node("MatMulIntegerToFloat", inputs, domain=MS_DOMAIN, name=derived_name(node, "per_token"))]  # (4)
        if front.extra is not None:  # (9) (10) [hi, lo, A_O] x [colsum / 2; colsum / 2; W_O]: centre and outliers
            rows = [] if front.outliers is None else [weight[front.outliers].astype(np.float32)]
            if front.mid is not None:  # (10) extra = [hi, lo, A_O]: m = hi / 2 + lo / 2
                rows[:0] = [0.5 * dequantized_colsum(qw.values, qw.scale)[None, :]] * 2
            corr = ir.node("MatMul", [front.extra, add_initializer(graph, f"{base}_outlier_rows", np.concatenate(rows))],
                           name=derived_name(node, "outliers"))
            new += [corr, ir.node("Add", [new[0].outputs[0], corr.outputs[0]], name=derived_name(node, "uncentre"))]
        elif front.mid is not None:  # (8) m * colsum of the int8-grid weights, added back
            colsum = dequantized_colsum(qw.values, qw.scale)
            corr = ir.node("Mul", [front.mid, add_initializer(graph, f"{base}_colsum", colsum)],
                           name=derived_name(node, "centre"))
            new += [corr, ir.node("Add", [new[0].outputs[0], corr.outputs[0]], name=derived_name(node, "uncentre"))]
        if bias is not None:  # (5)
            new.append(ir.node("Add", [new[-1].outputs[0], add_initializer(graph, f"{base}_bias", bias)],
                               name=derived_name(node, "bias")))
        old_inputs = list(node.inputs[1:])
        replace_nodes(graph, node, new)
        remove_unused_initializers(graph, old_inputs)
        self.plan.weights[node] = {**qw.summary(weight), "kernel": "MatMulIntegerToFloat", "activations": "per-token",
                                   "rows": "centred" if front.mid is not None else "symmetric",
                                   "row_levels": 2 * self.half + 1,
                                   "outlier_channels": 0 if front.outliers is None else int(front.outliers.size)}


def dequantized_colsum(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(8) sum over K of s_w * W_q: the column sums of the weights the kernel multiplies by (not
    of the float weights: their difference, times the row centre, would be an error per column)."""
    return (values.astype(np.float64).sum(axis=0) * np.asarray(scale, np.float64)).astype(np.float32).reshape(-1)

