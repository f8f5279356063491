"""Weights stored in N bits through codebooks, rebuilt in the graph when the session loads.

    W -> Conv / MatMul / Gemm / Gather
    ==>  planes uint8 [N, n/8] -> Unsqueeze -> BitShift(0..7, RIGHT) -> Mod(2) -> Reshape [N, n8] -> Cast(int32)
           -> Mul(2^b) -> ReduceSum(axis 0) -> Slice(0, n) -> Cast(int64) -> Split (one part per weight)
         part -> Reshape [G, m];  codebook fp16 [G, 2^N] -> Cast(float) -> GatherElements(part, axis 1)
           -> Reshape(W) [-> Transpose] -> Conv / MatMul / Gemm / Gather

   The indices of every weight share one set of bit planes and one unpacking (a chain per weight
   cost more in nodes than a small weight saves), then a Split hands each weight its part.

1. Groups: runs of g output channels (a Conv's axis 0, a MatMul's or Gemm's N, a Gather table's
   rows), g the smallest divisor of the channel count giving at least ``MIN_GROUP`` x 2^N weights a
   group, so that a codebook (2^N fp16 entries) costs at most 1/4 bit a weight; one codebook each
   (``passes/codebooks.py``: k-means, uniform or power-of-two).
2. The chain's inputs are all constants: onnxruntime folds it back into W when the session loads
   (its constant folding), so the model runs the fp32 kernels at fp32 speed from a file holding N
   bits a weight plus the codebooks; any ONNX runtime can run the chain itself. Needs opset 13
   (Unsqueeze's and ReduceSum's axes as inputs); BitShift is opset 11, Mod 10, GatherElements 11.
3. Which weights: float32 constants of at least ``MIN_ELEMENTS`` read as a Conv's weight, a
   MatMul's or Gemm's 2-D B, or a Gather table (axis 0), in the main graph. A weight read by
   several nodes is stored once (every reader reads the chain's output); one read also as
   something else (an Add's operand, a graph output) stays float.
4. A MatMul's B [K, N] and a Gemm's B without transB are grouped along N: stored transposed,
   rebuilt, then transposed back (folded too).
5. ``layers``: per weight, the readers, scheme, bits, groups, the weight's SQNR against its float
   value, and the bytes stored (planes, codebooks) against fp32's, in bits per weight.
6. Per-layer schemes (``per_node``: a reader's name or op type, ``--precision Gather=kmeans:3``):
   weights of one scheme and width share one unpacking; each unpacking's node and initializer
   names start ``cb<k|u|p><bits>_`` (kmeans, uniform, pot), ``cb<k|u|p><bits>x<i>_`` where a model
   compressed before has them, then ``w<k>`` for the k-th weight: short, since on small models
   names are a fair part of the file. The rebuilt weight keeps its own name.
7. ``per_weight``: (scheme, bits) by weight name, ahead of ``per_node`` (a size search's choice,
   ``stages/size_target.py``); ``cache``: (name, scheme, bits) -> codes, shared with that search
   so that no weight is clustered twice at one width.
8. ``integer``: int8 weights too (``passes/integer_codebooks.py``: a quantized model's, read
   through their DequantizeLinear or by an integer MatMul), rebuilt as int8 from int8 codebooks
   (no Cast), chains named ``cbi<bits>_``, scheme "int" in ``layers``; ``only``: the weights
   stored, by name (the rest left as they are): auto's size target (``auto/size_fit.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, const_array
from edgeq.passes.codebooks import codebook, pack
from edgeq.passes.integer_codebooks import encode_integer, integer_compressible
from edgeq.passes.plan import node_label
from edgeq.passes.weight_rows import MIN_GROUP, channels_a_group, layout

__all__ = ["CodebookWeightsPass", "MIN_ELEMENTS", "MIN_GROUP", "compressible", "encode", "stored_bytes", "rebuilt"]

logger = logging.getLogger(__name__)

MIN_ELEMENTS = 256  # (3)
OPSET = 13  # (2)


def compressible(graph: ir.Graph, keep: frozenset[str] = frozenset()) -> dict[ir.Value, bool]:
    """(3) The weights this pass stores, each with whether it is stored transposed (4); none read
    by a node ``keep`` names (by name or op type)."""
    weights: dict[ir.Value, bool] = {}
    for node in graph:
        for value in node.inputs[:2]:
            if value is None or value in weights or not value.is_initializer():
                continue
            layouts = [layout(user, value) for user, _ in value.uses()]
            if (layouts and None not in layouts and len(set(layouts)) == 1 and not value.is_graph_output()
                    and not any(user.name in keep or user.op_type in keep for user, _ in value.uses())):
                array = const_array(value)
                if array is not None and array.dtype == np.float32 and array.ndim >= 2 and array.size >= MIN_ELEMENTS:
                    weights[value] = layouts[0]
    return weights


def encode(array: np.ndarray, transposed: bool, scheme: str, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1) (4) (rows: W as [channels, rest], codebook [G, 2^N], indices [G, m])."""
    rows = np.ascontiguousarray(array.T) if transposed else array.reshape(array.shape[0], -1)
    channels, per_channel = rows.shape[0], rows.size // rows.shape[0]
    group = channels_a_group(channels, per_channel, bits)
    book, indices = codebook(rows.reshape(channels // group, group * per_channel), bits, scheme)
    return rows, book, indices


def stored_bytes(book: np.ndarray, indices: np.ndarray, bits: int) -> float:
    """(5) What a weight costs in the file: its indices at ``bits`` bits and its codebooks."""
    return indices.size * bits / 8 + book.nbytes


def rebuilt(rows: np.ndarray, book: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The float weight the graph rebuilds, as ``rows`` (transposed back by the caller)."""
    return np.take_along_axis(book.astype(np.float32), indices.astype(np.int64), axis=1).reshape(rows.shape)


class CodebookWeightsPass(ir.passes.InPlacePass):
    """``scheme``: kmeans, uniform or pot; ``bits``: 1 to 8; ``per_node``: (scheme, bits) by reader
    name or op type, for some weights (6). After ``call``: ``layers`` (5)."""

    def __init__(self, scheme: str, bits: int, keep: frozenset[str] = frozenset(),
                 per_node: Mapping[str, tuple[str, int]] | None = None,
                 per_weight: Mapping[str, tuple[str, int]] | None = None, cache: dict | None = None,
                 integer: bool = False, only: frozenset[str] | None = None) -> None:
        super().__init__()
        self.scheme, self.bits, self.keep = scheme, bits, keep
        self.per_node = dict(per_node or {})
        self.per_weight = dict(per_weight or {})
        self.cache = cache
        self.integer = integer  # (8) int8 weights too, through integer codebooks
        self.only = only  # (8) these weights (by name) and no others
        self.layers: list[dict[str, Any]] = []

    def _spec(self, value: ir.Value) -> tuple[str, int]:
        """(6) (7) The weight's own, else the reader's (by name, then op type), the most bits where
        readers differ."""
        if value.name in self.per_weight:
            return self.per_weight[value.name]
        specs = [self.per_node.get(node.name or "", self.per_node.get(node.op_type)) for node, _ in value.uses()]
        specs = [spec for spec in specs if spec is not None]
        return max(specs, key=lambda spec: spec[1]) if specs else (self.scheme, self.bits)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        weights = {**compressible(graph, self.keep), **(integer_compressible(graph, self.keep) if self.integer else {})}
        if self.only is not None:
            weights = {v: t for v, t in weights.items() if v.name in self.only}
        chains: dict[tuple[str, int, bool], list] = {}
        for value, transposed in weights.items():
            scheme, bits = self._spec(value)
            integer = value.dtype == ir.DataType.INT8
            chains.setdefault((scheme, bits, integer), []).append(
                (value, transposed, *self._codes(value, transposed, scheme, bits, integer)))
        taken = {node.name for node in graph}
        for (scheme, bits, integer), items in chains.items():
            letter = "i" if integer else scheme[0]
            prefix, i = f"cb{letter}{bits}", 0
            while any(name.startswith(prefix + "_") for name in taken if name):  # (6) a model compressed before
                i += 1
                prefix = f"cb{letter}{bits}x{i}"
            self._store(graph, items, "int" if integer else scheme, bits, prefix)
        logger.info("codebook weights: %d tensors to %s", len(self.layers),
                    ", ".join(f"{len(items)} {'int' if i else s} {b}-bit" for (s, b, i), items in chains.items()) or "none")
        return ir.passes.PassResult(model, modified=bool(self.layers))

    def _codes(self, value: ir.Value, transposed: bool, scheme: str, bits: int, integer: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(1) (4) (rows, codebook, indices), from ``cache`` where a search computed them (7)."""
        key = (value.name, "int" if integer else scheme, bits)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        codes = (encode_integer(const_array(value), transposed, bits) if integer
                 else encode(np.asarray(const_array(value), np.float32), transposed, scheme, bits))
        if self.cache is not None:
            self.cache[key] = codes
        return codes

    def _store(self, graph: ir.Graph, items: list[tuple[ir.Value, bool, np.ndarray, np.ndarray, np.ndarray]],
               scheme: str, bits: int, prefix: str) -> None:
        """(2) One unpacking of every weight's indices (one set of bit planes), split per weight,
        each looked up in its codebooks and shaped back, before the first reader of any."""
        nodes: list[ir.Node] = []

        def add(op: str, inputs: list, name: str, attributes: dict | None = None, outputs: int = 1) -> Any:
            nodes.append(ir.node(op, inputs, attributes or {}, name=f"{prefix}_{name}", num_outputs=outputs))
            return nodes[-1].outputs[0] if outputs == 1 else list(nodes[-1].outputs)

        def const(name: str, data: np.ndarray) -> ir.Value:
            return add_initializer(graph, f"{prefix}_{name}", data)

        counts = [indices.size for *_, indices in items]
        planes = pack(np.concatenate([indices.ravel() for *_, indices in items]), bits)
        stacked = add("Unsqueeze", [const("planes", planes), const("axis2", np.array([2], np.int64))], "unsqueeze")
        bit = add("Mod", [add("BitShift", [stacked, const("shifts", np.arange(8, dtype=np.uint8))], "shift",
                              {"direction": "RIGHT"}), const("two", np.array(2, np.uint8))], "bit")
        flat = add("Reshape", [bit, const("planes_shape", np.array([bits, -1], np.int64))], "flat")
        weighted = add("Mul", [add("Cast", [flat], "int", {"to": ir.DataType.INT32}),
                               const("powers", (1 << np.arange(bits, dtype=np.int32))[:, None])], "weighted")
        summed = add("ReduceSum", [weighted, const("axis0", np.array([0], np.int64))], "sum", {"keepdims": 0})
        index = add("Cast", [add("Slice", [summed, const("start", np.array([0], np.int64)),
                                           const("count", np.array([sum(counts)], np.int64))], "slice")],
                    "index", {"to": ir.DataType.INT64})
        parts = add("Split", [index, const("counts", np.array(counts, np.int64))], "split", {"axis": 0},
                    outputs=len(items)) if len(items) > 1 else [index]
        position = {id(node): i for i, node in enumerate(graph)}
        first = graph[min(position[id(node)] for value, *_ in items for node, _ in value.uses())]
        for k, ((value, transposed, rows, book, indices), part) in enumerate(zip(items, parts)):
            name = value.name or "weight"
            short = f"w{k}"  # (6) the chain's own names: short, the rebuilt weight keeps ``name``
            shape = tuple(const_array(value).shape)
            grouped = add("Reshape", [part, const(f"{short}g", np.array(indices.shape, np.int64))], f"{short}g")
            dtype = ir.DataType.INT8 if book.dtype == np.int8 else ir.DataType.FLOAT  # (8): int8 entries as they are
            entries = (const(f"{short}c", book) if dtype == ir.DataType.INT8
                       else add("Cast", [const(f"{short}c", book)], f"{short}e", {"to": ir.DataType.FLOAT}))
            out = add("Reshape", [add("GatherElements", [entries, grouped], f"{short}x", {"axis": 1}),
                                  const(f"{short}s", np.array(shape if not transposed else rows.shape, np.int64))],
                      f"{short}w")
            if transposed:
                out = add("Transpose", [out], f"{short}t", {"perm": [1, 0]})
            out.dtype, out.shape = dtype, ir.Shape(shape)
            users = [node_label(node) for node, _ in value.uses()]
            ops = sorted({node.op_type for node, _ in value.uses()})
            value.replace_all_uses_with(out)
            graph.initializers.pop(value.name)
            out.name = name
            error = float(np.square(rows.astype(np.float64) - rebuilt(rows, book, indices)).sum())
            power = float(np.square(rows.astype(np.float64)).sum())
            stored = stored_bytes(book, indices, bits)
            self.layers.append({
                "node": ", ".join(users), "op": "/".join(ops), "role": "compress",
                "weight": name, "nodes": users, "scheme": scheme, "bits": bits,
                "groups": int(indices.shape[0]), "shape": list(shape),
                "sqnr_db": round(10 * np.log10(power / error), 2) if error > 0 and power > 0 else None,
                "bytes": int(np.ceil(stored)), "fp32_bytes": 4 * rows.size,
                "bits_per_weight": round(8 * stored / rows.size, 3)})
        graph.insert_before(first, nodes)
