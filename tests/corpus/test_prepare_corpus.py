"""prepare_model on every corpus graph: valid, same outputs, and the expected structural changes."""

from __future__ import annotations

import os
import resource
import shutil

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from corpus.builders import CORPUS, big_external
from edgeq.prepare import prepare_model
from edgeq.prepare._base import FLOAT_TYPES
from edgeq.prepare.quantizability import check
from ortutil import run_ort

# what quantizability.check must say about each corpus model before any work (severity, words)
EXPECTED_FINDINGS = {
    "paddle_style": [("limit", "opset 11"), ("info", "Constant nodes")],
    "yolo_style": [("limit", "shapes ONNX inference cannot find"), ("info", "dynamic dims")],
    "mobilenetv3_block": [("limit", "HardSigmoid")],
    "transformer_layer": [("limit", "LayerNormalization"), ("info", "dynamic dims")],
    "lstm_model": [("info", "dynamic dims")],
    "if_loop": [("limit", "If node"), ("limit", "Loop node"), ("info", "Constant nodes")],
    "old_torch_style": [("limit", "opset 9")],
    "tf_style": [("info", "dynamic dims")],
}


def _nodes(model: onnx.ModelProto):
    """Every node of the model, subgraphs included."""
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            yield node
            for attr in node.attribute:
                stack.extend([attr.g] if attr.HasField("g") else list(attr.graphs))


def _unknown_float_values(model: ir.Model) -> list[str]:
    return [
        v.name
        for node in model.graph
        for v in node.outputs
        if v.name and (v.dtype is None or v.shape is None or (v.dtype in FLOAT_TYPES and v.shape is None))
    ]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_prepare_corpus_model(name):
    original, feeds_fn = CORPUS[name]()
    feeds = feeds_fn(3, 1)
    expected = [run_ort(original, feed) for feed in feeds]

    model, notes = prepare_model(ir.from_proto(original), data=feeds)

    prepared = ir.to_proto(model)
    onnx.checker.check_model(prepared, full_check=True)
    assert [o.name for o in prepared.graph.output] == [o.name for o in original.graph.output]
    weights = {t.name for t in original.graph.initializer}
    assert [i.name for i in prepared.graph.input] == [i.name for i in original.graph.input if i.name not in weights]
    for feed, want in zip(feeds, expected):
        got = run_ort(prepared, feed)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
    ops = [n.op_type for n in _nodes(prepared)]
    assert "Constant" not in ops, f"{name}: Constant nodes left: weights would stay float"
    assert "BatchNormalization" not in ops, f"{name}: BatchNormalization left unfolded"
    assert "Dropout" not in ops
    assert max(o.version for o in prepared.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert _unknown_float_values(model) == [], f"{name}: values of unknown type/shape"
    assert all(isinstance(n, str) and n for n in notes)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_check_corpus_model(name):
    original, _ = CORPUS[name]()
    findings = check(ir.from_proto(original))
    assert not [f for f in findings if f.severity == "blocker"]
    for severity, words in EXPECTED_FINDINGS[name]:
        assert any(f.severity == severity and (words in f.message or words in f.where) for f in findings), (
            name, severity, words, [str(f) for f in findings])


def test_prepare_paddle_style_weights_become_initializers():
    original, _ = CORPUS["paddle_style"]()
    model, notes = prepare_model(ir.from_proto(original))
    for node in model.graph:
        if node.op_type in ("Conv", "MatMul"):
            assert node.inputs[1].is_initializer(), node.name
    assert model.opset_imports[""] == 13
    assert any("opset upgraded from 11 to 13" in n for n in notes)


def test_prepare_yolo_style_symbolic_dims_from_mixed_sizes():
    original, feeds_fn = CORPUS["yolo_style"]()
    feeds = feeds_fn(2, 0)  # 64x64 then 96x96
    assert feeds[0]["images"].shape != feeds[1]["images"].shape
    model, _ = prepare_model(ir.from_proto(original), data=feeds)
    output = model.graph.outputs[0]
    assert output.shape is not None and len(output.shape) == 4
    assert output.shape[1] == 3 and output.shape[3] == 7
    assert not isinstance(output.shape[2], int)  # anchors vary with H and W


def test_prepare_if_loop_cleans_subgraphs():
    original, _ = CORPUS["if_loop"]()
    model, _ = prepare_model(ir.from_proto(original))
    loop = next(n for n in model.graph if n.op_type == "Loop")
    body = loop.attributes["body"].as_graph()
    assert [n.op_type for n in body] == ["MatMul", "Relu", "Identity"]  # c_in -> c_out stays
    assert "loop.weight" in body.initializers


@pytest.mark.slow
def test_prepare_big_external_stays_lazy(tmp_path):
    try:
        _check_big_external(tmp_path)
    finally:  # pytest keeps recent tmp folders: do not leave 5 GB behind
        shutil.rmtree(tmp_path, ignore_errors=True)


def _check_big_external(tmp_path):
    from edgeq.io import load_model, save_model

    path, feeds_fn = big_external(str(tmp_path / "in"))
    assert os.path.getsize(path + ".data") > 2**31
    model = load_model(path)
    assert any("external data" in f.message for f in check(model))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model, notes = prepare_model(model)
    out = str(tmp_path / "out" / "big.onnx")
    save_model(model, out, inputs=[path])
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert rss_growth < 1.2e9, f"prepare+save grew RSS by {rss_growth / 1e9:.1f} GB: weights materialized"
    assert any("opset upgraded from 11 to 13" in n for n in notes)
    assert os.path.getsize(out + ".data") > 2**31
    onnx.checker.check_model(out)
    (feed,) = feeds_fn(1, 0)
    (want,) = run_ort(path, feed)
    (got,) = run_ort(out, feed)
    np.testing.assert_allclose(got, want, rtol=1e-5)
