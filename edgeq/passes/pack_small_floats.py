"""Compress mode: the small float tensors (biases, scales of normalizations) in one float16 block.

    b1 fp32 [48], b2 fp32 [48], a fp32 [1, 48, 1] ...
      ==>  block fp16 [n] -> Cast(to=FLOAT) -> Split(sizes) -> b1, b2, Reshape([1, 48, 1]) -> a ...

1. Why: ``passes/float_weights.py`` stores a float tensor of 1024+ elements as float16 behind a
   Cast of its own; a smaller one would save less than its Cast node costs, so biases stay
   float32. In a small model they are a share of the file worth having: the zoo's kws, 13.9 K
   weights, carries 2.5 KB of them beside 7 KB of 4-bit codebook weights. Packed into one block
   they cost one Cast and one Split, and each tensor a name and a size (and a Reshape, where it
   is not 1-D). onnxruntime folds all of it when the session loads, as it folds the codebooks.
2. Which: float32 initializers of the main graph that are not graph inputs or outputs, all of
   whose readers are in the main graph, and that float16 holds element by element within
   ``REL_ERROR`` of each value (so no value is flushed to zero or rounded off: an epsilon of 1e-12
   stays float32), and for which the bytes saved exceed what packing costs (``_worth``).
3. Readers and the report see the same names: each piece takes its initializer's name.
4. Nothing is done unless the whole saves at least ``MIN_SAVED`` bytes.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from edgeq.graph import add_initializer, split_node

__all__ = ["PackSmallFloatsPass", "REL_ERROR", "MIN_SAVED"]

logger = logging.getLogger(__name__)

REL_ERROR = 2.0 ** -10  # (2) float16 rounds normal values within 2^-11 of themselves
MIN_SAVED = 256  # (4) bytes
_PIECE = 16  # bytes a piece costs in the Split: an output name and a size
_RESHAPE = 64  # bytes a Reshape node and its shape cost


def _half(value: ir.Value, graph: ir.Graph) -> np.ndarray | None:
    """(2) The float16 form of ``value``, or None."""
    tensor = value.const_value
    if (tensor is None or tensor.dtype != ir.DataType.FLOAT or value.is_graph_input() or value.is_graph_output()
            or not value.uses() or any(node.graph is not graph for node, _ in value.uses())):
        return None
    array = tensor.numpy()
    if array.size == 0 or not np.isfinite(array).all():
        return None
    with np.errstate(over="ignore"):  # a value past float16's range becomes inf: refused just below
        half = array.astype(np.float16)
    if not np.all(np.abs(half.astype(np.float64) - array) <= REL_ERROR * np.abs(array.astype(np.float64))):
        return None
    return half


def _worth(half: np.ndarray) -> bool:
    return 2 * half.size > _PIECE + (_RESHAPE if half.ndim != 1 else 0)


class PackSmallFloatsPass(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.count = self.saved = 0  # tensors packed, bytes saved (the data's halving less the pieces' cost): the report

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        pieces = [(v, h) for v in list(graph.initializers.values())
                  if (h := _half(v, graph)) is not None and _worth(h)]
        saved = sum(2 * h.size - _PIECE - (_RESHAPE if h.ndim != 1 else 0) for _, h in pieces)
        if not pieces or saved < MIN_SAVED or len(graph) == 0:
            return ir.passes.PassResult(model, modified=False)
        first = next(iter(graph))
        block = add_initializer(graph, "small_floats_fp16", np.concatenate([h.reshape(-1) for _, h in pieces]))
        cast = ir.node("Cast", [block], {"to": ir.DataType.FLOAT}, name="small_floats_to_fp32")
        split = split_node(cast.outputs[0], [h.size for _, h in pieces], 0, model.opset_imports.get("", 1),
                           "small_floats_split", lambda sizes: add_initializer(graph, "small_floats_sizes", sizes))
        nodes = [cast, split]
        for (value, half), piece in zip(pieces, split.outputs):
            out = piece
            if half.ndim != 1:
                shape = add_initializer(graph, f"{value.name}_shape", np.array(half.shape, np.int64))
                nodes.append(ir.node("Reshape", [piece, shape], name=f"{value.name}_reshape"))
                out = nodes[-1].outputs[0]
            out.dtype, out.shape = ir.DataType.FLOAT, ir.Shape(half.shape)
            name = value.name
            value.replace_all_uses_with(out)
            graph.initializers.pop(name)
            out.name = name  # (3)
        graph.insert_before(first, nodes)
        self.count, self.saved = len(pieces), int(saved)
        logger.info("pack_small_floats: %d float tensor(s) in one float16 block (about %d bytes saved)", len(pieces), saved)
        return ir.passes.PassResult(model, modified=True)
