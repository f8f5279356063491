"""Exporting the zoo models: ORT agrees with torch at batch 1 and 3; digits keep their accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeq import zoo
from edgeq.exporter import export
from ortutil import run_ort


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module", params=["digits_mobilenet", "digits_resnet"])
def digits_export(request, tmp_path_factory):
    name = request.param
    result = export(name, tmp_path_factory.mktemp(name) / f"{name}.onnx")
    return name, result


def test_digits_export_result_and_graph(digits_export):
    name, result = digits_export
    assert result.exporter == "dynamo" and result.fallback_reason is None
    assert result.input_names == ("input",) and result.output_names == ("logits",)
    assert result.opset == 18 and result.max_abs_error < 1e-4
    model = onnx.load(result.path)
    onnx.checker.check_model(model)
    assert _dims(model.graph.input[0]) == ["batch", 1, 32, 32]
    assert _dims(model.graph.output[0]) == ["batch", 10]
    ops = {n.op_type for n in model.graph.node}
    assert "Conv" in ops and {"Gemm", "MatMul"} & ops
    if name == "digits_mobilenet":
        groups = [a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
        assert max(groups) > 1  # depthwise convolutions survive export


def test_digits_onnx_matches_torch_and_keeps_accuracy(digits_export):
    import torch

    name, result = digits_export
    spec = zoo.get(name)
    feeds, labels = spec.eval_data(n=10_000), spec.eval_labels(n=10_000)
    x = np.concatenate([f["input"] for f in feeds])
    with torch.no_grad():
        torch_logits = spec.build()(torch.from_numpy(x)).numpy()
    for batch in (1, 3):
        (onnx_logits,) = run_ort(result.path, {"input": x[:batch]})
        np.testing.assert_allclose(onnx_logits, torch_logits[:batch], rtol=1e-3, atol=1e-4)
    (all_logits,) = run_ort(result.path, {"input": x})  # the whole held-out split in one batch
    torch_top1 = (torch_logits.argmax(1) == labels).mean()
    onnx_top1 = (all_logits.argmax(1) == labels).mean()
    assert torch_top1 >= 0.95 and onnx_top1 >= 0.95
    assert (all_logits.argmax(1) == torch_logits.argmax(1)).mean() >= 0.998


def test_tiny_transformer_dynamic_batch_and_sequence(tmp_path):
    import torch

    spec = zoo.get("tiny_transformer")
    result = export("tiny_transformer", tmp_path / "tt.onnx", dynamic_batch=True)
    model = onnx.load(result.path)
    assert [_dims(i) for i in model.graph.input] == [["batch", "sequence"]] * 2
    assert {"Softmax", "LayerNormalization"} <= {n.op_type for n in model.graph.node}
    torch_model = spec.build()
    feeds = spec.eval_data(3)
    for batch, seq in ((1, 32), (3, 32), (3, 17)):
        ids = np.concatenate([f["input_ids"] for f in feeds[:batch]])[:, :seq]
        mask = np.concatenate([f["attention_mask"] for f in feeds[:batch]])[:, :seq]
        (got,) = run_ort(result.path, {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            want = torch_model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        assert got.shape == (batch, seq, 128)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_resnet224_export(tmp_path):
    import torch

    spec = zoo.get("resnet224")
    result = export("resnet224", tmp_path / "r.onnx")
    x = np.concatenate([f["input"] for f in spec.eval_data(3)])
    (got,) = run_ort(result.path, {"input": x}, threads=2)
    with torch.no_grad():
        want = spec.build()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    assert (got.argmax(1) == want.argmax(1)).all()
    assert 40e6 < result.size_bytes < 52e6  # 11.7M float32 parameters


@pytest.mark.realmodel
@pytest.mark.slow
def test_minilm_export_embeddings_match_torch(tmp_path):
    import torch

    spec = zoo.get("minilm")
    result = export("minilm", tmp_path / "minilm.onnx")
    assert result.output_names == ("sentence_embedding",)
    feeds = spec.eval_data(24)
    ids = np.concatenate([f["input_ids"] for f in feeds])
    mask = np.concatenate([f["attention_mask"] for f in feeds])
    (got,) = run_ort(result.path, {"input_ids": ids, "attention_mask": mask}, threads=2)
    with torch.no_grad():
        want = spec.build()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert got.shape == (24, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999


def test_static_drops_zoo_axes_and_dynamic_adds_one(tmp_path):
    static = export("digits_resnet", tmp_path / "s.onnx", static=True, exporter="torchscript")
    model = onnx.load(static.path)
    assert static.dynamic_axes == {} and _dims(model.graph.input[0]) == [1, 1, 32, 32]
    x = zoo.get("digits_resnet").eval_data(2)
    with pytest.raises(Exception, match="Got: 2 Expected: 1"):
        run_ort(static.path, {"input": np.concatenate([f["input"] for f in x])})
    seq = export("tiny_transformer", tmp_path / "t.onnx", static=True, dynamic={"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}},
                 exporter="torchscript")
    assert [_dims(i) for i in onnx.load(seq.path).graph.input] == [[1, "seq"], [1, "seq"]]
