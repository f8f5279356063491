"""CUDA against CPU on a small conv net in fp32, fp16 and int8 QDQ (skipped without CUDA).

Thresholds: fp32 on cuDNN differs from MLAS only by summation order (SQNR > 60 dB); fp16 on
CUDA vs the fp32 CPU reference keeps > 40 dB; int8 QDQ runs as integer kernels on CPU but as
DequantizeLinear -> float Conv -> QuantizeLinear on CUDA, so the two may differ by one step of
the output scale in a few places: > 30 dB between them and > 25 dB each against fp32.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from compare.graphs import conv_feeds, conv_net
from edgeq.metrics import sqnr_db, top1_agreement
from edgeq.passes.fp16 import convert_fp16

ort = pytest.importorskip("onnxruntime")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="needs onnxruntime-gpu with CUDAExecutionProvider (pip install 'edgeq[gpu]') and an NVIDIA GPU",
    ),
]


def _run(model_bytes: bytes, provider: str, feeds):
    from edgeq.runtime import CUDAOptions, Session

    chain = (CUDAOptions(),) if provider == "cuda" else ("cpu",)
    sess = Session(model_bytes, providers=chain)
    if provider == "cuda":
        assert sess.providers[0] == "CUDAExecutionProvider", f"CUDA was not used: {sess.providers}"
    return sess.run(feeds)["logits"]


def _int8_qdq(tmp_path) -> bytes:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = tmp_path / "fp32.onnx"
    onnx.save(conv_net(), src)
    calib = [conv_feeds(batch=1, seed=100 + i) for i in range(16)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    out = tmp_path / "int8.onnx"
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out.read_bytes()


@pytest.fixture(scope="module")
def feeds():
    return conv_feeds(batch=8, seed=3)


@pytest.fixture(scope="module")
def reference(feeds):
    return _run(conv_net().SerializeToString(), "cpu", feeds)


def test_fp32_cuda_matches_cpu(feeds, reference):
    got = _run(conv_net().SerializeToString(), "cuda", feeds)
    assert sqnr_db(reference, got) > 60
    assert top1_agreement(reference, got) == 1.0


def test_fp16_cuda_close_to_fp32_cpu(feeds, reference):
    model = ir.from_proto(conv_net())
    convert_fp16(model)
    data = ir.to_proto(model).SerializeToString()
    cuda = _run(data, "cuda", feeds)
    cpu = _run(data, "cpu", feeds)
    assert cuda.dtype == np.float32
    assert sqnr_db(reference, cuda) > 40
    assert sqnr_db(cpu, cuda) > 40
    assert top1_agreement(reference, cuda) == 1.0


def test_int8_qdq_cuda_close_to_cpu(tmp_path, feeds, reference):
    data = _int8_qdq(tmp_path)
    cuda = _run(data, "cuda", feeds)
    cpu = _run(data, "cpu", feeds)
    assert sqnr_db(cpu, cuda) > 30
    assert sqnr_db(reference, cuda) > 25 and sqnr_db(reference, cpu) > 25


def test_trt_chain_runs_on_trt_or_falls_back_to_cuda(feeds, reference, caplog):
    """onnxruntime-gpu lists TensorRT even where libnvinfer is missing: the chain must then run on
    CUDA, say so in the log, and still give CUDA's answers."""
    import logging

    from edgeq.runtime import CUDAOptions, Session, TensorRTOptions

    with caplog.at_level(logging.WARNING):
        sess = Session(conv_net().SerializeToString(), providers=(TensorRTOptions(fp16=False), CUDAOptions(), "cpu"))
        got = sess.run(feeds)["logits"]
    assert sess.providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    if sess.providers[0] != "TensorrtExecutionProvider":
        assert any("Tensorrt" in r.getMessage() for r in caplog.records)
    assert sqnr_db(reference, got) > 60
