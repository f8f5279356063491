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

The answer is measured, not read from CPU flags: a 4x64 by 64x16 MatMulInteger whose exact
result saturating kernels cannot give (about 5 ms, once a process). ``EDGEQ_INT8_SATURATES=1``
(or ``0``) overrides it, so that machines of a mixed fleet build the same model (the test suite
sets 1: every machine then runs the same 7-bit numerics).
"""

from __future__ import annotations

import functools
import logging
import os

import numpy as np

__all__ = ["int8_saturates", "measured", "ENV"]

ENV = "EDGEQ_INT8_SATURATES"

logger = logging.getLogger(__name__)


_K = 64


def _probe_model() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weight = np.full((_K, 16), 127, np.int8)
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
