"""vad: the recurrent voice-activity detector; its If-on-the-rate graph, its fed-back state, its
synthetic streams, and default `edgeq.quantize` on it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgeq import zoo
from edgeq.zoo import vad_data, vad_graph
from ortutil import run_ort


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    from edgeq.exporter import export

    path = str(tmp_path_factory.mktemp("vad") / "vad.onnx")
    result = export("vad", path)
    assert result.exporter == "zoo" and result.opset == vad_graph.OPSET
    assert result.max_abs_error < 1e-4  # checked against torch on the example feed
    return path


@pytest.fixture(scope="module")
def torch_model():
    return zoo.get("vad").build()


def _torch(model, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [t.numpy() for t in model(*(torch.from_numpy(feed[k]) for k in ("input", "state", "sr")))]


def test_exported_graph_is_an_if_on_the_rate_with_the_lstm_in_both_branches(exported):
    model = onnx.load(exported)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input", "state", "sr"]
    assert model.graph.input[2].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [n.op_type for n in model.graph.node] == ["Constant", "Equal", "If"]  # all compute in the branches
    equal, branch = model.graph.node[1], model.graph.node[2]
    assert "sr" in equal.input and branch.input == [equal.output[0]]
    assert list(branch.output) == ["output", "stateN"]
    graphs = {a.name: a.g for a in branch.attribute}
    for name, kernel in (("then_branch", 128), ("else_branch", 64)):  # 16 kHz, 8 kHz front-ends
        ops = [n.op_type for n in graphs[name].node]
        assert ops.count("LSTM") == 1 and ops.count("Conv") == 2 and ops[-1] == "Sigmoid"
        conv = next(n for n in graphs[name].node if n.op_type == "Conv")
        assert next(a.ints for a in conv.attribute if a.name == "kernel_shape") == [kernel]
        assert len(graphs[name].initializer) == 12  # each branch holds its own weights


@pytest.mark.parametrize("sr", vad_data.SAMPLE_RATES)
def test_outputs_match_torch_on_both_rates(exported, torch_model, sr):
    for feed in vad_data.eval_data(6, sr=sr):
        assert feed["input"].shape == (1, vad_data.CHUNK[sr])
        got, want = run_ort(exported, feed), _torch(torch_model, feed)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-4)


def test_the_state_carries_the_stream(exported, torch_model):
    """Fed back chunk by chunk, the graph reproduces torch's LSTM run over the whole stream; the
    same chunk with another state gives another probability."""
    import torch

    chunks, labels = vad_data.eval_streams(1)
    state, probs = np.zeros(vad_data.STATE_SHAPE, np.float32), []
    for chunk in chunks[0]:
        prob, new = run_ort(exported, {"input": chunk[None], "state": state, "sr": np.array(16000)})
        assert not np.array_equal(new, state)
        probs.append(float(prob[0, 0]))
        state = new
    with torch.no_grad():
        whole = torch.sigmoid(torch_model.sequence(torch.from_numpy(chunks), 16000)).numpy()[0]
    np.testing.assert_allclose(probs, whole, atol=1e-4)
    speech = int(np.flatnonzero(labels[0])[5])
    fresh = run_ort(exported, {"input": chunks[0, speech][None], "state": np.zeros(vad_data.STATE_SHAPE, np.float32),
                               "sr": np.array(16000)})[0]
    assert abs(float(fresh[0, 0]) - probs[speech]) > 0.05


def test_checkpoint_detects_speech_on_eval_data(exported):
    """Trained by edgeq.zoo.train_vad: on these 200 chunks 0.925 (16 kHz) and 0.935 (8 kHz)
    accuracy (on 24 whole eval streams 0.933 and 0.944); always "no speech" scores 0.6."""
    for sr, floor in ((16000, 0.90), (8000, 0.90)):
        feeds, labels = vad_data.eval_data(200, sr=sr), vad_data.eval_labels(200, sr=sr)
        assert 0.3 < labels.mean() < 0.7  # speech and silence
        probs = np.array([run_ort(exported, f)[0][0, 0] for f in feeds])
        assert ((probs > 0.5) == labels).mean() >= floor


def test_checkpoint_read_without_torch_equals_torch_load():
    import torch

    state = torch.load(vad_graph.CHECKPOINT, map_location="cpu", weights_only=True)
    arrays = vad_graph.read_checkpoint()
    assert arrays.keys() == state.keys()
    for name, tensor in state.items():
        np.testing.assert_array_equal(arrays[name], tensor.numpy())


def test_calibration_feeds_carry_the_fed_back_state():
    calib = vad_data.calibration_data(32)
    assert len(calib) == 32
    for feed in calib:
        assert feed["input"].shape == (1, 512) and feed["input"].dtype == np.float32
        assert feed["state"].shape == vad_data.STATE_SHAPE and feed["state"].dtype == np.float32
        assert feed["sr"].shape == () and feed["sr"].dtype == np.int64 and int(feed["sr"]) == 16000
    assert sum(bool(np.any(f["state"])) for f in calib) >= 28  # zero only at a stream's first chunk
    peaks = np.array([np.abs(f["input"]).max() for f in calib])
    assert 20 * np.log10(peaks.max() / peaks.min()) > 20  # loud and quiet streams
    again, evals = vad_data.calibration_data(32), vad_data.eval_data(32)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(calib, again) for k in a)
    assert not any(np.array_equal(a["input"], b["input"]) for a in calib for b in evals)
    assert vad_data.calibration_data(4, sr=8000)[0]["input"].shape == (1, 256)


def test_data_generators_do_not_import_torch():
    code = ("import sys\nfrom edgeq import zoo\nspec = zoo.get('vad')\n"
            "spec.calibration_data(2); spec.eval_data(2); spec.eval_labels(2); spec.onnx_model()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_quantize_keeps_the_speech_probability(exported):
    """``edgeq.quantize(path, None, calib)``: auto mode, as `edgeq quantize IN -o OUT --calib DIR`.
    Every node of both branches has a decision in the report; today all of them stay float
    (control flow) and auto returns the fp32 model, which the report says."""
    import edgeq

    result = edgeq.quantize(exported, None, vad_data.calibration_data(16), progress=False)
    report = result.report
    branches = [a.g for a in onnx.load(exported).graph.node[2].attribute]
    assert {n.name for g in branches for n in g.node} <= {e["node"] for e in report["float"] + report["quantized"]}
    feeds = vad_data.eval_data(32)
    got = [run_ort(result.model, f) for f in feeds]
    want = [run_ort(exported, f) for f in feeds]
    assert all(g[1].shape == vad_data.STATE_SHAPE for g in got)
    error = max(abs(float(g[0][0, 0]) - float(w[0][0, 0])) for g, w in zip(got, want))
    assert error <= 0.05
    if report["summary"]["quantized"] == 0:
        assert report["auto"]["verdict"].startswith("fp32") and error < 1e-5
