"""Weights left float are stored as float16 and computed in float32: a smaller file, the same kernels.

    W fp32 -> MatMul          ==>  W fp16 -> Cast(to=FLOAT) -> MatMul

A layer auto keeps in fp32 (for fidelity or because int8 is no faster there) still ships its
weights at 4 bytes each: on MiniLM one fp32 FFN MatMul is 2.36 MB of a 24 MB int8 file, and a
depthwise network's float convolutions hold most of its bytes. Stored at 2 bytes and cast back
when the session loads, they cost nothing at run time: onnxruntime folds a Cast of an
initializer into an fp32 initializer before its other graph optimizations (constant folding,
basic level), so the fused and prepacked kernels are those of the fp32 weight (MiniLM auto,
1 thread: 5.93 ms vs 5.91 ms; bench/realworld.py measures every model).

1. Which: a float32 initializer of the main graph or a body, of at least ``MIN_ELEMENTS``, that
   every reader reads as a weight: Conv/ConvTranspose input 1, MatMul/Gemm inputs 0-1, Gather
   input 0 (a float embedding table), LSTM/GRU/RNN inputs 1-2. Biases, normalization
   parameters, quantization scales and zero points, column sums and anything else stay float32:
   small, and some of them (a per-token MatMul's column sums, passes/per_token.py (8)) enter
   sums whose terms nearly cancel. A model with nothing quantized is left as it is: a float
   answer is the float model, exactly.
2. Exact enough: every value finite within float16's range (|w| <= 65504) and the rounding error
   at least ``MIN_DB`` below the weight's power (float16 rounds to 11 significant bits, about 71
   dB on normal values; a tensor of subnormal magnitudes loses more and stays float32). The
   output moves by far less than the int8 layers' error: MiniLM's two fp32 MatMul weights in
   fp16, the fp32 model alone, 80.6 dB against itself.
3. One Cast per initializer, in the graph that owns it, before its first reader; the fp32 name
   moves to the Cast's output, so readers and the report see the same name. A weight that a
   body reads from the graph around it stays float32 (its readers are not in the owner's graph).
4. ``QuantConfig.float_weights = "fp32"`` (``--float-weights fp32``) keeps them float32, for a
   runtime that disables graph optimizations (the Cast would then run on each call). The
   integer-only format (``--format qoperator``) keeps them too: its targets and edgeq's integer
   reference run no Cast.
5. Auto builds dozens of variants from one float model: a read-only weight is converted (and
   checked) once for all of them (``passes.weights.shared_result``), as its int8 form is.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, graphs_of
from edgeq.passes.plan import QuantPlan, Role
from edgeq.passes.weights import shared_result

__all__ = ["Float16WeightsPass", "store_float16", "MIN_ELEMENTS", "MIN_DB"]

logger = logging.getLogger(__name__)

MIN_ELEMENTS = 1024  # (1) smaller tensors save under 2 KB each, a Cast node's worth of clutter
MIN_DB = 60.0  # (2) rounding error power at least this far below the weight's
FP16_MAX = float(np.finfo(np.float16).max)
WEIGHT_INPUTS = {  # (1) op type -> the input positions that hold weights
    "Conv": (1,), "ConvTranspose": (1,), "MatMul": (0, 1), "Gemm": (0, 1), "Gather": (0,),
    "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2),
}


class Float16WeightsPass(ir.passes.InPlacePass):
    """Notes ``(count, bytes saved)`` in the plan for the report."""

    def __init__(self, plan: QuantPlan) -> None:
        super().__init__()
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not self.plan.weights and all(d.role == Role.FLOAT for d in self.plan.decisions.values()):
            return ir.passes.PassResult(model, modified=False)  # (1) nothing quantized: the float model as it is
        count, saved = store_float16(model)
        if count:
            self.plan.notes.append(f"{count} weight tensor(s) left float stored as fp16 ({saved / 1e6:.2f} MB "
                                   "saved), computed in fp32 (--float-weights fp32 keeps them fp32)")
            logger.info("float weights: %d stored as fp16 (%.2f MB saved), computed in fp32", count, saved / 1e6)
        return ir.passes.PassResult(model, modified=count > 0)


def store_float16(model: ir.Model) -> tuple[int, int]:
    """(1)-(3) on every graph of ``model``: the weights left float stored as float16 where it holds
    them exactly enough; (tensors, bytes saved). Also used by ``edgeq.qat.export``."""
    count = saved = 0
    for graph in graphs_of(model):
        for value in list(graph.initializers.values()):
            half = _half(graph, value)
            if half is not None:
                _store(graph, value, half)
                count, saved = count + 1, saved + half.nbytes
    return count, saved


def float16_forms(model: ir.Model) -> dict[str, np.ndarray]:
    """What ``store_float16`` would store, by initializer name (nothing changed): the values a
    check against the float32 original must use (``edgeq.qat.export``)."""
    forms = {}
    for graph in graphs_of(model):
        for name, value in graph.initializers.items():
            half = _half(graph, value)
            if half is not None:
                forms[name] = half
    return forms


def _half(graph: ir.Graph, value: ir.Value) -> np.ndarray | None:
    """(1) (2) The float16 form of ``value`` if it is a weight that float16 holds exactly enough."""
    tensor = value.const_value
    if (tensor is None or tensor.dtype != ir.DataType.FLOAT or value.is_graph_input() or value.is_graph_output()
            or not value.uses() or np.prod(tensor.shape.numpy(), dtype=np.int64) < MIN_ELEMENTS):
        return None
    if not all(node.graph is graph and node.domain in ("", "ai.onnx")
               and index in WEIGHT_INPUTS.get(node.op_type, ())
               for node, index in value.uses()):
        return None
    return shared_result(tensor.numpy(), "fp16", _convert)


def _convert(array: np.ndarray) -> np.ndarray | None:
    """(2) ``array`` in float16, or None where float16 does not hold it exactly enough."""
    if not np.isfinite(array).all() or float(np.abs(array).max()) > FP16_MAX:
        return None
    half = array.astype(np.float16)
    power = float(np.square(array, dtype=np.float64).sum())
    error = float(np.square(array.astype(np.float64) - half.astype(np.float64)).sum())
    if power == 0.0 or (error > 0.0 and 10.0 * np.log10(power / error) < MIN_DB):
        return None
    half.flags.writeable = False  # (5) one copy, read by every variant that keeps this weight float
    return half


def _store(graph: ir.Graph, value: ir.Value, half: np.ndarray) -> None:
    """(3) ``value`` becomes the output of Cast(fp16 initializer), placed before its first reader."""
    name = value.name
    stored = add_initializer(graph, f"{name}_fp16", half)
    readers = {id(node) for node, _ in value.uses()}
    first = next(node for node in graph if id(node) in readers)
    cast = ir.node("Cast", [stored], {"to": ir.DataType.FLOAT}, name=f"{name}_to_fp32")
    graph.insert_before(first, cast)
    output = cast.outputs[0]
    output.dtype, output.shape = ir.DataType.FLOAT, ir.Shape(half.shape)
    value.replace_all_uses_with(output)
    graph.initializers.pop(name)  # not renamed: its tensor may be the caller's (a proto read lazily)
    output.name = name
