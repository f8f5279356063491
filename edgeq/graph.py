"""Graph helpers shared by prepare and the passes, and the one runner for both.

    const_array(v)        initializer or Constant node -> ndarray   (select, quantize passes)
    initializer_tensor(v) constant initializer only    -> tensor    (prepare, in-place rewrites)
    add_initializer(g, name, array)   remove_unused_initializers(g, values)   copy_model(m)
    freeze_constants(m): read-only arrays, which copy_model then shares instead of copying
    InspectPass: a pass that only reads the model.   run_passes(model, passes) -> model

What counts as a constant (the two lookups differ on purpose, and agree on the rest):

1. A graph input is never a constant, initializer or not: a caller may feed it (old exporters
   list weights as inputs; prepare's InitializersNotInputsPass turns those into constants).
2. ``const_array`` also reads a ``Constant`` node's value: passes that only read a constant
   (selection, weight quantization) accept either form.
3. ``initializer_tensor`` / ``initializer_array`` count initializers only: prepare's passes, which
   run before Constant nodes are lifted and fold them apart, and passes that rewrite the
   constant in place (``replace_constant``), which can only rewrite an initializer. The tensor
   form lets a caller check ``nbytes`` before reading large external data.

Imports only onnx_ir, numpy and edgeq.errors: any layer may use it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, final

import numpy as np
import onnx_ir as ir

from edgeq.errors import EdgeqError

__all__ = [
    "graphs_of",
    "MS_DOMAIN",
    "ONNX_DOMAINS",
    "onnx_opset",
    "const_array",
    "initializer_tensor",
    "initializer_array",
    "add_initializer",
    "split_node",
    "remove_unused_initializers",
    "copy_model",
    "all_nodes",
    "freeze_constants",
    "InspectPass",
    "run_passes",
]

MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib ops (QLinearAdd, QGemm, int16 Q/DQ below opset 21)
ONNX_DOMAINS = frozenset({"", "ai.onnx"})  # the default domain, under both of its names


def onnx_opset(model: ir.Model, default: int = 1) -> int:
    """The model's default-domain opset (imported as "" or "ai.onnx"), else ``default``."""
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", default))


# -- constants (see the module docstring for what counts) ------------------------------------


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value``: an initializer's data or a Constant node's value (cases 1, 2)."""
    if value is None or value.is_graph_input():
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:  # a malformed Constant node (not one attribute): not a constant we can read
        return None
    return None if tensor is None else tensor.numpy()


def initializer_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The tensor of a constant initializer (not a graph input), else None (cases 1, 3)."""
    if value is None or not value.is_initializer() or value.is_graph_input():
        return None
    return value.const_value


def initializer_array(value: ir.Value | None) -> np.ndarray | None:
    """``initializer_tensor(value)`` read as an array."""
    tensor = initializer_tensor(value)
    return None if tensor is None else tensor.numpy()


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """A new initializer holding ``array``, named ``name`` or ``name_1``, ``name_2`` ... when taken."""
    base, i = name, 0
    while name in graph.initializers:
        i += 1
        name = f"{base}_{i}"
    array = np.asarray(array)
    # ir.Tensor, not ir.tensor: the latter's isinstance against a runtime-checkable protocol costs
    # 30 us a call, and auto's variants add over 200,000 of these (scales, zero points)
    value = ir.Value(name=name, const_value=ir.Tensor(array, name=name))
    value.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
    value.shape = ir.Shape(array.shape)
    graph.register_initializer(value)
    return value


def split_node(x: ir.Value, sizes: Sequence[int], axis: int, opset: int, name: str,
               sizes_input: Callable[[np.ndarray], ir.Value]) -> ir.Node:
    """A Split of ``x`` along ``axis`` into pieces of ``sizes``: from opset 13 the sizes are an
    int64 input (``sizes_input`` makes it from the array), before it the ``split`` attribute."""
    if opset >= 13:
        return ir.node("Split", [x, sizes_input(np.array(sizes, np.int64))], {"axis": axis},
                       num_outputs=len(sizes), name=name)
    return ir.node("Split", [x], {"axis": axis, "split": [int(s) for s in sizes]}, num_outputs=len(sizes), name=name)


def remove_unused_initializers(graph: ir.Graph, values: Iterable[ir.Value | None]) -> None:
    """Delete those of ``values`` that are initializers no node reads any more, from the graph that
    holds them (``graph``, or the outer graph whose initializer a subgraph's node read)."""
    for value in values:
        if value is None or value.uses() or value.is_graph_output():
            continue
        owner = value.graph if value.is_initializer() and value.graph is not None else graph
        if value.name in owner.initializers:
            del owner.initializers[value.name]


def all_nodes(graph: ir.Graph) -> Iterator[ir.Node]:
    """Every node of ``graph`` and of its If/Loop/Scan bodies, at any depth (a body's nodes after
    the node holding it)."""
    return iter(ir.traversal.RecursiveGraphIterator(graph))


_BODIES = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


def graphs_of(model: ir.Model) -> list[ir.Graph]:
    """``model.graphs()``: the main graph, then every If/Loop/Scan body. Where no node of the main
    graph holds a body (most models), the main graph alone, without onnx_ir's walk over every node
    and attribute (2 ms on MiniLM, asked about 900 times in one auto run)."""
    if not any(a.type in _BODIES for node in model.graph for a in node.attributes.values()):
        return [model.graph]
    return list(model.graphs())


def copy_model(model: ir.Model) -> ir.Model:
    """An independent copy of ``model``, made through its protobuf (``Model.clone`` shares tensors).

    Tensors in external data are the exception: the protobuf holds only their file's name, so
    the copy shares the original's (immutable, memory-mapped) ``ExternalTensor`` instead, which
    also knows the file's folder. Weights on disk are neither read nor copied.

    A model whose constants were frozen (``freeze_constants``) is cloned instead: new nodes and
    values sharing its read-only tensors, which no pass can change (a write raises). Auto builds
    dozens of variants of one float model: MiniLM's 90 MB were serialized, parsed and converted
    to numpy again for every one."""
    if _frozen(model):
        return _clone(model)
    copy = ir.from_proto(ir.to_proto(model))
    for graph, copied in zip(graphs_of(model), graphs_of(copy)):
        for name, value in graph.initializers.items():
            if isinstance(value.const_value, ir.ExternalTensor) and name in copied.initializers:
                copied.initializers[name].const_value = value.const_value
    return copy


def _clone(model: ir.Model) -> ir.Model:
    """``model.clone()`` with a type object of its own for every value: the clone shares them, and
    ``value.dtype = ...`` changes the type object in place (an int8 Gather output in a variant made
    the float model's int8 too)."""
    import copy as copying

    clone = model.clone()
    for graph in graphs_of(clone):
        for value in (*graph.inputs, *graph.initializers.values(), *(v for node in graph for v in node.outputs)):
            if value.type is not None:
                value.type = copying.deepcopy(value.type)
    return clone


def _read_only(tensor: object) -> bool:
    if isinstance(tensor, ir.ExternalTensor):
        return True
    raw = getattr(tensor, "raw", None) if isinstance(tensor, ir.Tensor) else None
    return isinstance(raw, np.ndarray) and not raw.flags.writeable


def _frozen(model: ir.Model) -> bool:
    return all(_read_only(v.const_value) for graph in graphs_of(model) for v in graph.initializers.values()
               if v.const_value is not None)


def freeze_constants(model: ir.Model) -> None:
    """Make every in-memory initializer of ``model`` (bodies included) an ``ir.Tensor`` over a
    read-only numpy array, in place (external data stays on disk): ``copy_model`` then shares
    them, and ``const_array`` returns the same array object every time, which caches can key on
    (``passes.weights.reuse_quantized_weights``)."""
    for graph in graphs_of(model):
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is None or _read_only(tensor) or tensor.dtype == ir.DataType.STRING:
                continue  # (a string tensor stays as it is: copy_model then copies through protobuf)
            array = tensor.numpy()
            array = array.copy() if isinstance(tensor, ir.Tensor) and tensor.raw is array else array
            array.flags.writeable = False
            value.const_value = ir.Tensor(array, dtype=tensor.dtype, name=tensor.name, doc_string=tensor.doc_string)


# -- passes ----------------------------------------------------------------------------------


class InspectPass(ir.passes.PassBase):
    """A pass that reads the model and changes nothing: onnx_ir's side-effect-only kind
    (``in_place`` and not ``changes_input``).

    Subclasses implement ``inspect(model)`` and keep what they find on themselves (or in a plan
    they were given); they may not override ``call``, which always reports ``modified=False`` and
    raises ``PostconditionError`` when the graph's nodes, initializers, inputs or outputs changed.
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "call" in cls.__dict__:
            raise TypeError(f"{cls.__name__} is an InspectPass: implement inspect(model), not call(model)")

    @property
    @final
    def in_place(self) -> Literal[True]:
        return True

    @property
    @final
    def changes_input(self) -> Literal[False]:
        return False

    @abc.abstractmethod
    def inspect(self, model: ir.Model) -> None:
        """Read ``model``; record the findings on ``self`` (or in a plan)."""

    @final
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _structure(model.graph)
        self.inspect(model)
        if _structure(model.graph) != before:
            raise ir.passes.PostconditionError(
                f"{type(self).__name__} is an inspect pass but changed the graph's nodes, initializers, "
                "inputs or outputs: make it a transform pass (ir.passes.InPlacePass) instead"
            )
        return ir.passes.PassResult(model, modified=False)


def _structure(graph: ir.Graph) -> tuple:
    """What an inspect pass must leave as it was (initializers as a set: onnx_ir's C-API helper,
    which shape inference uses, puts them back in another order)."""
    return (
        tuple(map(id, graph)),
        frozenset(map(id, graph.initializers.values())),
        tuple(map(id, graph.inputs)),
        tuple(map(id, graph.outputs)),
    )


def run_passes(model: ir.Model, passes: Sequence[ir.passes.PassBase]) -> ir.Model:
    """Run ``passes`` in order (onnx_ir's PassManager); return the resulting model.

    An EdgeqError a pass raises (a user mistake, an unsupported operator) comes out as itself,
    not wrapped in onnx_ir's PassError.
    """
    try:
        return ir.passes.PassManager(passes)(model).model
    except ir.passes.PassError as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, EdgeqError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
