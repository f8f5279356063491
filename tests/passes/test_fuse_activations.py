"""FuseActivationsPass: hard-swish, hard-sigmoid and GELU chains become one op, same numerics."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgeq.passes.fuse_activations import FuseActivationsPass
from edgeq.passes.plan import Role
from ortutil import op_types, run_ort
from passes.helpers import plan_for
from passes.nets import build

HEAD = '<ir_version: 10, opset_import: ["" : {opset}]>\ng (float[2,8,5,5] x) => (float[2,8,5,5] y) {{\n'
CONSTS = {"three": np.array(3.0), "zero": np.array(0.0), "six": np.array(6.0), "sixth": np.array(1 / 6),
          "one": np.array(1.0), "half": np.array(0.5), "two": np.array(2.0), "sqrt2": np.array(np.sqrt(2)),
          "cubic": np.array(0.044715), "sqrt2pi": np.array(np.sqrt(2 / np.pi))}

HARD_SWISH_DIV = """a = Add(x, three)
  c = Clip(a, zero, six)
  h = Div(c, six)
  y = Mul(x, h)"""
HARD_SWISH_SIXTH = """a = Add(three, x)
  c = Clip(a, zero, six)
  h = Mul(sixth, c)
  y = Mul(h, x)"""
HARD_SWISH_PADDLE = """a = Add(x, three)
  c = Clip(a, zero, six)
  m = Mul(x, c)
  y = Div(m, six)"""
HARD_SWISH_HSIG = """h = HardSigmoid<alpha=0.1666667, beta=0.5>(x)
  y = Mul(x, h)"""
HARD_SIGMOID = """a = Add(x, three)
  c = Clip(a, zero, six)
  y = Div(c, six)"""
GELU_ERF = """d = Div(x, sqrt2)
  e = Erf(d)
  p = Add(e, one)
  m = Mul(x, p)
  y = Mul(m, half)"""
GELU_ERF_HALF_FIRST = """hx = Mul(x, half)
  d = Div(x, sqrt2)
  e = Erf(d)
  p = Add(one, e)
  y = Mul(hx, p)"""
GELU_TANH = """x3 = Pow(x, three)
  cx = Mul(cubic, x3)
  s = Add(x, cx)
  t0 = Mul(s, sqrt2pi)
  t = Tanh(t0)
  p = Add(t, one)
  hp = Mul(p, half)
  y = Mul(hp, x)"""
GELU_TANH_MULS = """xx = Mul(x, x)
  x3 = Mul(xx, x)
  cx = Mul(x3, cubic)
  s = Add(x, cx)
  t0 = Mul(sqrt2pi, s)
  t = Tanh(t0)
  p = Add(t, one)
  m = Mul(x, p)
  y = Div(m, two)"""


def _model(body: str, opset: int, consts: dict | None = None) -> onnx.ModelProto:
    text = HEAD.format(opset=opset) + "  " + body + "\n}"
    return build(text, {**CONSTS, **(consts or {})})


def _fused(proto: onnx.ModelProto) -> tuple[ir.Model, bool]:
    model = ir.from_proto(proto)
    return model, FuseActivationsPass()(model).modified


def _same_numerics(model: ir.Model, proto: onnx.ModelProto, rng) -> None:
    x = rng.normal(scale=4.0, size=(2, 8, 5, 5)).astype(np.float32)
    x.flat[:6] = [-3.0, 3.0, 0.0, -2.9999, 2.9999, -6.0]  # the clip corners
    np.testing.assert_allclose(run_ort(model, {"x": x})[0], run_ort(proto, {"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("body, opset, ops", [
    (HARD_SWISH_DIV, 14, ["HardSwish"]),
    (HARD_SWISH_SIXTH, 17, ["HardSwish"]),
    (HARD_SWISH_PADDLE, 14, ["HardSwish"]),
    (HARD_SWISH_HSIG, 14, ["HardSwish"]),
    (HARD_SWISH_DIV, 13, ["HardSigmoid", "Mul"]),  # (3) no HardSwish before opset 14
    (HARD_SWISH_PADDLE, 13, ["HardSigmoid", "Mul"]),
    (HARD_SIGMOID, 13, ["HardSigmoid"]),
    (GELU_ERF, 20, ["Gelu"]),
    (GELU_ERF_HALF_FIRST, 20, ["Gelu"]),
    (GELU_TANH, 20, ["Gelu"]),
    (GELU_TANH_MULS, 20, ["Gelu"]),
])
def test_activation_chain_becomes_one_op(body, opset, ops, rng):
    proto = _model(body, opset)
    model, modified = _fused(proto)
    assert modified and op_types(model) == ops
    assert model.graph.outputs[0].name == "y"
    _same_numerics(model, proto, rng)


@pytest.mark.parametrize("body, opset, why", [
    (HARD_SWISH_DIV.replace("three", "two"), 14, "Add of 2, not 3"),
    (HARD_SWISH_DIV.replace("Clip(a, zero, six)", "Clip(a, zero, seven)"), 14, "Clip to 7, not 6"),
    (HARD_SWISH_SIXTH.replace("sixth", "half"), 14, "Mul by 0.5, not 1/6"),
    (HARD_SWISH_HSIG.replace("alpha=0.1666667", "alpha=0.2"), 14, "HardSigmoid alpha 0.2"),
    (HARD_SWISH_HSIG, 13, "HardSwish needs opset 14"),
    (GELU_ERF, 18, "Gelu needs opset 20"),
    (GELU_ERF.replace("Div(x, sqrt2)", "Div(x, two)"), 20, "Erf of x/2"),
    (GELU_TANH.replace("Mul(cubic, x3)", "Mul(half, x3)"), 20, "0.5 x^3, not 0.044715 x^3"),
])
def test_near_misses_are_left_alone(body, opset, why):
    proto = _model(body, opset, {"seven": np.array(7.0)})
    model, modified = _fused(proto)
    assert not modified, why


EXTRA_USE = HEAD.format(opset=14) + """  a = Add(x, three)
  c = Clip(a, zero, six)
  h = Div(c, six)
  hs = Mul(x, h)
  y = Add(hs, c)
}"""


def test_an_intermediate_with_another_consumer_is_left_alone():
    proto = build(EXTRA_USE, CONSTS)
    model, modified = _fused(proto)
    assert not modified and op_types(model) == ["Add", "Clip", "Div", "Mul", "Add"]


def test_hard_sigmoid_read_twice_stays_hard_sigmoid(rng):
    """The Div output is read by the Mul(x) and by a graph output: only the hard-sigmoid fuses."""
    text = HEAD.format(opset=14).replace("=> (float[2,8,5,5] y)", "=> (float[2,8,5,5] y, float[2,8,5,5] h)")
    proto = build(text + "  " + HARD_SWISH_DIV + "\n}", CONSTS)
    model, modified = _fused(proto)
    assert modified and op_types(model) == ["HardSigmoid", "Mul"]
    _same_numerics(model, proto, rng)


CONV_HARD_SWISH = """<ir_version: 10, opset_import: ["" : 14]>
g (float[1,8,6,6] x) => (float[1,8,6,6] y) {
  c1 = Conv<pads=[1,1,1,1]>(x, W1)
  a = Add(c1, three)
  c = Clip(a, zero, six)
  m = Mul(c1, c)
  h = Div(m, six)
  y = Conv<pads=[1,1,1,1]>(h, W2)
}"""


def test_analysis_fuses_before_selection(rng):
    """In the analysis pipeline: one float HardSwish between two int8 Convs (ORT's CPU provider
    has no int8 HardSwish), instead of four float ops."""
    weights = {"W1": rng.normal(size=(8, 8, 3, 3)), "W2": rng.normal(size=(8, 8, 3, 3))}
    model, plan = plan_for(build(CONV_HARD_SWISH, {**CONSTS, **weights}))
    assert op_types(model) == ["Conv", "HardSwish", "Conv"]
    roles = [plan.role(node) for node in model.graph]
    assert roles == [Role.COMPUTE, Role.FLOAT, Role.COMPUTE]
