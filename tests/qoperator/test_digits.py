"""The digits models through edgeq.quantize(format=qoperator, integer_only): no float islands,
ORT top-1 equals the QDQ model's, and the integer reference agrees with ORT within 1 LSB."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest

from edgeq.config import QuantConfig
from ortutil import run_ort

from .harness import per_op_agreement

DIGITS = ["digits_mobilenet", "digits_resnet"]


def _export(spec) -> onnx.ModelProto:
    import torch

    buffer = io.BytesIO()
    torch.onnx.export(spec.build(), spec.example_inputs(), buffer, dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"])
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.slow
@pytest.mark.parametrize("name", DIGITS)
def test_digits_integer_only(name):
    from edgeq import zoo
    from edgeq.quantizer import quantize
    from edgeq.reference import run

    spec = zoo.get(name)
    proto = _export(spec)
    calib = spec.calibration_data(32)
    qdq = quantize(proto, QuantConfig(), calib, progress=False).model
    config = QuantConfig(format="qoperator", integer_only=True, strict=True)
    result = quantize(proto, config, calib, progress=False)
    section = result.report["qoperator"]
    assert section["float_islands"] == [] and section["not_rewritten"] == []
    ops = [n.op_type for n in result.model.graph]
    assert ops.count("QuantizeLinear") == 1 and "DequantizeLinear" not in ops[1:-1]
    assert section["layers"] and all("multiplier" in layer for layer in section["layers"])

    import onnx_ir as ir

    model = ir.to_proto(result.model)
    last = model.graph.node[-1]  # QGemm (float logits) or DequantizeLinear
    dtypes = {v.name: v.dtype for n in result.model.graph for v in n.outputs}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.append(
        onnx.helper.make_tensor_value_info(last.input[0], dtypes[last.input[0]].value, None))
    feeds = spec.eval_data(40)
    top1_qdq = [run_ort(qdq, feed)[0].argmax() for feed in feeds]
    top1_int = [run_ort(model, feed)[0].argmax() for feed in feeds]
    assert top1_int == top1_qdq
    last_int = [run_ort(exposed, feed)[1] for feed in feeds]
    # double: 0.95 and more with 8-bit weights, 0.926 with 7-bit ones (a CPU that saturates 8-bit products)
    for rounding, end_to_end in (("single", 0.999), ("double", 0.9)):
        top1_ref, within = [], []
        for feed, want in zip(feeds, last_int):
            ref = run(model, feed, intermediates=True, rounding=rounding)
            top1_ref.append(ref["logits"].argmax())
            diff = np.abs(ref[last.input[0]].astype(np.int64) - want.astype(np.int64))
            within.append((diff <= 1).ravel())
        assert np.mean(np.array(top1_ref) == np.array(top1_int)) >= 0.95
        # single rounding is bit-exact with ORT op by op; gemmlowp's double rounding differs
        # by 1 LSB on ~0.2% of each op's outputs, which compounds over a deep network
        assert np.concatenate(within).mean() >= end_to_end, rounding
    shares = per_op_agreement(model, feeds[0])
    assert min(shares.values()) >= 0.999, shares
