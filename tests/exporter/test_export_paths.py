"""Export paths: factories, .pt2 programs, fallback to TorchScript, tolerance, external data."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import onnx
import pytest

import edgeq.io
from edgeq.errors import ExportError, UsageError
from edgeq.exporter import export
from ortutil import run_ort

FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, image):
            return self.fc(torch.relu(self.bn(self.conv(image))).mean((2, 3)))

    class TwoIn(nn.Module):
        def forward(self, a, b):
            return a * 2 + b, a - b

    def tiny():
        return Tiny()

    def tiny_with_inputs():
        return Tiny(), (torch.randn(1, 3, 16, 16),)

    def two_inputs():
        return TwoIn(), (torch.randn(2, 5), torch.randn(2, 5))

    def broken():
        raise RuntimeError("weights file gone")

    def not_a_model():
        return 42
    """
)


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "edgeq_test_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("edgeq_test_factories")


def _fail_dynamo(monkeypatch):
    import edgeq.exporter.core as mod

    real = mod._run_exporter

    def fake(kind, *args, **kwargs):
        if kind == "dynamo":
            raise RuntimeError("Unsupported operator aten::frobnicate\nlong traceback follows")
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(mod, "_run_exporter", fake)


def test_factory_with_input_shape_falls_back_to_torchscript(factories, tmp_path, monkeypatch):
    import torch

    _fail_dynamo(monkeypatch)
    out = tmp_path / "tiny.onnx"
    result = export("edgeq_test_factories:tiny", out, input_shapes={"image": (1, 3, 16, 16)}, dynamic_batch=True)
    assert result.exporter == "torchscript"
    assert result.fallback_reason == "dynamo export failed: RuntimeError: Unsupported operator aten::frobnicate"
    assert result.input_names == ("image",) and result.output_names == ("output",)
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    (got,) = run_ort(str(out), {"image": x})
    with torch.no_grad():
        want = factories.tiny().eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(out).graph.node}  # eval mode


def test_dynamo_only_failure_is_export_error(factories, tmp_path, monkeypatch):
    _fail_dynamo(monkeypatch)
    with pytest.raises(ExportError, match="dynamo export failed: RuntimeError: Unsupported operator"):
        export("edgeq_test_factories:tiny_with_inputs", tmp_path / "x.onnx", exporter="dynamo")
    assert not os.listdir(tmp_path) or os.listdir(tmp_path) == ["edgeq_test_factories.py"]


def test_factory_inputs_names_from_forward(factories, tmp_path):
    result = export("edgeq_test_factories:two_inputs", tmp_path / "two.onnx", exporter="torchscript",
                    dynamic={"a": {0: "n"}, "b": {0: "n"}})
    assert result.input_names == ("a", "b") and result.output_names == ("output_0", "output_1")
    a = np.arange(20, dtype=np.float32).reshape(4, 5)
    b = np.ones((4, 5), np.float32)
    s, d = run_ort(result.path, {"a": a, "b": b})
    np.testing.assert_allclose(s, a * 2 + b)
    np.testing.assert_allclose(d, a - b)


def test_disagreement_above_tolerance_is_export_error(factories, tmp_path, monkeypatch):
    import edgeq.exporter.core as mod

    real = mod.torch_outputs
    monkeypatch.setattr(mod, "torch_outputs", lambda model, inputs: [o + 0.01 for o in real(model, inputs)])
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"torchscript model disagrees with torch on output 'output': max abs error 0\.01"):
        export("edgeq_test_factories:tiny_with_inputs", out, exporter="torchscript")
    assert not out.exists()
    result = export("edgeq_test_factories:tiny_with_inputs", out, exporter="torchscript", atol=0.02)
    assert 0.009 < result.max_abs_error < 0.011
    result = export("edgeq_test_factories:tiny_with_inputs", out, exporter="torchscript", check=False)
    assert result.max_abs_error is None and out.exists()


@pytest.mark.parametrize(
    "spec, match",
    [
        ("no_such_zoo_model", "not a zoo model.*digits_mobilenet, digits_resnet"),
        ("no_such_pkg.mod:factory", "no module named 'no_such_pkg'.*digits_mobilenet"),
        ("edgeq_test_factories:missing", "has no attribute 'missing'.*digits_mobilenet"),
        ("missing/model.pt2", "file missing/model.pt2 does not exist.*digits_mobilenet"),
        ("edgeq_test_factories:tiny", "no example inputs: give --input-shape"),
    ],
)
def test_spec_errors_are_usage_errors(factories, tmp_path, spec, match):
    with pytest.raises(UsageError, match=match):
        export(spec, tmp_path / "m.onnx")


def test_factory_raising_or_returning_junk_is_export_error(factories, tmp_path):
    with pytest.raises(ExportError, match="factory 'edgeq_test_factories:broken' raised RuntimeError: weights file gone"):
        export("edgeq_test_factories:broken", tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="gave a int, not a torch.nn.Module"):
        export("edgeq_test_factories:not_a_model", tmp_path / "m.onnx")


def test_pt2_program_export_and_never_over_input(factories, tmp_path):
    import torch

    model, (x,) = factories.tiny_with_inputs()
    program_path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model.eval(), (x,)), program_path)
    result = export(str(program_path), tmp_path / "tiny.onnx")
    assert result.exporter == "dynamo" and result.max_abs_error < 1e-5
    (got,) = run_ort(result.path, {result.input_names[0]: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(UsageError, match="same file as input"):
        export(str(program_path), program_path)
    with pytest.raises(UsageError, match="axis 0 of input 'input' is static in the torch.export program"):
        export(str(program_path), tmp_path / "dyn.onnx", dynamic_batch=True)


def test_module_object_and_external_data(factories, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(edgeq.io, "EXTERNAL_DATA_THRESHOLD", 1000)
    model = factories.tiny().eval()
    x = torch.randn(2, 3, 16, 16)
    out = tmp_path / "ext" / "tiny.onnx"
    result = export(model, out, example_inputs=(x,), exporter="torchscript")
    assert (tmp_path / "ext" / "tiny.onnx.data").is_file()
    assert result.size_bytes == os.path.getsize(out) + os.path.getsize(str(out) + ".data")
    loaded = edgeq.io.load_model(out)  # external data stays inside the folder and loads
    assert len(loaded.graph.initializers) >= 2
    assert sorted(os.listdir(tmp_path / "ext")) == ["tiny.onnx", "tiny.onnx.data"]  # no temporaries left
    (got,) = run_ort(str(out), {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_requested_opset_is_honoured(factories, tmp_path):
    result = export("edgeq_test_factories:tiny_with_inputs", tmp_path / "o17.onnx", opset=17)
    assert result.opset == 17 == onnx.load(result.path).opset_import[0].version
    if result.exporter == "torchscript":  # torch 2.13's dynamo keeps its native 18 for this graph
        assert result.fallback_reason == "dynamo produced opset 18, not the requested 17"


def test_wrong_input_shape_is_usage_error(factories, tmp_path):
    with pytest.raises(UsageError, match=r"'tiny' fails in torch on example inputs of shape 1x5x16x16 .*--input-shape"):
        export("edgeq_test_factories:tiny", tmp_path / "m.onnx", input_shapes={"image": (1, 5, 16, 16)})
