"""Fuse activations written as elementwise chains into one op, before selection.

    x -> Add(3) -> Clip(0, 6) -> Div(6) -> Mul(x)    ==>  HardSwish(x)
    x -> Add(3) -> Clip(0, 6) -> Mul(x) -> Div(6)    ==>  HardSwish(x)
    x -> HardSigmoid(1/6, 0.5) -> Mul(x)             ==>  HardSwish(x)
    x -> Add(3) -> Clip(0, 6) -> Div(6)              ==>  HardSigmoid<alpha=1/6, beta=0.5>(x)
    x -> Div(sqrt 2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5)            ==>  Gelu(x)
    x -> (x + 0.044715 x^3) * sqrt(2/pi) -> Tanh -> Add(1) -> ... 0.5 x  ==>  Gelu<approximate=tanh>(x)

1. Hard-sigmoid is Clip(x + 3, 0, 6) / 6, the division also written as Mul(1/6); the Clip is a
   Relu6 (bounds as inputs, or as attributes before opset 11). Every constant is checked (relative
   tolerance 1e-5) and every intermediate value must have no other consumer and not be a graph
   output, so what is removed is exactly the activation.
2. Hard-swish is x * hard-sigmoid(x), the Mul before or after the division (PaddlePaddle writes
   (x * Clip(x + 3, 0, 6)) / 6), or x * HardSigmoid(alpha=1/6, beta=0.5).
3. HardSwish exists from opset 14. Below it, a hard-swish chain becomes HardSigmoid -> Mul(x):
   two ops instead of four, both run by onnxruntime's CPU provider.
4. GELU (erf form 0.5 x (1 + Erf(x / sqrt 2)), tanh form with 0.044715 x^3 and sqrt(2/pi)), the
   0.5 and the x multiplied in any order, becomes Gelu only from opset 20 (the standard op);
   below it the chain is left alone (onnxruntime fuses it into its own Gelu at load time).
5. SiLU, x * Sigmoid(x), is left alone: there is no standard single op before opset 24, and the
   selector quantizes Sigmoid and Mul between int8 neighbours (QLinearSigmoid, QLinearMul), which
   a fused float op would not get.
Why: the selector (select.py) leaves every op of such a chain float, each one a pass over the
tensor between a DQ and a Q; one fused float op does the same work in one pass, with the same
numerics (within float rounding). The fused op stays float too (onnxruntime's CPU provider has
no QDQ fusion for HardSwish, HardSigmoid or Gelu), with int8 Convs on both sides.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx_ir as ir

from edgeq.graph import const_array
from edgeq.passes.plan import derived_name

__all__ = ["FuseActivationsPass"]

logger = logging.getLogger(__name__)

_RTOL = 1e-5
_SQRT2 = math.sqrt(2.0)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _is(value: ir.Value | None, target: float) -> bool:
    """``value`` is a constant holding one number close to ``target``."""
    array = const_array(value)
    return (array is not None and array.size == 1 and array.dtype.kind == "f"
            and math.isclose(float(array.reshape(-1)[0]), target, rel_tol=_RTOL))


def _only_use(value: ir.Value, *ops: str) -> ir.Node | None:
    """The one consumer of ``value`` when it is one of ``ops`` (cases 1, 4: no other consumer)."""
    uses = value.uses()
    if len(uses) != 1 or value.is_graph_output():
        return None
    node = uses[0].node
    return node if node.op_type in ops and node.domain == "" else None


def _other(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The other input of a binary Add/Mul whose one input is ``value``."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    return b if a is value else a if b is value else None


def _scaled(value: ir.Value, divisor: float) -> ir.Node | None:
    """The consumer that divides ``value`` by ``divisor`` (Div, or Mul by its inverse)."""
    node = _only_use(value, "Div", "Mul")
    if node is None:
        return None
    if node.op_type == "Div":
        return node if node.inputs[0] is value and _is(node.inputs[1], divisor) else None
    return node if _is(_other(node, value), 1.0 / divisor) else None


def _times(value: ir.Value, x: ir.Value) -> ir.Node | None:
    """The consumer Mul(value, x)."""
    node = _only_use(value, "Mul")
    return node if node is not None and _other(node, value) is x else None


def _clip_bounds(node: ir.Node) -> tuple[float | None, float | None]:
    lo = node.attributes.get("min")
    hi = node.attributes.get("max")
    if lo is not None or hi is not None:  # before opset 11
        return (lo.value if lo else None), (hi.value if hi else None)
    def bound(i: int) -> float | None:
        array = const_array(node.inputs[i]) if len(node.inputs) > i else None
        return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None
    return bound(1), bound(2)


def _like(value: ir.Value, model: ir.Value) -> None:
    """Give ``value`` the dtype and shape of ``model`` where known (an unknown dtype stays unset)."""
    if model.dtype is not None:
        value.dtype = model.dtype
    if model.shape is not None:
        value.shape = model.shape


class FuseActivationsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.opset = model.opset_imports.get("", 1)
        counts: dict[str, int] = {}
        for node in list(graph):
            if node.graph is None or node.domain != "":
                continue  # already removed by an earlier match
            match = None
            if node.op_type == "Clip":
                match = self._hard(node)
            elif node.op_type == "HardSigmoid":
                match = self._hard_sigmoid_mul(node)
            elif node.op_type in ("Erf", "Tanh") and self.opset >= 20:  # (4)
                match = self._gelu(node)
            if match is not None:
                kind, x, chain = match
                self._replace(graph, kind, x, chain)
                counts[kind] = counts.get(kind, 0) + 1
        if counts:
            logger.info("fuse_activations: %s", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        return ir.passes.PassResult(model, modified=bool(counts))

    # -- matchers: (kind, x, the chain's nodes in order, its last output replacing) ----------
    def _hard(self, clip: ir.Node) -> tuple[str, ir.Value, list[ir.Node]] | None:
        """(1), (2) from the Clip(0, 6) of a hard-sigmoid."""
        lo, hi = _clip_bounds(clip)
        if lo is None or hi is None or not math.isclose(lo, 0.0, abs_tol=1e-12) or not math.isclose(hi, 6.0, rel_tol=_RTOL):
            return None
        add = clip.inputs[0].producer() if clip.inputs[0] is not None else None
        if add is None or add.op_type != "Add" or add.domain != "" or _only_use(add.outputs[0], "Clip") is not clip:
            return None
        x = next((v for v in add.inputs if v is not None and const_array(v) is None), None)
        if x is None or not _is(_other(add, x), 3.0):
            return None
        c = clip.outputs[0]
        divided = _scaled(c, 6.0)
        if divided is not None:
            mul = _times(divided.outputs[0], x)
            if mul is not None:
                return "HardSwish", x, [add, clip, divided, mul]  # (2) Mul after the division
            return "HardSigmoid", x, [add, clip, divided]  # (1)
        mul = _times(c, x)
        divided = _scaled(mul.outputs[0], 6.0) if mul is not None else None
        if divided is not None:
            return "HardSwish", x, [add, clip, mul, divided]  # (2) Mul before the division
        return None

    def _hard_sigmoid_mul(self, node: ir.Node) -> tuple[str, ir.Value, list[ir.Node]] | None:
        """(2) x * HardSigmoid(x, 1/6, 0.5) (only worth it where HardSwish exists (3))."""
        alpha, beta = node.attributes.get("alpha"), node.attributes.get("beta")
        if (self.opset < 14 or alpha is None or beta is None or not math.isclose(alpha.value, 1 / 6, rel_tol=_RTOL)
                or not math.isclose(beta.value, 0.5, rel_tol=_RTOL)):
            return None
        mul = _times(node.outputs[0], node.inputs[0])
        return None if mul is None else ("HardSwish", node.inputs[0], [node, mul])

    def _gelu(self, node: ir.Node) -> tuple[str, ir.Value, list[ir.Node]] | None:
        """(4) from the Erf or Tanh of a GELU."""
        head = self._erf_head(node) if node.op_type == "Erf" else self._tanh_head(node)
        if head is None:
            return None
        x, inner = head
        plus = _only_use(node.outputs[0], "Add")
        if plus is None or not _is(_other(plus, node.outputs[0]), 1.0):
            return None
        a = plus.outputs[0]
        mul = _only_use(a, "Mul")
        other = _other(mul, a) if mul is not None else None
        if other is None:
            return None
        half = other.producer()
        if other is x:  # ((1 + erf) * x) * 0.5
            last = _scaled(mul.outputs[0], 2.0)
            tail = [mul, last]
        elif _is(other, 0.5):  # ((1 + erf) * 0.5) * x
            last = _times(mul.outputs[0], x)
            tail = [mul, last]
        elif (half is not None and half.op_type == "Mul" and half.domain == ""
              and _only_use(other, "Mul") is mul and _is(_other(half, x), 0.5)):  # (x * 0.5) * (1 + erf)
            last, tail = mul, [half, mul]
        else:
            return None
        if last is None:
            return None
        kind = "Gelu" if node.op_type == "Erf" else "GeluTanh"
        return kind, x, [*inner, node, plus, *tail]

    @staticmethod
    def _erf_head(erf: ir.Node) -> tuple[ir.Value, list[ir.Node]] | None:
        scale = erf.inputs[0].producer()
        if scale is None or scale.domain != "" or _only_use(scale.outputs[0], "Erf") is not erf:
            return None
        if scale.op_type == "Div" and _is(scale.inputs[1], _SQRT2):
            return scale.inputs[0], [scale]
        if scale.op_type == "Mul":
            x = next((v for v in scale.inputs if v is not None and const_array(v) is None), None)
            if x is not None and _is(_other(scale, x), 1 / _SQRT2):
                return x, [scale]
        return None

    @staticmethod
    def _tanh_head(tanh: ir.Node) -> tuple[ir.Value, list[ir.Node]] | None:
        """sqrt(2/pi) * (x + 0.044715 * x^3), x^3 as Pow(x, 3) or x * x * x."""
        def producer(value: ir.Value | None, op: str, consumer: ir.Node) -> ir.Node | None:
            node = value.producer() if value is not None else None
            ok = node is not None and node.op_type == op and node.domain == ""
            return node if ok and _only_use(node.outputs[0], consumer.op_type) is consumer else None

        scale = producer(tanh.inputs[0], "Mul", tanh)
        if scale is None:
            return None
        s = next((v for v in scale.inputs if const_array(v) is None), None)
        add = producer(s, "Add", scale) if _is(_other(scale, s), _SQRT_2_PI) else None
        if add is None:
            return None
        for x in add.inputs:
            cubic = producer(_other(add, x), "Mul", add)
            if cubic is None or x is None or const_array(x) is not None:
                continue
            p = next((v for v in cubic.inputs if const_array(v) is None), None)
            if not _is(_other(cubic, p), 0.044715):
                continue
            power = producer(p, "Pow", cubic)
            if power is not None and power.inputs[0] is x and _is(power.inputs[1], 3.0):
                return x, [power, cubic, add, scale]
            outer = producer(p, "Mul", cubic)
            square = producer(_other(outer, x), "Mul", outer) if outer is not None else None
            if square is not None and list(square.inputs) == [x, x]:
                return x, [square, outer, cubic, add, scale]
        return None

    # -- the rewrite -------------------------------------------------------------------------
    def _replace(self, graph: ir.Graph, kind: str, x: ir.Value, chain: list[ir.Node]) -> None:
        last = chain[-1]
        name = derived_name(last, kind.lower())
        sixth = float(np.float32(1 / 6))
        if kind == "HardSwish" and self.opset < 14:  # (3)
            hs = ir.node("HardSigmoid", [x], {"alpha": sixth, "beta": 0.5}, name=derived_name(last, "hardsigmoid"))
            _like(hs.outputs[0], x)
            new = [hs, ir.node("Mul", [x, hs.outputs[0]], name=name)]
        elif kind == "HardSwish":
            new = [ir.node("HardSwish", [x], name=name)]
        elif kind == "HardSigmoid":
            new = [ir.node("HardSigmoid", [x], {"alpha": sixth, "beta": 0.5}, name=name)]
        else:  # (4)
            attrs = {"approximate": "tanh"} if kind == "GeluTanh" else {}
            new = [ir.node("Gelu", [x], attrs, name=name)]
        old = last.outputs[0]
        out = new[-1].outputs[0]
        _like(out, old)
        graph.insert_before(last, new)
        old.replace_all_uses_with(out, replace_graph_outputs=True)
        value_name = old.name
        constants = {v for n in chain for v in n.inputs if v is not None and v.is_initializer()}
        graph.remove(chain, safe=True)
        out.name = value_name
        for value in constants:  # the 3, 6, 1/6 ... no other node reads
            if not value.uses() and not value.is_graph_input() and not value.is_graph_output():
                graph.initializers.pop(value.name)
        logger.debug("fuse_activations: %s -> %s", " -> ".join(n.op_type for n in chain),
                     " -> ".join(n.op_type for n in new))
