"""An input model that is already quantized (onnxruntime's dynamic quantizer: ConvInteger +
DynamicQuantizeLinear; QDQ; QLinear*) is recognized and refused with one line naming what was
found and the fix, in every mode, not quantized a second time (edgeq/modelinfo.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgeq
from passes.nets import conv_net, feeds


@pytest.fixture(scope="module")
def dynamic_int8(tmp_path_factory):
    """conv_net through onnxruntime.quantization.quantize_dynamic (ConvInteger, as old tools wrote)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = tmp_path_factory.mktemp("quantized")
    fp32, out = folder / "fp32.onnx", folder / "dyn.onnx"
    onnx.save(conv_net(), str(fp32))
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv"])
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"ConvInteger", "DynamicQuantizeLinear"} <= ops
    return str(out)


@pytest.mark.parametrize("mode", ["auto", "static", "dynamic", "fp16"])
def test_already_quantized_model_is_refused_in_every_mode(dynamic_int8, mode):
    from edgeq.errors import UsageError

    data = feeds((1, 3, 16, 16), n=8, seed=3)
    with pytest.raises(UsageError, match=r"already quantized \(dynamic int8 .*ConvInteger.*: quantize its fp32 "):
        edgeq.quantize(dynamic_int8, edgeq.QuantConfig(mode=mode), data, progress=False)


def test_qdq_model_is_refused_and_the_cli_says_so_in_one_line(tmp_path, capsys):
    from edgeq.cli.main import main

    data = feeds((1, 3, 16, 16), n=8, seed=3)
    result = edgeq.quantize(conv_net(), edgeq.QuantConfig(), data, progress=False)
    path = tmp_path / "qdq.onnx"
    result.save(str(path))
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, feed in enumerate(data):
        np.savez(calib / f"{i}.npz", **feed)
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", str(path), "-o", str(tmp_path / "again.onnx"), "--calib", str(calib), "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and not (tmp_path / "again.onnx").exists()
    assert "is already quantized (QDQ" in err and "QuantizeLinear" in err and len(err.strip().splitlines()) == 1


def test_float_models_pass():
    import onnx_ir as ir

    from edgeq.modelinfo import quantized_ops, refuse_quantized

    model = ir.from_proto(conv_net())
    assert quantized_ops(model) == {}
    refuse_quantized(model)
