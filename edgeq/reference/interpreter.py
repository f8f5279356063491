"""A numpy interpreter for integer-only ONNX models: compile once, then run on int arrays.

Compilation turns every node into a ``Kernel`` with its fixed-point multipliers and shifts
decided ahead of time. ``DequantizeLinear -> QuantizeLinear`` pairs become one fixed-point
requantization. The only float arithmetic at run time is QuantizeLinear on the graph inputs
and DequantizeLinear (or QGemm's float output) at the graph outputs; a DequantizeLinear that
feeds anything else is a float island and raises ``UnsupportedError`` naming it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from edgeq.errors import InputError, UnsupportedError, UsageError
from edgeq.io import as_model
from edgeq.reference import ops_elementwise, ops_linear, ops_pool, ops_shape  # noqa: F401 (register)
from edgeq.reference._kernel import OPS, Context, Kernel
from edgeq.reference.ops_elementwise import requantize_kernel

__all__ = ["Program", "compile_model", "run", "export_params"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Step:
    node: ir.Node
    inputs: tuple[ir.Value | None, ...]
    kernel: Kernel


@dataclasses.dataclass(frozen=True)
class Program:
    graph: ir.Graph
    steps: tuple[Step, ...]

    def run(self, feeds: dict[str, np.ndarray], intermediates: bool = False) -> dict[str, np.ndarray]:
        env: dict[ir.Value, np.ndarray] = {}
        for value in self.graph.initializers.values():
            if value.const_value is not None:
                env[value] = value.const_value.numpy()
        for value in self.graph.inputs:
            if value.name in feeds:
                env[value] = np.asarray(feeds[value.name])
            elif value not in env:
                raise InputError(
                    f"missing feed for model input {value.name!r}: pass every input "
                    f"({', '.join(v.name for v in self.graph.inputs)})"
                )
        for step in self.steps:
            args = [None if v is None else env[v] for v in step.inputs]
            for value, array in zip(step.node.outputs, step.kernel.fn(args)):
                env[value] = array
        values = env if intermediates else {v: env[v] for v in self.graph.outputs}
        return {v.name: a for v, a in values.items() if v.name}


def _domain(node: ir.Node) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _folded_dq(node: ir.Node) -> bool:
    """A DequantizeLinear read only by QuantizeLinear nodes (a requantization)."""
    if node.op_type != "DequantizeLinear" or _domain(node) != "":
        return False
    uses = [u.node for u in node.outputs[0].uses()]
    return bool(uses) and not node.outputs[0].is_graph_output() and all(
        u.op_type == "QuantizeLinear" for u in uses
    )


def _check_float_end(node: ir.Node) -> None:
    """A float-producing node must feed only graph outputs (or requantizations)."""
    for value in node.outputs:
        for use in value.uses():
            if use.node.op_type != "QuantizeLinear":
                raise UnsupportedError(
                    f"{node.op_type} {node.name!r} feeds float {value.name!r} to "
                    f"{use.node.op_type} {use.node.name!r}: a float island, which the integer "
                    "reference does not run; rewrite it with --integer-only or leave it out"
                )


ROUNDINGS = ("double", "single")


def compile_model(model: Any, rounding: str = "single", partial: bool = False) -> Program:
    """Compile ``model`` (path, onnx.ModelProto or onnx_ir.Model) for ``Program.run``.

    ``rounding``: ``"single"`` (the default) is TFLITE_SINGLE_ROUNDING: one int32 multiplier,
    one rounding right shift; it is bit-exact with onnxruntime op by op, so deep networks do not
    drift (end to end 100% within 1 LSB on the digits models). ``"double"`` is gemmlowp's
    SaturatingRoundingDoublingHighMul then RoundingDivideByPOT, which rounds twice and differs
    from onnxruntime by 1 LSB on ~0.2% of each op's outputs; offered for MCU runtimes built on
    gemmlowp/CMSIS-NN. ``partial`` skips the
    nodes it cannot run instead of raising (for ``export_params`` on models with float islands;
    such a program cannot ``run``).
    """
    if rounding not in ROUNDINGS:
        raise UsageError(f"unknown rounding {rounding!r}: choose double or single")
    single = rounding == "single"
    graph = as_model(model, copy=False)[0].graph
    steps = []
    for node in graph:
        if _folded_dq(node):
            continue
        if node.op_type == "Constant" and _domain(node) == "":
            tensor = ir.convenience.get_const_tensor(node.outputs[0])
            array = tensor.numpy()
            steps.append(Step(node, (), Kernel(lambda inputs, a=array: [a])))
            continue
        producer = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        if node.op_type == "QuantizeLinear" and producer is not None and _folded_dq(producer):
            kernel = requantize_kernel(Context(producer, single), Context(node, single))
            steps.append(Step(node, (producer.inputs[0],), kernel))
            continue
        compiler = OPS.get((_domain(node), node.op_type))
        if compiler is None and partial:
            continue
        if compiler is None:
            raise UnsupportedError(
                f"the integer reference does not support {node.domain or 'ai.onnx'}."
                f"{node.op_type} (node {node.name!r}); it runs the ops that edgeq's "
                "integer-only rewrite emits"
            )
        try:
            float_out = node.op_type == "QGemm" and len(node.inputs) < 8
            if node.op_type == "DequantizeLinear" or float_out:
                _check_float_end(node)
            steps.append(Step(node, tuple(node.inputs), compiler(Context(node, single))))
        except UnsupportedError:
            if not partial:
                raise
    return Program(graph, tuple(steps))


def run(
    model: Any, feeds: dict[str, np.ndarray], intermediates: bool = False, rounding: str = "single"
) -> dict[str, np.ndarray]:
    """Run an integer-only model bit-exactly in numpy; returns ``{output name: array}``
    (every named value with ``intermediates``)."""
    return compile_model(model, rounding).run(feeds, intermediates=intermediates)


def export_params(model: Any, rounding: str = "single", partial: bool = False) -> dict[str, Any]:
    """Per-layer fixed-point parameters (multipliers, shifts, zero points) for code generation.

    ``multiplier`` is an int32 in [2^30, 2^31) and ``shift`` a left shift (negative: right),
    so that ``real ~= multiplier * 2^(shift - 31)``; see ``edgeq.reference.fixedpoint``.
    ``partial`` lists the integer layers of a model that still has float islands.
    """
    program = compile_model(model, rounding, partial)
    layers = []
    for step in program.steps:
        if step.kernel.params is None:
            continue
        op = step.node.op_type
        if op == "QuantizeLinear":
            op = "Requantize"
        layers.append({"node": step.node.name, "op_type": op, **step.kernel.params})
    return {"rounding": rounding, "layers": layers}
