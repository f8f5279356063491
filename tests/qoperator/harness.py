"""Shared checks for the rewrite tests: quantize a float graph to QDQ, rewrite it, and compare
onnxruntime (QDQ vs QOperator) and the integer reference, in output LSBs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.config import QuantConfig
from edgeq.stages.integer_only import integer_only
from ortutil import op_types, run_ort

from .qdq import quantize_qdq, with_weights

__all__ = ["Rewritten", "rewrite_text", "output_scales", "assert_within_lsb", "check_all", "per_op_agreement"]


class Rewritten:
    def __init__(self, qdq, model, section, feeds):
        self.qdq, self.model, self.section, self.feeds = qdq, model, section, feeds

    @property
    def ops(self) -> list[str]:
        return op_types(self.model)


def rewrite_text(text: str, rng, feeds_shapes: dict, config: QuantConfig | None = None,
                 **qdq_kwargs) -> Rewritten:
    float_model = with_weights(text, rng)
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in feeds_shapes.items()}
    qdq = quantize_qdq(float_model, feeds, **qdq_kwargs)
    model = ir.from_proto(qdq)
    section = integer_only(model, config or QuantConfig(format="qoperator"))
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return Rewritten(qdq, proto, section, feeds)


def output_scales(model: onnx.ModelProto) -> list[float | None]:
    """Scale of the final uint8/int8 DequantizeLinear of each graph output, else None (an
    int32 accumulator or QGemm's float output: compared as floats)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = []
    for out in model.graph.output:
        node = producers.get(out.name)
        ok = node is not None and node.op_type == "DequantizeLinear" and len(node.input) > 2
        ok = ok and inits[node.input[2]].dtype in (np.uint8, np.int8)
        scales.append(float(inits[node.input[1]]) if ok else None)
    return scales


def assert_within_lsb(a: list[np.ndarray], b: list[np.ndarray], scales, share: float = 0.999):
    """At most 1 LSB apart on at least ``share`` of the elements (float outputs: 1e-4 rel)."""
    for x, y, s in zip(a, b, scales):
        assert x.shape == y.shape
        if s is None:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4 * np.abs(y).max())
            continue
        lsb = np.rint(np.abs(x.astype(np.float64) - y.astype(np.float64)) / s)
        within = float((lsb <= 1).mean())
        assert within >= share, f"only {within:.4%} within 1 LSB (max {lsb.max():.0f} LSB)"


def check_all(r: Rewritten, reference: bool = True) -> None:
    """QDQ (ORT) vs QOperator (ORT) vs the integer reference, all within 1 LSB."""
    from edgeq.reference import run

    scales = output_scales(r.model)
    got = run_ort(r.model, r.feeds)
    assert_within_lsb(got, run_ort(r.qdq, r.feeds), scales)
    if reference:
        ref = run(r.model, r.feeds)
        assert_within_lsb([ref[o.name] for o in r.model.graph.output], got, scales)


def _expose_all(model: onnx.ModelProto, program) -> onnx.ModelProto:
    """The model with every integer node output as a graph output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = {o.name for o in m.graph.output}
    for step in program.steps:
        for v in step.node.outputs:
            if v.name not in names and v.dtype is not None:
                m.graph.output.append(onnx.helper.make_tensor_value_info(v.name, v.dtype.value, None))
    return m


def per_op_agreement(model: onnx.ModelProto, feeds, rounding: str = "double") -> dict[str, float]:
    """Each integer op of the reference fed onnxruntime's inputs: share within 1 LSB."""
    from edgeq.reference import compile_model

    program = compile_model(model, rounding)
    exposed = _expose_all(model, program)
    values = dict(zip([o.name for o in exposed.graph.output], run_ort(exposed, feeds)))
    values.update(feeds)
    for init in model.graph.initializer:
        values[init.name] = onnx.numpy_helper.to_array(init)
    shares = {}
    for step in program.steps:
        if step.node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        args = [None if v is None else values[v.name] for v in step.inputs]
        (got,) = step.kernel.fn(args)
        want = values[step.node.outputs[0].name]
        assert got.dtype == want.dtype and got.shape == want.shape, step.node.op_type
        if np.issubdtype(want.dtype, np.floating):  # QGemm float output: float rounding only
            close = np.isclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
        else:
            close = np.abs(got.astype(np.int64) - want.astype(np.int64)) <= 1
        shares[f"{step.node.op_type} {step.node.name}"] = float(close.mean())
    return shares
