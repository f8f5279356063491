"""QAT of graphs with If branches and int8 LSTMs (the zoo's vad): the LSTM in torch against
onnxruntime, the branches trained and exported, batches of stateful feeds, and what stays refused."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeq.errors import UsageError
from edgeq.qat import QATConfig, export, prepare
from edgeq.qat.ops import OPS
from edgeq.qat.zoo_recipe import batch_axes, batches

STEPS, BATCH, FEATURES, HIDDEN = 7, 3, 5, 6


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("extras", [False, True])
def test_lstm_matches_onnxruntime(rng, direction, extras):
    """ops.lstm (the float LSTM, and DynamicQuantizeLSTM's arithmetic without its quantizers)
    against onnxruntime's LSTM: gates in ONNX's order, bias, initial states, peepholes."""
    d = 2 if direction == "bidirectional" else 1
    arrays = {"X": rng.standard_normal((STEPS, BATCH, FEATURES)), "W": rng.standard_normal((d, 4 * HIDDEN, FEATURES)) * 0.5,
              "R": rng.standard_normal((d, 4 * HIDDEN, HIDDEN)) * 0.5}
    if extras:
        arrays |= {"B": rng.standard_normal((d, 8 * HIDDEN)) * 0.3, "h0": rng.standard_normal((d, BATCH, HIDDEN)),
                   "c0": rng.standard_normal((d, BATCH, HIDDEN)), "P": rng.standard_normal((d, 3 * HIDDEN)) * 0.3}
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    names = ["X", "W", "R", "B", "", "h0", "c0", "P"] if extras else ["X", "W", "R"]
    node = onnx.helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], hidden_size=HIDDEN, direction=direction)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info(n, 1, arrays[n].shape) for n in arrays],
                                   [onnx.helper.make_tensor_value_info(n, 1, None) for n in ("Y", "Y_h", "Y_c")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 14)])
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, arrays)
    inputs = [torch.from_numpy(arrays[n]) if n else None for n in names]
    got = OPS["LSTM"](inputs, {"hidden_size": HIDDEN, "direction": direction})
    for w, g in zip(want, got):
        np.testing.assert_allclose(g.numpy(), w, atol=2e-5)


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    from edgeq import zoo
    from edgeq.exporter import export as export_torch

    path = str(tmp_path_factory.mktemp("vad") / "vad.onnx")
    export_torch("vad", path)
    return path, zoo.get("vad")


def test_if_branches_and_int8_lstm_train_and_export(vad, tmp_path):
    """Each If branch is a program of its own with its quantizers and weights; DynamicQuantizeLSTM's
    W and R are trained weights; the untrained module exports within one step of onnxruntime and
    its weights receive gradients through the branch the sample rate picks."""
    path, spec = vad
    qat = prepare(path, calib=spec.calibration_data(16))
    (branch,) = [s for s in qat.program if s[0] == "if"]
    kinds = [[step[0] for step in body] for body, _ in branch[4]]
    assert all("qlstm" in k for k in kinds)
    lstm_weights = [r for r in qat.weights if r.consumer.endswith("_int8")]
    assert len(lstm_weights) == 4  # W and R of each branch's LSTM
    checked = export(qat, spec.eval_data(4), str(tmp_path / "vad.qat.onnx"))
    assert checked.worst_agreement >= 0.999
    feed = spec.calibration_data(2)
    qat.train()
    out = qat(**{k: torch.from_numpy(np.concatenate([f[k] for f in feed], axis=1 if k == "state" else 0))
                 if f[k].ndim else torch.from_numpy(f[k].copy()) for k in feed[0] for f in feed[:1]})
    (out[0].sum() + out[1].sum()).backward()
    taken = [r for r in lstm_weights if qat.params[r.param].grad is not None]
    assert taken and all(float(qat.params[r.param].grad.abs().sum()) > 0 for r in taken)


@pytest.mark.weight_bits
def test_int8_lstms_keep_7_bit_weights_where_8_bits_would_saturate(vad, monkeypatch):
    """On a CPU that saturates 8-bit products, QAT takes static mode's width, except where the
    export check has no exact form for a kernel (DynamicQuantizeLSTM): there 7 bits, which never
    saturate, even where static mode measured 8 as better."""
    from edgeq.stages import weight_bits

    monkeypatch.setenv("EDGEQ_INT8_SATURATES", "1")
    monkeypatch.setattr(weight_bits, "width_scores", lambda ref, models, feeds: [(20.0, 20.0), (40.0, 40.0)])  # 8 wins
    path, spec = vad
    qat = prepare(path, calib=spec.calibration_data(16))
    assert qat.quant_config.reduce_range is True
    assert max(qat.quants[w.quant].qmax for w in qat.weights) <= 63


def test_vad_w4a8_qat_improves_on_ptq_and_exports(vad, tmp_path):
    """4-bit weights, LSTM included (its initializers repeat names across the branches: renamed),
    distilled on the model's own stream: better than the untrained 4-bit grid on unseen audio, and
    the export check (float weights as the file stores them, float16) within one step."""
    from edgeq.qat.zoo_recipe import qat_zoo

    path, _ = vad
    summary = qat_zoo("vad", str(tmp_path / "vad4.onnx"), epochs=2, samples=384, eval_samples=64, fp32_path=path,
                      progress=False, config=QATConfig(weight_bits=4))
    assert summary["export_check"]["within_one_step"] >= 0.999
    # measured 31.2 -> 33.2 dB
    assert summary["qat"]["sqnr_db"] >= summary["ptq"]["sqnr_db"] + 0.5


def test_batches_stack_states_along_their_batch_axis_and_group_scalars(vad):
    path, spec = vad
    axes, out_axes = batch_axes(path)
    assert axes == {"input": 0, "state": 1, "sr": 0} and out_axes[1] == 1
    feeds = spec.calibration_data(6)
    feeds = [dict(f, sr=np.array(8000 if i % 2 else 16000, np.int64)) for i, f in enumerate(feeds)]
    targets = [[np.zeros((1, 1), np.float32), np.zeros((2, 1, 64), np.float32)] for _ in feeds]
    out = batches(feeds, targets, 4, 0, axes, out_axes)
    assert sorted(int(b[0]["sr"]) for b in out) == [8000, 16000]  # one batch per sample rate, the rate once
    for inputs, target in out:
        assert inputs["sr"].ndim == 0 and inputs["state"].shape == (2, 3, 64) and inputs["input"].shape[0] == 3
        assert target[1].shape == (2, 3, 64)


def test_loop_bodies_are_refused_clearly():
    text = """<ir_version: 8, opset_import: ["" : 14]>
g (float[2] x, int64 n) => (float[2] y) {
  cond = Constant <value = bool {1}> ()
  y = Loop (n, cond, x) <body = b (int64 i, bool c, float[2] a) => (bool co, float[2] ao) {
      co = Identity (c)
      ao = Add (a, a)
  }>
}"""
    with pytest.raises(UsageError, match="Loop bodies is not supported"):
        prepare(onnx.parser.parse_model(text), calib=[{"x": np.ones(2, np.float32), "n": np.array(2, np.int64)}])


def test_cli_qat_of_vad(tmp_path):
    out = tmp_path / "vad.qat.onnx"
    proc = subprocess.run([sys.executable, "-m", "edgeq", "qat", "vad", "-o", str(out), "--samples", "64", "--epochs", "1",
                           "--eval-samples", "16"], capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    ops = {n.op_type for g in [onnx.load(str(out)).graph] for n in g.node}
    assert "If" in ops and out.is_file()
