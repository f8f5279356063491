"""textdet: the trained OCR text detector; its data, its metric, and `edgeq quantize --auto` on it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeq import zoo
from edgeq.cli.main import main
from edgeq.zoo import metrics, synth_text
from ortutil import cli_ok, first_output_stacked


def _int8_weight_convs(model: onnx.ModelProto) -> int:
    """Conv/ConvTranspose nodes whose weight comes from a DequantizeLinear of an int8 initializer."""
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    return sum(n.op_type in ("Conv", "ConvTranspose") and n.input[1] in dq for n in model.graph.node)


def test_checkpoint_finds_text_on_heldout_images():
    import torch

    spec = zoo.get("textdet")
    model = spec.build()
    assert not model.training
    assert 40_000 < sum(p.numel() for p in model.parameters()) < 100_000
    x = np.concatenate([f["input"] for f in spec.eval_data(64)])
    with torch.no_grad():
        prob = model(torch.from_numpy(x)).numpy()
    assert prob.shape == (64, 1, 128, 128) and 0 <= prob.min() and prob.max() <= 1
    truth = synth_text.eval_masks(64) > 0.5
    # training worked: the map at DBNet's 0.3 threshold covers the word boxes (0.76 when trained;
    # a map of all text scores the text fraction, about 0.1; all background scores 0)
    assert metrics.mask_iou(truth, prob > metrics.TEXT_THRESHOLD) >= 0.65
    # and is not just "anything dark": background pixels far from words stay low
    assert (prob[~truth] > 0.3).mean() < 0.05


def test_data_deterministic_and_masks_match_images():
    a, b = synth_text.calibration_data(3, seed=2), synth_text.calibration_data(3, seed=2)
    for fa, fb in zip(a, b):
        assert fa["input"].shape == (1, 3, 128, 128) and fa["input"].dtype == np.float32
        np.testing.assert_array_equal(fa["input"], fb["input"])
    ev = synth_text.eval_data(3, seed=2)
    assert not any(np.array_equal(x["input"], y["input"]) for x, y in zip(a, ev))
    longer = synth_text.eval_data(5, seed=2)  # a longer request extends a shorter one
    np.testing.assert_array_equal(ev[2]["input"], longer[2]["input"])
    masks = synth_text.eval_masks(40)
    assert set(np.unique(masks)) <= {0.0, 1.0} and 0.03 < masks.mean() < 0.3


def test_textmap_iou_metric():
    ref = np.zeros((2, 1, 8, 8), np.float32)
    ref[0, 0, :4, :4] = 0.9  # 16 text pixels
    got = ref.copy()
    got[0, 0, :4, :2] = 0.29  # 8 of them fall just under 0.3
    got[1, 0, 0, 0] = 0.31  # one false positive
    assert metrics.textmap_iou({"text_map": ref}, {"text_map": ref}) == 1.0
    assert metrics.textmap_iou({"text_map": ref}, {"text_map": got}) == pytest.approx(8 / 17)
    assert metrics.textmap_iou({"m": np.zeros(4)}, {"m": np.zeros(4)}) == 1.0  # nothing detected by either


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`edgeq export textdet` and 32 calibration .npz files, as a user would make them."""
    folder = tmp_path_factory.mktemp("textdet")
    fp32, calib = folder / "textdet.onnx", folder / "calib"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "textdet", "-o", str(fp32)])
    assert exit_info.value.code == 0
    calib.mkdir()
    for i, feed in enumerate(zoo.get("textdet").calibration_data(32)):
        np.savez(calib / f"{i:03d}.npz", **feed)
    return fp32, calib


@pytest.mark.slow
def test_cli_export_then_auto_quantize_keeps_the_text_map(exported, tmp_path, capsys, monkeypatch):
    """As a user would: `edgeq export textdet`, .npz calibration files, `edgeq quantize --calib --auto`."""
    from edgeq.metrics import sqnr_db
    from ortutil import op_types

    fp32, calib = exported
    out = tmp_path / "textdet.int8.onnx"
    from edgeq.auto import latency
    from ortutil import int8_pays_timing

    monkeypatch.setattr(latency, "measure", int8_pays_timing)  # speed is bench/'s job; here fidelity and structure
    text = cli_ok(["quantize", str(fp32), "-o", str(out), "--calib", str(calib), "--auto", "-q"], capsys)
    assert "wrote" in text
    model = onnx.load(out)
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(op_types(model))
    # of 38 Conv/ConvTranspose, 15 run int8 (float: the 8 squeeze-excite 1x1 Convs on 1x1 maps,
    # depthwise convs isolated between Hardswish, the ConvTranspose head)
    assert _int8_weight_convs(model) >= 12
    feeds = zoo.get("textdet").eval_data(48)
    ref, got = first_output_stacked(fp32, feeds), first_output_stacked(out, feeds)
    # measured on 200 held-out images with 64 calibration files: IoU@0.3 0.989, 32 dB
    # (onnxruntime.quantization quantize_static per-channel: 0.986, 30 dB)
    assert metrics.textmap_iou({"text_map": ref}, {"text_map": got}) >= 0.95
    assert sqnr_db(ref, got) >= 25.0


def _squeeze_excite_convs(model: onnx.ModelProto) -> list[str]:
    """The 1x1 Convs of the squeeze-excite blocks: they read a globally pooled (one value per
    channel per image) tensor, or feed the Hardsigmoid gate."""
    gates = {n.input[0] for n in model.graph.node if n.op_type == "HardSigmoid"}
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and (n.input[0].startswith("as_strided") or n.output[0] in gates)]


def _few_samples_sqnr(fp32, calib, tmp_path, capsys, extra: list[str]) -> float:
    from edgeq.metrics import sqnr_db

    out = tmp_path / "few.onnx"
    cli_ok(["quantize", str(fp32), "-o", str(out), "--calib", str(calib), "--max-samples", "12", "--mode", "static",
          "-q", *extra], capsys)
    feeds = zoo.get("textdet").eval_data(96)
    return sqnr_db(first_output_stacked(fp32, feeds), first_output_stacked(out, feeds))


def test_few_calibration_images_and_squeeze_excite(exported, tmp_path, capsys):
    """With 12 calibration images, keeping the 8 squeeze-excite 1x1 Convs float restores the
    held-out SQNR (measured 32.4 dB vs 22.5 dB with them int8)."""
    fp32, calib = exported
    se = _squeeze_excite_convs(onnx.load(fp32))
    assert len(se) == 8
    assert _few_samples_sqnr(fp32, calib, tmp_path, capsys, [f"--exclude={n}" for n in se]) >= 28.0


def test_few_calibration_images_default(exported, tmp_path, capsys):
    """The selector keeps those Convs on 1x1 maps float by itself (rule 9 of passes/select.py)."""
    fp32, calib = exported
    assert _few_samples_sqnr(fp32, calib, tmp_path, capsys, []) >= 28.0
