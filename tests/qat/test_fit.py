"""fit (mixed precision, validation, refusals) and the zoo recipe: QAT recovers what 4-bit PTQ loses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeq.errors import UsageError
from edgeq.qat import QATConfig, prepare
from edgeq.qat.fit import fit

sys.path.insert(0, os.path.dirname(__file__))
from test_module import _feeds, _net  # noqa: E402


@pytest.fixture(scope="module")
def data():
    net = _net()
    feeds = _feeds(48, 5)
    with torch.no_grad():
        targets = [net(torch.from_numpy(f["x"])) for f in feeds]
    batches = [({"x": torch.from_numpy(np.concatenate([f["x"] for f in feeds[i:i + 8]]))},
                torch.cat(targets[i:i + 8])) for i in range(0, 48, 8)]
    return batches


def _mse(out, target):
    return torch.mean((out.float() - target) ** 2)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_quantizers_float32(data, amp):
    qat = prepare(_net(), (torch.randn(1, 3, 16, 16),), calib=_feeds(16, 0), config=QATConfig(weight_bits=4))
    before = {k: v.detach().clone() for k, v in qat.state_dict().items()}
    seen = []
    hook = next(iter(qat.quants.values())).register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    history = fit(qat, data, _mse, epochs=2, amp=amp, progress=False)
    hook.remove()
    assert history.amp == amp and history.steps == 12 and all(np.isfinite(history.losses))
    assert set(seen) == {torch.float32}
    moved = [k for k, v in qat.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert len(moved) >= 8  # weights and scales trained under autocast


def test_validation_keeps_the_untrained_model_when_training_only_hurts(data):
    qat = prepare(_net(), (torch.randn(1, 3, 16, 16),), calib=_feeds(16, 0))
    before = {k: v.detach().clone() for k, v in qat.state_dict().items()}

    def worse_each_step(out, target):  # pushes outputs away from the target
        return -_mse(out, target)

    history = fit(qat, data, worse_each_step, epochs=2, step_lr=1.0, progress=False,
                  validate=lambda m: -float(sum(_mse(m(**x), t) for x, t in data)))
    assert history.best_epoch == 0 and history.scores[0] > max(history.scores[1:])
    assert all(torch.equal(v, before[k]) for k, v in qat.state_dict().items())


def test_fit_refuses_what_it_cannot_do(data):
    qat = prepare(_net(), (torch.randn(1, 3, 16, 16),), calib=_feeds(16, 0))
    with pytest.raises(UsageError, match="amp='int8'"):
        fit(qat, data, _mse, amp="int8", progress=False)
    with pytest.raises(UsageError, match="epochs=0"):
        fit(qat, data, _mse, epochs=0, progress=False)
    with pytest.raises(UsageError, match="loss is nan"):
        fit(qat, data, lambda out, target: out.sum() * float("nan"), progress=False)


def test_qat_recovers_what_int4_ptq_loses_on_digits(tmp_path):
    """Trained weights (zoo digits_mobilenet), 4-bit: PTQ loses over 15 dB against fp32; two epochs
    of QAT gain back at least 3 dB on held-out digits and keep top-1 within half a point of fp32."""
    from edgeq.qat.zoo_recipe import qat_zoo

    summary = qat_zoo("digits_mobilenet", str(tmp_path / "w4.onnx"), epochs=2, config=QATConfig(weight_bits=4),
                      samples=512, eval_samples=200, progress=False)
    assert summary["ptq"]["sqnr_db"] < 20
    assert summary["qat"]["sqnr_db"] > summary["ptq"]["sqnr_db"] + 3
    assert summary["qat"]["top1"] >= summary["fp32"]["top1"] - 0.005
    assert summary["export_check"]["within_one_step"] >= 0.999
    assert summary["best_epoch"] >= 1


def test_cli_trains_a_zoo_model_and_writes_the_report(tmp_path):
    out, report = tmp_path / "kws.qat.onnx", tmp_path / "kws.json"
    proc = subprocess.run([sys.executable, "-m", "edgeq", "qat", "kws", "-o", str(out), "--epochs", "1",
                           "--samples", "64", "--eval-samples", "16", "-q", "--report", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "QAT" in proc.stdout and "export check" in proc.stdout
    summary = json.loads(report.read_text())
    assert summary["qat"]["sqnr_db"] > 25 and summary["samples"] == 64
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(out)).graph.node)
    del session


def test_cli_trains_an_onnx_file_on_unlabeled_inputs(tmp_path):
    from edgeq.qat.prepare import prepare as prepare_qat

    qat = prepare_qat(_net(), (torch.randn(1, 3, 16, 16),), calib=_feeds(16, 0))
    import onnx_ir as ir

    ir.save(qat.float_model, str(tmp_path / "net.onnx"))
    (tmp_path / "calib").mkdir()
    for i, feed in enumerate(_feeds(40, 7)):
        np.savez(tmp_path / "calib" / f"{i:03d}.npz", **feed)
    out, report = tmp_path / "net.qat.onnx", tmp_path / "net.json"
    proc = subprocess.run([sys.executable, "-m", "edgeq", "qat", str(tmp_path / "net.onnx"), "-o", str(out),
                           "--calib", str(tmp_path / "calib"), "--epochs", "2", "--batch", "8", "-q",
                           "--report", str(report)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(report.read_text())
    assert summary["samples"] == 32 and summary["eval_samples"] == 8  # a fifth held out to judge
    assert summary["qat"]["sqnr_db"] >= summary["ptq"]["sqnr_db"] - 1.0 and out.is_file()


@pytest.mark.parametrize("argv, expected", [
    (["qat", "no_such_model", "-o", "{d}/x.onnx"], "no_such_model"),
    (["qat", "{d}/model.onnx", "-o", "{d}/x.onnx"], "give its training inputs with --calib"),
    (["qat", "kws", "-o", "{d}/x.onnx", "--calib", "{d}"], "brings its own data"),
    (["qat", "kws", "-o", "{d}/x.onnx", "--device", "tpu"], "choose cpu, cuda or cuda:N"),
    pytest.param(["qat", "kws", "-o", "{d}/x.onnx", "--device", "cuda"], "sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_cli_mistakes_are_one_line_and_exit_2(tmp_path, argv, expected):
    argv = [a.format(d=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "edgeq", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: ") and expected in lines[0], proc.stderr


def test_float_parameters_move_less_with_8_bit_weights(data):
    """``fit``'s default learning rate for float parameters (biases, layers left float): 1e-5 with
    8-bit weights, 1e-4 with 4-bit ones and for any other module (docs/qat.md); an explicit ``lr``
    wins. Read from the optimizer ``fit`` builds (its last group: the float parameters)."""
    import importlib

    fit_module = importlib.import_module("edgeq.qat.fit")  # (edgeq.qat.fit is also the function)

    made = []
    real = torch.optim.Adam

    def recording(groups, *a, **k):
        made.append([g["lr"] for g in groups])
        return real(groups, *a, **k)

    eight = prepare(_net(), (torch.randn(1, 3, 16, 16),), calib=_feeds(16, 0))
    four = prepare(_net(), (torch.randn(1, 3, 16, 16),), calib=_feeds(16, 0), config=QATConfig(weight_bits=4))
    assert fit_module.float_lr(eight) == 1e-5 and fit_module.float_lr(four) == 1e-4
    assert fit_module.float_lr(torch.nn.Linear(2, 2)) == 1e-4
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fit_module.torch.optim, "Adam", recording)
        fit(eight, data[:1], _mse, epochs=1, progress=False)
        fit(four, data[:1], _mse, epochs=1, progress=False)
        fit(eight, data[:1], _mse, epochs=1, lr=3e-4, progress=False)
    assert [m[-1] for m in made] == [1e-5, 1e-4, 3e-4]


def test_clear_gain_asks_for_more_than_the_held_out_spread():
    from edgeq.qat.zoo_recipe import clear_gain, noise_per_input

    before = np.full(10, 1e-3)
    assert clear_gain(before, before / 2)[0]  # 3 dB on every input
    mixed = before * np.array([0.3, 3.0, 0.4, 2.5, 0.5, 2.0, 0.3, 3.0, 0.6, 1.8])  # some better, some worse
    kept, mean, error = clear_gain(before, mixed)
    assert not kept and error > 1.0
    assert not clear_gain(before[:1], before[:1] / 2)[0]  # one input: no spread to judge by
    from edgeq.qat.zoo_recipe import t_critical

    for df, table in ((3, 2.353), (9, 1.833), (30, 1.697), (120, 1.658)):  # Student's t, one-sided 5%
        assert abs(t_critical(df) - table) < 0.01
    teacher = [[np.ones(4), np.full(2, 10.0)], [np.ones(4), np.full(2, 10.0)]]
    outputs = [[np.ones(4) * 1.1, np.full(2, 10.0)], [np.ones(4), np.full(2, 11.0)]]
    # each output's error relative to its own energy: 4 * 0.01 / 4 and 2 * 1 / 200
    np.testing.assert_allclose(noise_per_input(outputs, teacher), [0.01, 0.01])


def test_a_trained_model_is_kept_only_for_a_clear_gain(tmp_path, monkeypatch):
    """4-bit weights, where training gains clearly: the trained model is kept. Asked for a gain no
    training can show (GAIN_Z huge), the same run returns the untrained model, edgeq's PTQ."""
    import onnx_ir as ir

    from edgeq.qat import zoo_recipe
    from edgeq.qat.prepare import prepare as prepare_qat

    qat = prepare_qat(_net(), (torch.randn(1, 3, 16, 16),), calib=_feeds(16, 0))
    ir.save(qat.float_model, str(tmp_path / "net.onnx"))
    train, unseen = _feeds(80, 7), _feeds(16, 9)
    runs = {}
    for label, z in (("default", zoo_recipe.GAIN_Z), ("never", 1e9)):
        monkeypatch.setattr(zoo_recipe, "GAIN_Z", z)
        runs[label] = zoo_recipe.distill(str(tmp_path / "net.onnx"), train, unseen, str(tmp_path / f"{label}.onnx"),
                                         epochs=3, batch=8, config=QATConfig(weight_bits=4), progress=False)
    kept, never = runs["default"], runs["never"]
    assert kept["gain_check"]["kept"] and kept["best_epoch"] >= 1 and kept["gain_check"]["mean_db"] > 0
    assert kept["qat"]["sqnr_db"] > kept["ptq"]["sqnr_db"]
    assert not never["gain_check"]["kept"] and never["gain_check"]["mean_db"] > 0  # the same gain, not enough
    assert never["best_epoch"] == 0 and never["qat"]["sqnr_db"] == never["ptq"]["sqnr_db"]
