"""Which int8 weights ``CodebookWeightsPass(integer=True)`` stores in N bits, and their codebooks.

    W_q int8 -> DequantizeLinear -> Conv / MatMul / Gemm      (static int8, QDQ)
    W_q int8 -> MatMulIntegerToFloat / DynamicQuantizeMatMul / MatMulInteger   (B: dynamic, per token)
    W_q int8 -> Gather                                         (an int8 embedding table)
    ==>  packed indices -> GatherElements(int8 codebook [G, 2^N]) -> Reshape(W_q) [-> Transpose] -> the same readers

The rebuilt tensor is int8, a constant: onnxruntime folds the chain when the session loads, then
fuses the DequantizeLinear and its Conv into an int8 kernel (QDQ fusion runs after constant
folding, and constant folding leaves DequantizeLinear alone), so the layer runs at int8's speed
from a file holding N bits a weight (as ``int4_storage.py``'s Cast). Measured in
``bench/compression.py`` (auto with ``--max-size``).

1. Which: an int8 initializer of at least ``codebook_weights.MIN_ELEMENTS`` elements, 2-D or
   more, every reader one of the above (a DequantizeLinear whose readers all read its output as
   a weight, ``weight_rows.layout``). A per-channel DequantizeLinear's axis must be the
   channel axis the codebooks group along (a Conv's 0, a MatMul's or Gemm's N); a blocked one
   (``block_size``) is left as it is.
2. Codebooks: k-means over the integers of a group of output channels (a per-channel scale
   makes each channel's integers span about [-127, 127]: channels of one group share levels
   well), the centres rounded to integers in [-128, 127], then each weight given the nearest
   entry. 8 bits keep every value (at most 256 distinct integers: exact).
3. On the group's histogram: an int8 weight takes one of 256 values, so Lloyd's rounds (as
   ``codebooks._kmeans``: started at the quantiles and at the uniform grid, ``ITERATIONS``
   rounds, the run with the smaller error after rounding kept) work on 256 counts a group, and
   each weight's entry is looked up in a 256-entry table: MiniLM's 11.7 M-entry embedding table
   at six widths in seconds, where sorting its values took a minute.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.graph import const_array
from edgeq.passes.plan import attr_value
from edgeq.passes.weight_rows import channels_a_group, layout

__all__ = ["integer_compressible", "encode_integer", "DYNAMIC_READERS"]

DYNAMIC_READERS = ("MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulInteger")  # B is input 1, [K, N]


def _readerlayout(node: ir.Node, value: ir.Value) -> bool | None:
    """(1) None where ``node`` does not read the int8 ``value`` as a weight, else whether it is
    stored transposed (grouped along a MatMul's N)."""
    if node.op_type in DYNAMIC_READERS and len(node.inputs) > 1 and node.inputs[1] is value and node.inputs[0] is not value:
        return True
    if node.op_type == "Gather" and node.domain in ("", "ai.onnx"):
        return layout(node, value)
    if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx") or node.inputs[0] is not value:
        return None
    if attr_value(node, "block_size", 0):
        return None
    out = node.outputs[0]
    layouts = {layout(user, out) for user, _ in out.uses()}
    if len(layouts) != 1 or None in layouts or out.is_graph_output():
        return None
    transposed = layouts.pop()
    scale = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None:
        return None
    if scale.size > 1:  # per channel: along the axis the codebooks group
        rank = len(value.shape) if value.shape is not None else np.asarray(const_array(value)).ndim
        axis = attr_value(node, "axis", 1) % rank
        if axis != (1 if transposed else 0):
            return None
    return transposed


def integer_compressible(graph: ir.Graph, keep: frozenset[str] = frozenset(), min_elements: int = 256
                         ) -> dict[ir.Value, bool]:
    """(1) The int8 weights to store through integer codebooks, each with whether it is stored
    transposed; none read (directly or through its DequantizeLinear) by a node ``keep`` names."""
    out: dict[ir.Value, bool] = {}
    for value in graph.initializers.values():
        if value.is_graph_output() or value.is_graph_input():
            continue
        uses = [user for user, _ in value.uses()]
        if not uses:
            continue
        array = const_array(value)
        if array is None or array.dtype != np.int8 or array.ndim < 2 or array.size < min_elements:
            continue
        layouts = {_readerlayout(user, value) for user in uses}
        if len(layouts) != 1 or None in layouts:
            continue
        readers = [*uses, *(u for user in uses if user.op_type == "DequantizeLinear" for u, _ in user.outputs[0].uses())]
        if any(node.name in keep or node.op_type in keep for node in readers):
            continue
        out[value] = layouts.pop()
    return out


def encode_integer(array: np.ndarray, transposed: bool, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(2) (rows: W_q as float [channels, rest], codebook int8 [G, 2^N], indices [G, m])."""
    array = np.asarray(array)
    rows = (np.ascontiguousarray(array.T) if transposed else array.reshape(array.shape[0], -1)).astype(np.float32)
    channels, per_channel = rows.shape[0], rows.size // rows.shape[0]
    group = channels_a_group(channels, per_channel, bits)
    grouped = rows.reshape(channels // group, group * per_channel)
    if bits >= 8:  # (2) every integer its own entry: exact
        book = np.zeros((grouped.shape[0], 256), np.int8)
        book[:] = np.arange(-128, 128, dtype=np.int16).astype(np.int8)
        return rows, book, (grouped.astype(np.int16) + 128).astype(np.uint8)
    book, table = _integer_kmeans(grouped.astype(np.int16) + 128, bits)
    return rows, book, np.take_along_axis(table, grouped.astype(np.int64) + 128, axis=1)



def _integer_kmeans(shifted: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(3) ``shifted``: a group's integers + 128 (0..255), [G, m]. Returns the int8 codebook
    [G, 2^bits] and, per group, the index of the nearest entry of each of the 256 values."""
    from edgeq.passes.codebooks import ITERATIONS

    groups, members = shifted.shape
    levels = 1 << bits
    values = np.arange(-128, 128, dtype=np.float64)
    counts = np.bincount((shifted.astype(np.int64) + 256 * np.arange(groups)[:, None]).ravel(),
                         minlength=256 * groups).reshape(groups, 256).astype(np.float64)
    cum_n = np.concatenate([np.zeros((groups, 1)), np.cumsum(counts, axis=1)], axis=1)  # values below bin j
    cum_s = np.concatenate([np.zeros((groups, 1)), np.cumsum(counts * values, axis=1)], axis=1)
    rows = np.arange(groups)[:, None]
    # the starts: each group's quantiles (linear, as np.quantile), and its [min, max] evenly
    position = (np.arange(levels) + 0.5) / levels * (members - 1)
    lower = np.floor(position)

    def order_statistic(i: np.ndarray) -> np.ndarray:  # the i-th smallest value of each group
        return values[np.minimum((cum_n[:, 1:, None] <= i[None, None, :]).sum(axis=1), 255)]

    low, high = order_statistic(lower), order_statistic(np.minimum(lower + 1, members - 1))
    quantiles = low + (position - lower)[None, :] * (high - low)
    present = counts > 0
    lo = values[np.argmax(present, axis=1)][:, None]
    hi = values[255 - np.argmax(present[:, ::-1], axis=1)][:, None]
    uniform = lo + (hi - lo) * (np.arange(levels) / (levels - 1))
    best, best_error, best_table = None, None, None
    for start in (quantiles, uniform):
        book = np.sort(start, axis=1)
        for _ in range(ITERATIONS):
            cuts = np.searchsorted(values, ((book[:, 1:] + book[:, :-1]) / 2.0).ravel()).reshape(groups, levels - 1)
            edges = np.concatenate([np.zeros((groups, 1), np.int64), cuts, np.full((groups, 1), 256, np.int64)], axis=1)
            n = cum_n[rows, edges[:, 1:]] - cum_n[rows, edges[:, :-1]]
            total = cum_s[rows, edges[:, 1:]] - cum_s[rows, edges[:, :-1]]
            moved = np.where(n > 0, total / np.where(n > 0, n, 1.0), book)
            if np.allclose(moved, book, rtol=0, atol=1e-9):
                break
            book = np.sort(moved, axis=1)
        book = np.clip(np.rint(book), -128, 127)
        table = _nearest(book, values)
        error = (counts * (values[None, :] - np.take_along_axis(book, table, axis=1)) ** 2).sum(axis=1)
        if best is None:
            best, best_error, best_table = book, error, table
        else:
            better = error < best_error
            best = np.where(better[:, None], book, best)
            best_table = np.where(better[:, None], table, best_table)
            best_error = np.minimum(error, best_error)
    return best.astype(np.int8), best_table.astype(np.uint8)


def _nearest(book: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The index into each group's ``book`` [G, k] of the entry nearest each of ``values``."""
    order = np.argsort(book, axis=1, kind="stable")
    ordered = np.take_along_axis(book, order, axis=1)
    mids = (ordered[:, 1:] + ordered[:, :-1]) / 2.0
    rank = (values[None, :, None] > mids[:, None, :]).sum(axis=2)  # entries whose upper midpoint is below
    return np.take_along_axis(order, rank, axis=1)
