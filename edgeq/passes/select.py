"""Decide which nodes run in int8 and which stay float, each float node with its reason.

Analysis only: the graph is not changed; the decisions go into the shared ``QuantPlan``.

Static mode (the rules ORT's QDQ transformers need to fuse, so int8 is actually faster):

1. Conv, MatMul, Gemm with constant weights are quantized wherever they are (but see 5, 6):
   their int8 kernels pay for the Q/DQ around them. An activation x activation MatMul
   (attention) only between int8 neighbours, like a light op (1b): next to Softmax and masks
   it costs accuracy and saves nothing at typical sequence lengths.
2. Add, Mul, Concat, pooling, LeakyRelu, Sigmoid (fused QLinear* kernels) and shape-only ops
   (Reshape, Transpose, MaxPool, Resize-nearest, ...) are quantized only between int8
   neighbours: every activation input from an int8 op and some consumer int8. An int8 op next
   to float ops costs Q/DQ work and accuracy and saves nothing.
3. Relu and Clip(0, x) right after a quantized op fold into its output range (ORT then drops
   them), so no Q/DQ sits between Conv and Relu.
6. A Conv/MatMul/Gemm with float ops on both sides and little work per output (fewer than 64
   multiply-adds: depthwise 3x3, tiny projections) stays float: Q before and DQ after cost
   more than its int8 kernel saves.
7. A Gather from a large constant table (embeddings) reads an int8 table (format qdq):
   4x smaller, and ORT runs the Gather on int8 data.
5. A MatMul/Gemm with constant weights whose input comes from a float op and whose output goes
   to float ops (transformer FFNs: LayerNorm -> MatMul -> GELU) becomes dynamic int8: the
   input's range is measured per inference, which is as fast and more faithful than a static
   scale for such outlier-heavy activations (format qdq only; qoperator needs static scales).
4. Everything else stays float with a reason (no int8 kernel, excluded, not float32, ...).
8. ``int16_nodes`` (by name) are quantized wherever rule 1-3 allow (rules 2, 5, 6 are about int8
   speed; int16 is for fidelity), with int16 Q/DQ (``plan.int16``, folded Relu/Clip included);
   ``fp16_nodes`` stay float here (fp16.py converts them last); an unknown name is a usage error.
   With ``activations="int16"`` rule 5 is off (static int16 is the more faithful choice).
9. A Conv on a 1x1 map (squeeze-excite gates, pooled heads) stays float: one value per channel
   per image gives unreliable calibrated ranges, and there is no int8 speed to gain.
10. LSTM with constant W and R (both modes, format qdq, ``recurrent="int8"``): int8 weights,
   activations quantized at run time by onnxruntime's DynamicQuantizeLSTM (quantize_recurrent.py);
   an LSTM it cannot take, GRU and RNN stay float with the reason ``recurrent_float_reason`` gives.

11. Subgraphs (If branches, Loop and Scan bodies, nested ones too) are selected by the same
   rules, one graph at a time: a body's neighbours are its own nodes, and a value from the outer
   scope (or a body input) counts as coming from a float op. The If/Loop/Scan node stays float.
   Format qdq only: the QOperator rewrite converts the main graph alone. A body that
   calibration never ran (a branch no sample took) is left float after calibration
   (``passes.subgraphs.demote_unobserved``).
12. Per-token: with ``dynamic_granularity=PerToken()`` the MatMul/Gemm of rule 5 (and of dynamic
   mode) get one activation scale per row at run time (``plan.per_token``, per_token.py). A node
   whose precision is ``int8-per-token`` (by name or op type) is per-token dynamic in either mode,
   whatever its neighbours, if it is a MatMul/Gemm with a constant 2-D weight (format qdq); any
   other node given it stays float, with the reason. ``int8-dynamic`` alike, with one scale per
   tensor (DynamicQuantizeMatMul) whatever ``dynamic_granularity`` says (auto's per-tensor fronts).
13. A Conv/MatMul/Gemm whose output reaches a Log through a few value-keeping ops (Abs, Add of an
   eps, Pow ...: a filterbank's log magnitude) stays float (``feeds_log``): int8 rounds its
   near-zero outputs to 0, which the log turns into large errors.

Dynamic mode: MatMul/Gemm with constant weights become dynamic int8, LSTM as in 10; Conv stays
float unless ``dynamic_conv`` (dynamic Conv is slower than float Conv on ORT's CPU provider).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.config import PerToken, QuantConfig
from edgeq.graph import ONNX_DOMAINS, InspectPass, const_array
from edgeq.passes.float_reasons import FLOAT_REASONS, feeds_log, pooled_conv
from edgeq.passes.plan import QuantPlan, Role, attr_value, is_float, node_label
from edgeq.passes.precision import check_precision_names
from edgeq.passes.quantize_recurrent import RECURRENT, recurrent_float_reason

__all__ = ["SelectNodesPass", "HEAVY", "LIGHT", "PASSTHROUGH", "data_inputs"]

logger = logging.getLogger(__name__)

HEAVY = frozenset({"Conv", "MatMul", "Gemm"})
LIGHT = frozenset(
    {"Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool", "LeakyRelu", "Sigmoid"}
)
PASSTHROUGH = frozenset(
    {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "Expand",
     "Tile", "MaxPool", "Resize", "Split"}
)
FOLDABLE = frozenset({"Relu", "Clip"})
MIN_EMBEDDING = 4096  # (7) elements in a Gather table worth storing in int8
MIN_ISOLATED_WORK = 64  # (6) multiply-adds per output below which an isolated Conv/MatMul stays float
_ALL_INPUTS = frozenset({"Add", "Mul", "Concat"})



def data_inputs(node: ir.Node) -> list[ir.Value]:
    """The inputs that carry activations (not shapes, indices or weights)."""
    if node.op_type in _ALL_INPUTS:
        return [v for v in node.inputs if v is not None]
    if node.op_type in ("MatMul",):
        return [v for v in node.inputs[:2] if v is not None and const_array(v) is None]
    return [node.inputs[0]] if node.inputs and node.inputs[0] is not None else []


class SelectNodesPass(InspectPass):
    """Fill ``plan.decisions`` and ``plan.values`` (an inspect pass: the graph is unchanged)."""

    def __init__(self, config: QuantConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan

    # -- per-node checks: return None when the node can be int8, else the reason -------------
    def _excluded(self, node: ir.Node) -> bool:
        return (node.op_type in self.config.exclude or (node.name or "") in self.config.exclude
                or self._fp16(node))

    def _fp16(self, node: ir.Node) -> bool:
        return bool(node.name) and node.name in self.config.fp16_nodes

    def _run_time(self, node: ir.Node) -> str | None:  # (12) int8-per-token or int8-dynamic asked for it (or its op type)
        asked = self.config.precision.get(node.name or "", self.config.precision.get(node.op_type))
        return asked if asked in ("int8-per-token", "int8-dynamic") and not self._excluded(node) else None

    def _decide_run_time(self, node: ir.Node, asked: str) -> None:
        """(12) int8-per-token or int8-dynamic asked: dynamic (per row or per tensor) where it can
        be, else float with why."""
        reason = None
        if node.op_type not in ("MatMul", "Gemm") or node.domain != "":
            reason = f"{asked} applies to MatMul/Gemm with constant weights: left fp32"
        elif self.config.format != "qdq":
            reason = f"{asked} quantizes at run time: the QOperator format needs static scales (use --format qdq)"
        else:
            reason = self._check_heavy(node)
            if reason is None and const_array(node.inputs[1]) is None:
                reason = f"{asked} needs a constant weight (this MatMul is activation x activation)"
        if reason is None:
            self.plan.decide(node, Role.DYNAMIC, "")
            if asked == "int8-per-token":
                self.plan.per_token.add(node)
        else:
            self.plan.decide(node, Role.FLOAT, reason)

    def _int16(self, node: ir.Node) -> bool:  # (8)
        return bool(node.name) and node.name in self.config.int16_nodes and not self._excluded(node)

    def _check_heavy(self, node: ir.Node) -> str | None:
        x = node.inputs[0]
        if not is_float(x):
            return f"input {x.name!r} is {x.dtype}, not float32"
        if node.op_type == "Conv":
            w = const_array(node.inputs[1])
            if w is None:
                return "Conv weight is not a constant"
            if w.ndim not in (3, 4, 5):
                return f"Conv weight has rank {w.ndim}"
            if len(node.inputs) > 2 and node.inputs[2] is not None and const_array(node.inputs[2]) is None:
                return "Conv bias is not a constant"
            return None
        if node.op_type == "MatMul":
            a, b = node.inputs[0], node.inputs[1]
            if const_array(a) is not None:
                return "MatMul with a constant first input"
            w = const_array(b)
            if w is not None and w.ndim != 2:
                return f"MatMul weight has rank {w.ndim} (int8 kernels need 2-D weights)"
            if w is None and not is_float(b):
                return f"input {b.name!r} is not float32"
            return None
        # Gemm
        if attr_value(node, "transA", 0):
            return "Gemm with transA=1"
        if attr_value(node, "alpha", 1.0) != 1.0 or attr_value(node, "beta", 1.0) != 1.0:
            return "Gemm with alpha/beta other than 1"
        w = const_array(node.inputs[1])
        if w is None or w.ndim != 2:
            return "Gemm weight is not a 2-D constant"
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            c = const_array(node.inputs[2])
            n = w.shape[0] if attr_value(node, "transB", 0) else w.shape[1]
            if c is None or c.size != n:
                return "Gemm bias C is not a constant of one value per output"
        return None

    def _check(self, node: ir.Node, opset: int) -> tuple[str | None, str]:
        """(role, "") when the node may be int8, else (None, reason)."""
        op = node.op_type
        if node.domain not in ONNX_DOMAINS:
            return None, f"custom-domain op {node.domain}::{op}"
        if self._fp16(node):
            return None, "computed in fp16 as asked (fp16_nodes): Casts at its fp16 region's boundaries"
        if self._excluded(node):
            return None, "excluded by the user (--exclude)"
        if any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
               for attr in node.attributes.values()):
            return None, "control flow (If/Loop/Scan) runs in float; its subgraphs' nodes are selected on their own"
        if op in HEAVY:
            reason = self._check_heavy(node)
            if reason is None and op == "Conv" and not self._int16(node):
                reason = pooled_conv(node)
            if reason is None and not self._int16(node):
                reason = feeds_log(node)  # (13)
            return (Role.COMPUTE, "") if reason is None else (None, reason)
        if op in LIGHT or op in PASSTHROUGH:
            inputs = data_inputs(node)
            if not inputs or all(const_array(v) is not None for v in inputs):
                return None, "all inputs are constants"
            bad = [v for v in inputs if not is_float(v)]
            if bad:
                return None, f"input {bad[0].name!r} is {bad[0].dtype}, not float32"
            if op == "MaxPool" and (opset < 12 or (len(node.outputs) > 1 and node.outputs[1].uses())):
                return None, "MaxPool with indices output or opset < 12 has no int8 kernel"
            if op == "Resize" and attr_value(node, "mode", "nearest") != "nearest":
                return None, "Resize in linear/cubic mode stays float (rounding would differ)"
            return (Role.PASSTHROUGH if op in PASSTHROUGH else Role.COMPUTE), ""
        if op in FOLDABLE:
            if op == "Clip":
                lo = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
                lo = attr_value(node, "min", None) if lo is None and opset < 11 else lo
                if lo is None or float(lo) != 0.0:
                    return None, "Clip with a lower bound other than 0 cannot fold into a range"
                if len(node.inputs) > 2 and node.inputs[2] is not None and const_array(node.inputs[2]) is None:
                    return None, "Clip with a non-constant upper bound"
            return Role.FOLDED, ""
        return None, FLOAT_REASONS.get(op, f"{op} has no fused int8 kernel in onnxruntime (CPU)")

    # -- the pass ---------------------------------------------------------------------------
    def inspect(self, model: ir.Model) -> None:
        graph, plan = model.graph, self.plan
        opset = model.opset_imports.get("", 13)
        check_precision_names(self.config, graph)  # (8)
        bodies = [graph, *graph.subgraphs()] if self.config.format == "qdq" else [graph]
        for node in ir.traversal.RecursiveGraphIterator(graph):
            if node.graph is not graph and self.config.format != "qdq":
                plan.decide(node, Role.FLOAT, "inside a subgraph (If/Loop/Scan): the QOperator format "
                            "rewrites the main graph only (use --format qdq)")
        for body in bodies:  # (11) one graph at a time
            if self.config.mode == "dynamic":
                self._select_dynamic(body)
            else:
                self._select_static(body, opset)
            if self.config.format == "qdq":
                self._select_embeddings(body)
            self._select_recurrent(body)  # (10)
        counts: dict[str, int] = {}
        for decision in plan.decisions.values():
            counts[decision.role] = counts.get(decision.role, 0) + 1
        logger.info("select: %s", ", ".join(f"{n} {r}" for r, n in sorted(counts.items())))

    def _select_embeddings(self, graph: ir.Graph) -> None:
        """(7) Gather from a large constant table (embeddings): int8 table, int8 Gather."""
        for node in graph:
            if node.op_type != "Gather" or node.domain != "" or self._excluded(node):
                continue
            table = const_array(node.inputs[0])
            if (table is None or table.dtype != np.float32 or table.ndim < 2 or table.size < MIN_EMBEDDING
                    or const_array(node.inputs[1]) is not None or self.plan.role(node) != Role.FLOAT):
                continue
            self.plan.decide(node, Role.WEIGHT_ONLY, "")

    def _select_recurrent(self, graph: ir.Graph) -> None:
        """(10) LSTM: int8 weights, dynamic activations (DynamicQuantizeLSTM); else float, with why."""
        for node in graph:
            if node.op_type not in RECURRENT or node.domain not in ONNX_DOMAINS or self._excluded(node):
                continue
            reason = recurrent_float_reason(node)
            if reason is None and self.config.recurrent == "float":
                reason = "recurrent='float' keeps LSTM float as asked (--recurrent float)"
            if reason is None and self.config.format != "qdq":
                reason = ("the QOperator format writes static integer operators; DynamicQuantizeLSTM "
                          "quantizes at run time (use --format qdq)")
            self.plan.decide(node, Role.FLOAT if reason else Role.DYNAMIC, reason or "")

    def _select_dynamic(self, graph: ir.Graph) -> None:
        per_token = isinstance(self.config.dynamic_granularity, PerToken)  # (12)
        for node in graph:
            op = node.op_type
            if asked := self._run_time(node):
                self._decide_run_time(node, asked)  # (12)
            elif op in ("MatMul", "Gemm") and node.domain == "" and not self._excluded(node):
                reason = self._check_heavy(node)
                if reason is None and const_array(node.inputs[1]) is None:
                    reason = "dynamic mode quantizes only constant weights (activation x activation)"
                self.plan.decide(node, Role.DYNAMIC if reason is None else Role.FLOAT, reason or "")
                if reason is None and per_token:
                    self.plan.per_token.add(node)
            elif op == "Conv" and node.domain == "" and not self._excluded(node):
                if self.config.dynamic_conv:
                    reason = self._check_heavy(node)
                    self.plan.decide(node, Role.DYNAMIC if reason is None else Role.FLOAT, reason or "")
                else:
                    self.plan.decide(node, Role.FLOAT, "dynamic Conv is slower than float Conv on the "
                                     "CPU provider; use static mode, or dynamic_conv=True to force it")
            else:
                reason = (self._check(node, 13)[1] if self._excluded(node)  # excluded or fp16 (8)
                          else "dynamic mode quantizes only MatMul/Gemm weights")
                self.plan.decide(node, Role.FLOAT, reason)

    def _select_static(self, graph: ir.Graph, opset: int) -> None:
        plan = self.plan
        roles: dict[ir.Node, str] = {}
        for node in graph:
            if asked := self._run_time(node):
                self._decide_run_time(node, asked)  # (12) float neighbours see it as float
                continue
            role, reason = self._check(node, opset)
            if role is None:
                plan.decide(node, Role.FLOAT, reason)
            else:
                roles[node] = role
        # (3) Relu/Clip fold into a quantized compute producer whose only use they are.
        for node in list(roles):
            if roles[node] != Role.FOLDED:
                continue
            x = node.inputs[0]
            producer = x.producer()
            if (producer is None or roles.get(producer) != Role.COMPUTE or len(x.uses()) != 1
                    or x.is_graph_output()):
                del roles[node]
                plan.decide(node, Role.FLOAT, f"{node.op_type} does not follow a quantized op "
                            "directly (nothing to fold it into)")
        # (2) prune light/shape ops without int8 neighbours on both sides, until stable.
        changed = True
        while changed:
            changed = False
            for node in list(roles):
                if node not in roles or roles[node] == Role.FOLDED:
                    continue
                if (node.op_type in HEAVY and const_array(node.inputs[1]) is not None) or self._int16(node):
                    continue  # (1) weighted: always worth int8; (8) int16 is for fidelity
                # (1b) activation x activation MatMul (attention) is pruned like a light op
                reason = self._neighbour_reason(node, roles)
                if reason:
                    changed = True
                    del roles[node]
                    plan.decide(node, Role.FLOAT, reason)
                    for folded in self._folded_after(node, roles):
                        del roles[folded]
                        plan.decide(folded, Role.FLOAT, f"its producer {node_label(node)} stays float")
        # (6) an isolated heavy op with little work per output stays float.
        for node in list(roles):
            reason = "" if self._int16(node) else self._small_island(node, roles)
            if reason:
                del roles[node]
                plan.decide(node, Role.FLOAT, reason)
                for folded in self._folded_after(node, roles):
                    del roles[folded]
                    plan.decide(folded, Role.FLOAT, f"its producer {node_label(node)} stays float")
        # (5) a weighted MatMul/Gemm between float ops: dynamic int8 (qdq format only).
        if self.config.format == "qdq" and self.config.activations != "int16":
            for node in list(roles):
                if not self._int16(node) and self._dynamic_island(node, roles):
                    del roles[node]
                    plan.decide(node, Role.DYNAMIC, "between float ops: activation range measured "
                                "per inference (no calibration error)")
                    if isinstance(self.config.dynamic_granularity, PerToken):  # (12)
                        plan.per_token.add(node)
        for node, role in roles.items():
            plan.decide(node, role)
        self._mark_int16(roles)
        self._mark_values(graph, roles)

    def _mark_int16(self, roles: dict[ir.Node, str]) -> None:
        """(8) int16 compute nodes and the Relu/Clip folded into them."""
        for node in list(roles):
            if roles[node] == Role.COMPUTE and self._int16(node):
                self.plan.int16.add(node)
                self.plan.int16.update(self._folded_after(node, roles))
        done = [n.name for n in roles if n in self.plan.int16 and roles[n] == Role.COMPUTE]
        if done:
            self.plan.notes.append(f"int16 activations (int8 weights) around {', '.join(done)}")
        if left := [n for n in self.config.int16_nodes if n not in done]:
            self.plan.notes.append(f"int16_nodes: {', '.join(left)} stay float (see their reasons)")

    def _isolated(self, node: ir.Node, roles: dict[ir.Node, str]) -> bool:
        """No int8 op on either side (its Q and DQ are pure overhead)."""
        producers = [v.producer() for v in data_inputs(node) if const_array(v) is None]
        if any(self._int8(p, roles) for p in producers):
            return False
        folded = self._folded_after(node, roles)
        out = folded[0].outputs[0] if folded else node.outputs[0]
        return not self._int8_consumers(out, roles)

    def _small_island(self, node: ir.Node, roles: dict[ir.Node, str]) -> str:
        if node.op_type not in HEAVY or not self._isolated(node, roles):
            return ""
        weight = const_array(node.inputs[1])
        if weight is None:
            return ""
        if node.op_type == "Conv":
            work = int(np.prod(weight.shape[1:]))
        elif node.op_type == "Gemm" and attr_value(node, "transB", 0):
            work = weight.shape[1]
        else:
            work = weight.shape[0]
        if work >= MIN_ISOLATED_WORK:
            return ""
        return (f"isolated between float ops with {work} multiply-adds per output (< {MIN_ISOLATED_WORK}, "
                "e.g. depthwise): the Q/DQ around it would cost more than int8 saves")

    def _dynamic_island(self, node: ir.Node, roles: dict[ir.Node, str]) -> bool:
        if node.op_type not in ("MatMul", "Gemm") or const_array(node.inputs[1]) is None:
            return False
        if self._int8(node.inputs[0].producer(), roles):
            return False
        if self._folded_after(node, roles) or self._int8_consumers(node.outputs[0], roles):
            return False
        return True

    @staticmethod
    def _folded_after(node: ir.Node, roles: dict[ir.Node, str]) -> list[ir.Node]:
        return [c for out in node.outputs for c in out.consumers() if roles.get(c) == Role.FOLDED]

    def _int8_consumers(self, value: ir.Value, roles: dict[ir.Node, str]) -> bool:
        for consumer in value.consumers():
            role = roles.get(consumer)
            if role == Role.FOLDED:
                if self._int8_consumers(consumer.outputs[0], roles):
                    return True
            elif role is not None and self._int8(consumer, roles):
                return True
        return False

    def _int8(self, node: ir.Node | None, roles: dict[ir.Node, str]) -> bool:
        """In ``roles`` and not int16 (8): an int16 neighbour gives no int8 kernel to fuse with."""
        if node is None or node not in roles:
            return False
        if roles[node] == Role.FOLDED:
            node = node.inputs[0].producer()
        return not self._int16(node)

    def _neighbour_reason(self, node: ir.Node, roles: dict[ir.Node, str]) -> str:
        producers = [v.producer() for v in data_inputs(node) if const_array(v) is None]
        if not all(self._int8(p, roles) for p in producers):
            return (f"an input of this {node.op_type} comes from a float op (int8 here would add a "
                    "QuantizeLinear and lose accuracy for no faster kernel)")
        if not any(self._int8_consumers(out, roles) for out in node.outputs):
            return f"isolated: no int8 consumer reads this {node.op_type} (int8 here would only add Q/DQ)"
        return ""

    def _mark_values(self, graph: ir.Graph, roles: dict[ir.Node, str]) -> None:
        """(Values) inputs of int8 nodes, and outputs that int8 kernels produce."""
        plan = self.plan
        for node, role in roles.items():
            if role == Role.FOLDED:
                continue
            for x in data_inputs(node):
                if const_array(x) is None or node.op_type in _ALL_INPUTS:
                    plan.values.setdefault(x, x)
            folded = self._folded_after(node, roles)
            out = folded[0].outputs[0] if folded else node.outputs[0]
            if (node.op_type in ("MatMul", "Gemm") and not folded
                    and not self._int8_consumers(out, roles)):
                continue  # int8 inputs, float output: MatMulIntegerToFloat / QGemm
            for value in (folded[0].outputs if folded else node.outputs):
                if value.uses() or value.is_graph_output():
                    plan.values.setdefault(value, value)
