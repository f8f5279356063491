"""kws: the trained keyword spotter; its synthetic speech data, and `edgeq quantize --auto` on it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeq import zoo
from edgeq.zoo import metrics, synth_speech
from ortutil import cli_ok, first_output_stacked


def test_checkpoint_recognizes_heldout_keywords():
    import torch

    spec = zoo.get("kws")
    model = spec.build()
    assert not model.training
    x = np.concatenate([f["input"] for f in spec.eval_data(240)])
    labels = spec.eval_labels(240)
    assert np.bincount(labels, minlength=12).tolist() == [20] * 12  # balanced
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    # training worked: 98.5% on 600 held-out utterances when trained (chance: 8.3%)
    assert (predicted == labels).mean() >= 0.93
    assert len(set(predicted.tolist())) == 12


def test_log_mel_features():
    bank = synth_speech.mel_filterbank()
    assert bank.shape == (40, 129) and (bank >= 0).all()
    assert (bank.sum(1) > 0).all()  # no empty band
    peaks = bank.argmax(1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > 100  # ordered low to high, up to 4 kHz
    # a 1 kHz tone lights the band whose filter peaks near 1 kHz, in every frame
    t = np.arange(synth_speech.SR) / synth_speech.SR
    feats = synth_speech.log_mel(0.5 * np.sin(2 * np.pi * 1000 * t))
    assert feats.shape == (40, 64) and feats.dtype == np.float32
    band = int(np.argmax(feats.mean(1)))
    assert abs(peaks[band] * synth_speech.SR / synth_speech.N_FFT - 1000) < 150
    assert (feats.argmax(0) == band).mean() > 0.9


def test_data_deterministic_and_calibration_differs_from_eval():
    a, b = synth_speech.calibration_data(4, seed=3), synth_speech.calibration_data(4, seed=3)
    for fa, fb in zip(a, b):
        assert fa["input"].shape == (1, 1, 40, 64) and fa["input"].dtype == np.float32
        np.testing.assert_array_equal(fa["input"], fb["input"])
    ev = synth_speech.eval_data(4, seed=3)
    assert not any(np.array_equal(x["input"], y["input"]) for x, y in zip(a, ev))
    np.testing.assert_array_equal(synth_speech.eval_labels(30), synth_speech.eval_labels(30))
    x = np.concatenate([f["input"] for f in synth_speech.calibration_data(24)])
    assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 1.5  # fixed normalization fits


def test_top1_agreement_metric():
    ref = np.eye(4, dtype=np.float32)
    got = ref.copy()
    got[3] = [1, 0, 0, 0.5]
    assert metrics.top1_agreement({"logits": ref}, {"logits": ref}) == 1.0
    assert metrics.top1_agreement({"logits": ref}, {"logits": got}) == 0.75


@pytest.mark.slow
def test_cli_export_then_auto_quantize_keeps_the_decisions(tmp_path, capsys, monkeypatch):
    """As a user would: `edgeq export kws`, .npz calibration files, `edgeq quantize --calib --auto`."""
    from edgeq.metrics import sqnr_db
    from ortutil import op_types

    spec = zoo.get("kws")
    fp32, out, calib = tmp_path / "kws.onnx", tmp_path / "kws.int8.onnx", tmp_path / "calib"
    cli_ok(["export", "kws", "-o", str(fp32)], capsys)
    calib.mkdir()
    for i, feed in enumerate(spec.calibration_data(36)):
        np.savez(calib / f"{i:03d}.npz", **feed)
    from edgeq.auto import latency
    from ortutil import int8_pays_timing

    monkeypatch.setattr(latency, "measure", int8_pays_timing)  # speed is bench/'s job; here fidelity and structure
    cli_ok(["quantize", str(fp32), "-o", str(out), "--calib", str(calib), "--auto", "-q"], capsys)
    model = onnx.load(out)
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(op_types(model))
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    assert sum(n.op_type == "Conv" and n.input[1] in dq for n in model.graph.node) >= 8  # of 10 Convs
    feeds, labels = spec.eval_data(240), spec.eval_labels(240)
    ref, got = first_output_stacked(fp32, feeds), first_output_stacked(out, feeds)
    # measured on 200: agreement 1.000, 36 dB, accuracy unchanged (ORT quantize_static: 1.000, 29 dB)
    assert metrics.top1_agreement({"logits": ref}, {"logits": got}) >= 0.97
    assert sqnr_db(ref, got) >= 28.0
    assert (got.argmax(1) == labels).mean() >= (ref.argmax(1) == labels).mean() - 0.02
