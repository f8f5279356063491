"""``InMemoryModel``: a model handed to onnxruntime from memory, its weights by reference.

    model ==> graph bytes (large initializers marked external, no data)
              + {initializer name: array}  --SessionOptions.add_external_initializers-->  session

onnxruntime resolves external data of a model given as bytes against the *working directory*,
so serializing a model that was loaded with external data fails anywhere but in the model's
folder; and serializing the weights into the protobuf copies them (and stops at 2 GB). An
``InMemoryModel`` keeps only the graph in the protobuf; the weights (numpy views of the
model's tensors: memory-mapped for external data) go to the session as ``OrtValue`` s, uncopied.
Every session edgeq builds from a model in memory goes through ``inference_session``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["InMemoryModel", "in_memory", "inference_session", "WEIGHT_THRESHOLD"]

# Initializers from this size on go by reference (onnx's own external-data threshold).
WEIGHT_THRESHOLD = 1024
_LOCATION = "edgeq-in-memory"  # never read: every tensor that names it is handed over explicitly
# numpy dtypes that OrtValue takes as they are (int4, bfloat16, float8, strings stay in the graph)
_BY_REFERENCE = frozenset("bool int8 uint8 int16 uint16 int32 uint32 int64 uint64 float16 float32 float64".split())


@dataclasses.dataclass(frozen=True, eq=False)
class InMemoryModel:
    """The graph serialized without its large main-graph initializers, and those as arrays."""

    graph: bytes
    weights: Mapping[str, np.ndarray]
    # the file it was read from, unchanged: sessions load that instead, for onnxruntime maps a
    # file's external data but copies the arrays it is handed (a 0.75 GiB model: 0.81 GiB resident
    # after a session from the path, 1.6 GiB from the arrays)
    path: str | None = None

    @property
    def nbytes(self) -> int:
        return len(self.graph) + sum(a.nbytes for a in self.weights.values())

    def proto(self) -> Any:
        """The graph as an ``onnx.ModelProto`` (weights left out: for names, shapes, outputs)."""
        import onnx

        proto = onnx.ModelProto()
        proto.ParseFromString(self.graph)
        return proto

    def with_graph(self, proto: Any) -> InMemoryModel:
        """The same weights under an edited graph (``proto()`` with outputs added, say)."""
        return InMemoryModel(proto.SerializeToString(), self.weights)  # not the file's graph: no path


@contextlib.contextmanager
def _swapped(swaps: list[tuple[Any, Any]]) -> Iterator[None]:
    """Give each value of ``swaps`` (value, tensor) its tensor for the block, then its own back."""
    saved = [(value, value.const_value) for value, _ in swaps]
    try:
        for value, tensor in swaps:
            value.const_value = tensor
        yield
    finally:
        for value, tensor in saved:
            value.const_value = tensor


def in_memory(model: Any, threshold: int = WEIGHT_THRESHOLD, *, path: str | None = None) -> InMemoryModel:
    """``model`` (an ``onnx_ir.Model``) for ``inference_session``: unchanged, its weights not copied.

    1. A main-graph initializer of ``threshold`` bytes or more, of a dtype OrtValue takes, goes
       by reference: a data-less external stub in the graph, its array in ``weights``.
    2. Any other tensor on disk (a subgraph's, bfloat16 ...) is read into the graph bytes, so
       that no path is left for onnxruntime to resolve against the working directory.
    3. ``path``: the file ``model`` was read from, unchanged; sessions load it instead (above).
    """
    import onnx_ir as ir

    from edgeq.graph import graphs_of

    weights: dict[str, np.ndarray] = {}
    swaps: list[tuple[Any, Any]] = []
    for graph in graphs_of(model):
        for name, value in graph.initializers.items():
            tensor = value.const_value
            if tensor is None or isinstance(tensor, ir.StringTensor):
                continue
            if graph is model.graph and tensor.nbytes >= threshold:
                array = tensor.numpy()
                if array.dtype.name in _BY_REFERENCE and array.dtype.name == tensor.dtype.numpy().name:
                    weights[name] = np.ascontiguousarray(array)  # case 1
                    stub = ir.ExternalTensor(_LOCATION, 0, tensor.nbytes, tensor.dtype, shape=tensor.shape, name=name)
                    swaps.append((value, stub))
                    continue
            if isinstance(tensor, ir.ExternalTensor):  # case 2
                swaps.append((value, ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=name)))
    with _swapped(swaps):
        graph_bytes = ir.to_proto(model).SerializeToString()
    return InMemoryModel(graph_bytes, weights, path)


def inference_session(model: str | os.PathLike | bytes | InMemoryModel, options: Any, providers: Any,
                provider_options: Any = None) -> Any:
    """``onnxruntime.InferenceSession`` of a path, bytes or ``InMemoryModel`` (its weights
    handed over as OrtValues, kept alive with the session)."""
    import onnxruntime as ort

    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    values: list[Any] = []
    if isinstance(model, InMemoryModel) and model.path is not None and os.path.isfile(model.path):
        model = model.path
    if isinstance(model, InMemoryModel):
        names = list(model.weights)
        values = [ort.OrtValue.ortvalue_from_numpy(model.weights[n]) for n in names]
        if names:
            options.add_external_initializers(names, values)
        model = model.graph
    session = ort.InferenceSession(model, sess_options=options, providers=providers,
                                   provider_options=provider_options)
    session._edgeq_weights = values  # the OrtValues share the arrays' memory: keep them alive
    return session
