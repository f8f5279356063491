"""edgeq.graph: what counts as a constant, the inspect-pass contract, and the runner."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgeq.errors import UsageError
from edgeq.graph import (
    InspectPass,
    add_initializer,
    const_array,
    copy_model,
    initializer_array,
    run_passes,
)

# w: a constant initializer; b: an initializer also listed as an input (a caller may override it);
# c: a Constant node.
MODEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x, float[2] b) => (float[2] y) <float[2] w = {1.0, 2.0}, float[2] b = {3.0, 4.0}> {
  c = Constant<value_floats = [5.0, 6.0]>()
  s = Add(x, w)
  t = Add(s, b)
  y = Add(t, c)
}"""


def _values(model: ir.Model) -> dict[str, ir.Value]:
    return {v.name: v for node in model.graph for v in node.inputs}


def test_constant_lookups_differ_only_on_constant_nodes():
    values = _values(ir.from_onnx_text(MODEL))
    assert const_array(values["w"]).tolist() == [1.0, 2.0]
    assert const_array(values["c"]).tolist() == [5.0, 6.0]  # case 2: a Constant node counts
    assert initializer_array(values["w"]).tolist() == [1.0, 2.0]
    assert initializer_array(values["c"]) is None  # case 3: initializers only
    for lookup in (const_array, initializer_array):  # case 1: an overridable input is no constant
        assert lookup(values["b"]) is None and lookup(values["x"]) is None and lookup(None) is None


def test_add_initializer_takes_a_free_name_and_copy_model_shares_nothing():
    model = ir.from_onnx_text(MODEL)
    value = add_initializer(model.graph, "w", np.zeros(3, np.int8))
    assert value.name == "w_1" and value.dtype == ir.DataType.INT8 and list(value.shape) == [3]
    copy = copy_model(model)
    copy.graph.initializers.pop("w_1")
    assert "w_1" in model.graph.initializers and "w_1" not in copy.graph.initializers


class _Count(InspectPass):
    def inspect(self, model: ir.Model) -> None:
        self.count = len(model.graph)


class _Sneaky(InspectPass):
    def inspect(self, model: ir.Model) -> None:
        model.graph.remove(next(iter(model.graph)), safe=False)


def test_inspect_pass_reports_no_change_and_may_not_make_one():
    model = ir.from_onnx_text(MODEL)
    pass_ = _Count()
    result = pass_(model)
    assert pass_.count == 4 and result.modified is False and result.model is model
    assert pass_.in_place and not pass_.changes_input
    with pytest.raises(ir.passes.PostconditionError, match="_Sneaky is an inspect pass"):
        _Sneaky()(model)
    with pytest.raises(TypeError, match="implement inspect"):
        type("Bad", (InspectPass,), {"call": lambda self, model: None})


class _Refuse(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        raise UsageError("node 'n' is unknown: pick another")


def test_run_passes_lets_edgeq_errors_out_unwrapped():
    model = ir.from_onnx_text(MODEL)
    assert run_passes(model, [_Count()]) is model
    with pytest.raises(UsageError, match="node 'n' is unknown"):
        run_passes(model, [_Count(), _Refuse()])
