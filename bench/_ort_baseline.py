"""onnxruntime.quantization as a baseline: its best default-ish configuration, failures recorded.

    from _ort_baseline import ort_quantize
    runs = ort_quantize("model.onnx", calib_feeds, workdir, check_feed=feeds[0])
    # [OrtRun(label="ORT static", path=..., seconds=..., error=None, note="after quant_pre_process"), ...]

What is run, as onnxruntime's documentation recommends for CPU: ``quant_pre_process`` (shape
inference and graph optimization; when it fails, the raw model is used and the note says so),
then ``quantize_static`` in QDQ format, MinMax calibration, per-channel int8 weights, uint8
activations. When static quantization crashes or its result does not load or run, or when
``dynamic`` is ``"always"`` (or ``"auto"`` and the model has no Conv: onnxruntime advises dynamic
quantization for transformers and RNNs), ``quantize_dynamic`` (int8 weights) runs too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["OrtRun", "ort_quantize", "first_line"]

Feeds = Sequence[dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class OrtRun:
    """One onnxruntime.quantization result: a model file, or the error that stopped it."""

    label: str
    path: str | None
    seconds: float | None
    error: str | None = None
    note: str = ""


def first_line(e: BaseException) -> str:
    """``Type: message`` on one line, onnxruntime's node dump trimmed, at most 160 characters."""
    text = " ".join(str(e).split())
    text = text.replace("[ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. ", "")
    text = text.split(", Error ")[-1]
    return f"{type(e).__name__}: {text}"[:160]


class _Reader:
    def __init__(self, feeds: Feeds) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


@contextlib.contextmanager
def _quiet(workdir: str):
    """onnxruntime.quantization prints and logs a lot, and quant_pre_process leaves files in the
    current directory (external data, sym_shape_infer_temp.onnx): run it quietly in ``workdir``."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.chdir(workdir):
            yield
    finally:
        logging.disable(previous)


def _check(path: str, feed: dict[str, np.ndarray] | None) -> str | None:
    """None if onnxruntime loads the model and runs ``feed`` through it, else why not."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # the point of a baseline: record how it fails
        return "result does not load: " + first_line(e)
    if feed is not None:
        try:
            sess.run(None, dict(feed))
        except Exception as e:  # noqa: BLE001
            return "result does not run: " + first_line(e)
    return None


def _has_conv(path: str) -> bool:
    import onnx

    model = onnx.load(path, load_external_data=False)
    return any(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node)


def ort_quantize(path: str, calib: Feeds, workdir: str, *, dynamic: str = "auto",
                 check_feed: dict[str, np.ndarray] | None = None, stem: str = "model") -> list[OrtRun]:
    """Run onnxruntime.quantization on ``path`` (see the module docstring); results go to
    ``workdir`` as ``{stem}.ort_*.onnx``. ``dynamic``: "auto", "always", "fallback" or "never"."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path, workdir = os.path.abspath(path), os.path.abspath(workdir)
    pre = os.path.join(workdir, f"{stem}.ort_pre.onnx")
    before = set(os.listdir(workdir))
    t0 = time.perf_counter()
    try:
        with _quiet(workdir):
            quant_pre_process(path, pre)
        source, note = pre, "after quant_pre_process"
    except Exception as e:  # noqa: BLE001
        source, note = path, f"quant_pre_process failed ({first_line(e)}): raw model"
    for name in set(os.listdir(workdir)) - before:  # its scratch files (a MiniLM-sized .data each run)
        if name == "sym_shape_infer_temp.onnx" or (name.endswith(".data") and name.count("-") == 4):
            os.remove(os.path.join(workdir, name))
    pre_seconds = time.perf_counter() - t0 if source == pre else 0.0
    runs: list[OrtRun] = []
    out = os.path.join(workdir, f"{stem}.ort_static.onnx")
    t0 = time.perf_counter()
    try:
        with _quiet(workdir):
            quantize_static(source, out, _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        seconds = pre_seconds + time.perf_counter() - t0
        error = _check(out, check_feed)
    except Exception as e:  # noqa: BLE001
        seconds, error = None, "crashed: " + first_line(e)
    runs.append(OrtRun("ORT static", None if error else out, seconds, error, note))
    want_dynamic = {"always": True, "never": False, "fallback": error is not None,
                    "auto": error is not None or not _has_conv(path)}[dynamic]
    if want_dynamic:
        out = os.path.join(workdir, f"{stem}.ort_dynamic.onnx")
        t0 = time.perf_counter()
        try:
            with _quiet(workdir):
                quantize_dynamic(source, out, weight_type=QuantType.QInt8)
            seconds = pre_seconds + time.perf_counter() - t0
            error = _check(out, check_feed)
        except Exception as e:  # noqa: BLE001
            seconds, error = None, "crashed: " + first_line(e)
        runs.append(OrtRun("ORT dynamic", None if error else out, seconds, error, note))
    return runs
