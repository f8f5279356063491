"""Does this CPU's onnxruntime saturate int8 products? Measured, once a process.

    if int8_saturates():      # x86 with AVX2 and no VNNI (Haswell .. Skylake client, AMD Zen 1-3)
        ...                    # weights of u8s8 kernels must stay within 7 bits

onnxruntime's u8s8 GEMM (QLinearConv, QLinearMatMul, MatMulInteger, MatMulIntegerToFloat,
DynamicQuantizeMatMul, DynamicQuantizeLSTM, QGemm) multiplies uint8 activations by int8 weights.
On x86 CPUs without VNNI its kernel adds each pair of products in int16 (``vpmaddubsw``), which
saturates once ``a1*w1 + a2*w2`` passes 32767: 255 * 127 * 2 = 64770 does, 255 * 63 * 2 = 32130
does not. The outputs are then far off (on an AMD EPYC of the first Zen generation: digits_resnet
2.9 dB and top-1 agreement 0.78 with 8-bit weights, 30.5 dB and 1.0 with 7-bit weights). VNNI
(``vpdpbusd``, AVX-512 or AVX-VNNI), AMX and ARM's dot products accumulate in int32 and do not.

Measured there with onnxruntime 1.32 (``tests/runtime/test_cpu.py``): MatMulInteger and
QLinearConv (group 1) u8s8 saturate; depthwise QLinearConv, ConvInteger, u8u8 and s8s8 do not.

Such a kernel pairs the products of consecutive weights along K (rows 2i and 2i + 1 of a MatMul's
[K, N] weight; input channels 2i and 2i + 1 at one kernel position of a Conv), so a pair of
same-sign weight levels whose sum stays within 32767 / a_max never saturates, whatever the
weights' width: 128 against uint8 activations (0-255). Where the width is left to edgeq, weights
keep 8 bits with their pairs held within 128 (passes/weights.py ``quantize_paired``: a weight error
about 4 dB under 7-bit levels), and per-token MatMuls may narrow their rows to ``NARROW_LEVELS``
(a_max 181, pairs within ``NARROW_PAIR_LIMIT`` = 181; passes/per_token.py (2)). ``pairs_exact()``
measures that pairing (a kernel that paired otherwise, or added four products in int16, fails
it, and weights then keep 7 bits).

The answer is measured, not read from CPU flags: a 4x64 by 64x16 MatMulInteger whose exact
result saturating kernels cannot give (about 5 ms, once a process). ``EDGEQ_INT8_SATURATES=1``
(or ``0``) overrides it, so that machines of a mixed fleet build the same model (the test suite
sets 1: every machine then runs the same 7-bit numerics).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import numpy as np

__all__ = ["int8_saturates", "measured", "ENV", "wide_int8_weights", "saturation_warning", "pairs_exact", "pairs_within", "pairs_over",
           "k_major", "NARROW_LEVELS", "PAIR_LIMIT", "NARROW_PAIR_LIMIT"]

ENV = "EDGEQ_INT8_SATURATES"

logger = logging.getLogger(__name__)


_K = 64
INT16_MAX = 32767
PAIR_LIMIT = INT16_MAX // 255  # 128: the largest sum of two same-sign weight levels against uint8 activations
NARROW_LEVELS = 181  # per-token rows where products saturate: uint8 levels 1 .. 181 around zero point 91
NARROW_PAIR_LIMIT = INT16_MAX // NARROW_LEVELS  # 181: the largest such sum against those rows


def _probe_model(weight: np.ndarray | None = None) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weight = np.full((_K, 16), 127, np.int8) if weight is None else weight
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "edgeq_int8_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, _K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 16])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def int8_saturates() -> bool:
    """True where onnxruntime's CPU u8s8 kernel gets 255 * 127 summed over 64 products wrong
    (or as ``EDGEQ_INT8_SATURATES`` says)."""
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return measured()


@functools.cache
def measured() -> bool:
    """The measurement itself (``int8_saturates`` without the override)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(_probe_model(), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {"a": np.full((4, _K), 255, np.uint8)})[0]
    except Exception as exc:  # an onnxruntime without MatMulInteger: nothing to saturate
        logger.debug("int8 probe did not run: %s", exc)
        return False
    saturates = bool(np.any(got != 255 * 127 * _K))
    logger.debug("int8 probe: u8s8 products %s", "saturate" if saturates else "exact")
    return saturates


@functools.cache
def pairs_exact() -> bool:
    """True where onnxruntime's CPU u8s8 kernels are exact for weights whose same-sign pairs (rows
    2i, 2i + 1 of a MatMul's [K, N]; input channels 2i, 2i + 1 at one kernel position of a Conv,
    passes/weights.py ``k_major``) stay within 32767 // a_max, though other pairings or groups of
    four would not: a MatMulInteger against activations of 181 (``NARROW_PAIR_LIMIT``, the weight column
    127, 54, 54, 127, ...) and of 255 (limit 128: 127, 1, 1, 127, ...), and a 3x3 QLinearConv of
    two input channels (127 and 1 at every position) against 255."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        for a_max, small in ((NARROW_LEVELS, NARROW_PAIR_LIMIT - 127), (255, PAIR_LIMIT - 127)):
            column = np.tile(np.array([127, small, small, 127], np.int8), _K // 4)
            weight = np.repeat(column[:, None], 16, axis=1)
            session = ort.InferenceSession(_probe_model(weight), options, providers=["CPUExecutionProvider"])
            a = np.full((4, _K), a_max, np.uint8)
            if not np.array_equal(session.run(None, {"a": a})[0], a.astype(np.int64) @ weight.astype(np.int64)):
                return False
        conv = np.zeros((4, 2, 3, 3), np.int8)
        conv[:, 0], conv[:, 1] = 127, 1
        exact = 9 * 255 * 128  # every output away from the border
        consts = [numpy_helper.from_array(conv, "w"), numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
                  numpy_helper.from_array(np.array(0, np.uint8), "xz"), numpy_helper.from_array(np.ones(4, np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
                  numpy_helper.from_array(np.array(exact / 100, np.float32), "ys"),
                  numpy_helper.from_array(np.array(0, np.uint8), "yz")]
        graph = helper.make_graph(
            [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])], "edgeq_pair_probe",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 5, 5])],
            [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], consts)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": np.full((1, 2, 5, 5), 255, np.uint8)})[0]
    except Exception as exc:
        logger.debug("int8 pair probe did not run: %s", exc)
        return False
    exact = bool(np.all(got == 100))
    logger.debug("int8 pair probe: %s", "exact" if exact else "saturates")
    return exact


def k_major(array: np.ndarray, op: str, trans_b: bool = False) -> np.ndarray:
    """A weight as [K, C] in the order onnxruntime's u8s8 GEMM walks K (C: its output channels):
    a MatMul's [K, N] itself, a transB Gemm's [N, K] transposed, a Conv's [O, I, *kernel] as
    (*kernel, I) by O (measured: QLinearConv pairs input channels at one kernel position, grouped
    too; ``pairs_exact``)."""
    if op == "Conv":
        return array.transpose(*range(2, array.ndim), 1, 0).reshape(-1, array.shape[0])
    return array.T if trans_b else array


def pairs_over(values: np.ndarray, limit: int) -> np.ndarray:
    """[K // 2, N]: where the same-sign levels of rows 2i and 2i + 1 of ``values`` ([K, N]) sum
    above ``limit`` (an odd K's last row pairs with nothing)."""
    v = np.asarray(values, np.int32)
    k = v.shape[0] // 2 * 2
    a, b = v[0:k:2], v[1:k:2]
    return (a * b > 0) & (np.abs(a) + np.abs(b) > limit)


def pairs_within(values: np.ndarray, limit: int) -> bool:
    """No two same-sign levels of rows 2i and 2i + 1 of ``values`` ([K, N]) sum above ``limit``."""
    return np.ndim(values) == 2 and not bool(pairs_over(values, limit).any())


# Operators whose int8 weight input (index) meets uint8 activations in a u8s8 GEMM, the input
# holding the activations' zero point (its type says uint8 or int8), and the weight's layout for
# ``_paired`` (an LSTM's [D, K, 4H]: each direction a MatMul's).
_KERNELS: dict[str, tuple[tuple[int, ...], int | None, str]] = {
    "QLinearConv": ((3,), 2, "Conv"), "QLinearMatMul": ((3,), 2, "MatMul"), "QGemm": ((3,), 2, "Gemm"),
    "MatMulInteger": ((1,), 2, "MatMul"), "MatMulIntegerToFloat": ((1,), 4, "MatMul"),
    "DynamicQuantizeMatMul": ((1,), None, "MatMul"), "DynamicQuantizeLSTM": ((1, 2), None, "LSTM"),
}
_QDQ_READERS = {"Conv", "MatMul", "Gemm"}  # float ops that onnxruntime fuses with a weight DQ (input 1)
_SAFE = 64  # 255 * 64 * 2 = 32640 < 32767: levels within +-64 never saturate


def wide_int8_weights(model: Any) -> list[str]:
    """Names of int8 weights (initializers stored in the file) beyond +-64 that onnxruntime's u8s8
    kernels read: directly (QLinearConv, MatMulInteger ...), or through a DequantizeLinear into a
    Conv (not depthwise), MatMul or Gemm whose activations are uint8. ``model``: an onnx.ModelProto."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def wide(name: str, op: str = "", trans_b: bool = False, limit: int = PAIR_LIMIT) -> bool:
        """Beyond +-64, unless ``op``'s same-sign pairs along K stay within ``limit``."""
        tensor = inits.get(name)
        if tensor is None or tensor.data_type != TensorProto.INT8 or tensor.data_location == TensorProto.EXTERNAL:
            return False
        levels = numpy_helper.to_array(tensor)
        if np.abs(levels.astype(np.int16)).max(initial=0) <= _SAFE:
            return False
        return not _paired(levels, op, trans_b, limit)

    def int8_activations(name: str | None) -> bool:
        tensor = inits.get(name) if name else None
        return tensor is not None and tensor.data_type == TensorProto.INT8

    def _narrow_rows(name: str | None) -> bool:  # edgeq's per-token rows: levels 1 .. 181 around 91
        tensor = inits.get(name) if name else None
        return (tensor is not None and tensor.data_type == TensorProto.UINT8
                and int(numpy_helper.to_array(tensor).reshape(-1)[0]) == NARROW_LEVELS // 2 + 1)

    def depthwise(node: Any, weight: str) -> bool:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = list(inits[weight].dims) if weight in inits else []
        return group > 1 and len(dims) >= 3 and dims[1] == 1

    found: list[str] = []
    for node in graph.node:
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        if node.op_type in _KERNELS:
            weights, zp, op = _KERNELS[node.op_type]
            zp_name = node.input[zp] if zp is not None and len(node.input) > zp else None
            if int8_activations(zp_name) or (node.op_type == "QLinearConv" and depthwise(node, node.input[3])):
                continue
            narrow = node.op_type == "MatMulIntegerToFloat" and _narrow_rows(zp_name)
            found += [node.input[i] for i in weights if len(node.input) > i
                      and wide(node.input[i], op, trans_b, NARROW_PAIR_LIMIT if narrow else PAIR_LIMIT)]
        elif node.op_type in _QDQ_READERS and len(node.input) > 1:
            dq = producers.get(node.input[1])
            if dq is None or dq.op_type != "DequantizeLinear" or not wide(dq.input[0], node.op_type, trans_b):
                continue
            x = producers.get(node.input[0])
            x_zp = x.input[2] if x is not None and x.op_type == "DequantizeLinear" and len(x.input) > 2 else None
            if int8_activations(x_zp) or (node.op_type == "Conv" and depthwise(node, dq.input[0])):
                continue
            found.append(dq.input[0])
    return list(dict.fromkeys(found))


def _paired(levels: np.ndarray, op: str, trans_b: bool, limit: int) -> bool:
    """Whether an int8 weight of ``op`` (Conv, MatMul, Gemm, LSTM; "" for none) keeps its same-sign
    pairs along K within ``limit`` (``k_major``: the order the kernel pairs)."""
    if (op == "Conv" and levels.ndim >= 3) or (op in ("MatMul", "Gemm") and levels.ndim == 2):
        return pairs_within(k_major(levels, op, trans_b), limit)
    if op == "LSTM" and levels.ndim == 3:  # [D, K, 4H]: each direction a MatMul's [K, N]
        return all(pairs_within(direction, limit) for direction in levels)
    return False


def saturation_warning(path: str) -> str | None:
    """The warning for a model file whose 8-bit weights this CPU's u8s8 kernels saturate, or None."""
    if not int8_saturates():
        return None
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # the session reports unreadable files itself
        return None
    wide = wide_int8_weights(model)
    if not wide:
        return None
    return (f"{os.path.basename(path)}: {len(wide)} int8 weight tensor(s) use more than 7 bits (e.g. {wide[0]}) "
            "in u8s8 kernels, whose products this CPU's onnxruntime saturates (x86 without VNNI): outputs may be "
            "far off; re-quantize on this CPU or with `edgeq quantize --reduce-range`")
