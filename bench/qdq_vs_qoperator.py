"""QDQ vs QOperator (integer-only) latency on onnxruntime's CPU provider at 1 thread.

    .venv/bin/python bench/qdq_vs_qoperator.py --models digits_mobilenet digits_resnet \
        mobilenet224 resnet224 --runs 20 --repeats 5 --write docs/integer-only.md

For every zoo model: export fp32 (torch.onnx, TorchScript, opset 17), quantize it with
``edgeq.quantize`` twice (format qdq; format qoperator with integer_only), and once with
``onnxruntime.quantization.quantize_static(quant_format=QOperator, per_channel=True)`` on the
same calibration feeds (its result or its exception is recorded). Latency: one session per
model (1 intra-op thread, sequential), 5 warm-up runs, then ``--repeats`` timings (interleaved
across the variants) of at least ``--runs`` inferences and 0.25 s each; the table gives the
median per-inference time. Also: float islands left, top-1
agreement QOperator vs QDQ on the model's eval data, and the integer reference's agreement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MARK_BEGIN = "<!-- bench:qdq_vs_qoperator:begin -->"
MARK_END = "<!-- bench:qdq_vs_qoperator:end -->"


def _export(name: str, path: str) -> None:
    import torch

    from edgeq import zoo

    spec = zoo.get(name)
    torch.onnx.export(spec.build(), spec.example_inputs(), path, input_names=list(spec.input_names),
                      output_names=list(spec.output_names), opset_version=17, dynamo=False)


def _session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _latencies_ms(models: dict[str, bytes], feed: dict, runs: int, repeats: int,
                  min_seconds: float = 0.25) -> dict[str, float]:
    """Median per-inference ms of each model. A timing is at least ``runs`` inferences and at
    least ``min_seconds`` long; repeats interleave the models so that load from other processes
    hits them alike."""
    sessions = {k: _session(v) for k, v in models.items()}
    counts = {}
    for key, sess in sessions.items():
        start = time.perf_counter()
        for _ in range(5):
            sess.run(None, feed)
        per_run = (time.perf_counter() - start) / 5
        counts[key] = max(runs, int(min_seconds / max(per_run, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for key, sess in sessions.items():
            start = time.perf_counter()
            for _ in range(counts[key]):
                sess.run(None, feed)
            times[key].append((time.perf_counter() - start) / counts[key] * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def _ort_qoperator(fp32: str, out: str, calib: list[dict]) -> str | None:
    """ORT's own QOperator quantization; None when it worked, else the error it raised."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    try:
        quantize_static(fp32, out, Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return None
    except Exception as e:  # recorded in the table, as found
        return f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"


def _ort_sensitivity(model, feed: dict, share: float = 1e-4, seed: int = 0) -> float | None:
    """A control for the end-to-end column: onnxruntime against itself when 1-LSB changes
    hit ``share`` of the quantized input. Share of the last integer tensor within 1 LSB."""
    import onnx
    import onnx_ir as ir

    from edgeq.reference.agreement import _ort_values

    proto = ir.to_proto(model)
    graph = proto.graph
    first = graph.node[0]
    last = next((n for n in reversed(graph.node) if n.op_type in ("DequantizeLinear", "QGemm")), None)
    if first.op_type != "QuantizeLinear" or len(graph.input) != 1 or last is None:
        return None
    values = _ort_values(proto, {first.output[0]: 2, last.input[0]: 2}, feed)
    xq, base = values[first.output[0]], values[last.input[0]]
    info = np.iinfo(xq.dtype)
    elem = onnx.helper.np_dtype_to_tensor_dtype(xq.dtype)
    graph.input[0].CopyFrom(onnx.helper.make_tensor_value_info(first.output[0], elem, list(xq.shape)))
    del graph.node[0]
    rng = np.random.default_rng(seed)
    x = xq.astype(np.int64)
    mask = rng.random(x.shape) < share
    x[mask] += rng.choice([-1, 1], int(mask.sum()))
    x = np.clip(x, info.min, info.max).astype(xq.dtype)
    out = _ort_values(proto, {last.input[0]: elem}, {first.output[0]: x})[last.input[0]]
    return float((np.abs(out.astype(np.int64) - base.astype(np.int64)) <= 1).mean())


def bench_model(name: str, args, tmp: str) -> dict:
    import onnx_ir as ir

    from edgeq import zoo
    from edgeq.config import QuantConfig
    from edgeq.quantizer import quantize
    from edgeq.reference import agreement

    spec = zoo.get(name)
    fp32 = os.path.join(tmp, f"{name}.onnx")
    _export(name, fp32)
    calib = spec.calibration_data(args.calib)
    qdq = quantize(fp32, QuantConfig(), calib, progress=False).model
    result = quantize(fp32, QuantConfig(format="qoperator", integer_only=True), calib, progress=False)
    section = result.report["qoperator"]
    qdq_bytes = ir.to_proto(qdq).SerializeToString()
    qop_bytes = ir.to_proto(result.model).SerializeToString()
    ort_out = os.path.join(tmp, f"{name}.ort_qop.onnx")
    ort_error = _ort_qoperator(fp32, ort_out, spec.calibration_data(args.calib))
    feeds = spec.eval_data(args.eval)
    feed = feeds[0]
    models = {"fp32": open(fp32, "rb").read(), "qdq": qdq_bytes, "qop": qop_bytes}
    if not ort_error:
        models["ort_qop"] = open(ort_out, "rb").read()
    ms = _latencies_ms(models, feed, args.runs, args.repeats)
    row = {
        "model": name,
        "fp32_ms": ms["fp32"],
        "qdq_ms": ms["qdq"],
        "qop_ms": ms["qop"],
        "ort_qop_ms": ms.get("ort_qop"),
        "ort_error": ort_error,
        "islands": len(section["float_islands"]),
        "rewritten": len(section["rewritten"]),
    }
    s_qdq, s_qop = _session(qdq_bytes), _session(qop_bytes)
    top_qdq = [s_qdq.run(None, f)[0].argmax(-1) for f in feeds]
    top_qop = [s_qop.run(None, f)[0].argmax(-1) for f in feeds]
    row["top1_agree"] = float(np.mean([np.array_equal(a, b) for a, b in zip(top_qdq, top_qop)]))
    if not section["float_islands"] and args.reference:
        sample = feeds[: args.reference]
        for rounding in ("double", "single"):
            row[rounding] = agreement(result.model, sample, rounding)
        row["ort_flips"] = _ort_sensitivity(result.model, feed)
    return row


def table(rows: list[dict], command: str) -> str:
    lines = [
        MARK_BEGIN,
        f"Command: `{command}`",
        "",
        "| model | fp32 ms | edgeq QDQ ms | edgeq QOperator ms | QOperator vs QDQ | ORT QOperator ms "
        "| float islands | top-1 QOperator = QDQ | reference vs ORT within 1 LSB: worst op "
        "(double / single rounding) | end to end (double / single) "
        "| control: ORT vs ORT, 0.01% input LSB flips |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ort = f"{r['ort_qop_ms']:.2f}" if r["ort_qop_ms"] is not None else f"fails: `{r['ort_error']}`"
        per_op = end = flips = "-"
        if "double" in r:
            d, s = r["double"], r["single"]
            per_op = f"{d['per_op_worst']:.3%} / {s['per_op_worst']:.3%}"
            end = f"{d['end_to_end']:.2%} / {s['end_to_end']:.2%}"
            flips = "-" if r.get("ort_flips") is None else f"{r['ort_flips']:.2%}"
        lines.append(
            f"| {r['model']} | {r['fp32_ms']:.2f} | {r['qdq_ms']:.2f} | {r['qop_ms']:.2f} "
            f"| {r['qdq_ms'] / r['qop_ms']:.2f}x | {ort} | {r['islands']} | {r['top1_agree']:.0%} "
            f"| {per_op} | {end} | {flips} |"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines += ["", f"Median per-inference latency, batch 1, CPU provider, 1 thread; {os.cpu_count()} "
              f"CPU cores, load average {load:.1f} at the end of the run.", MARK_END]
    return "\n".join(lines)


def _write(path: str, text: str) -> None:
    from edgeq.io import atomic_path

    old = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if MARK_BEGIN in old and MARK_END in old:
        new = old[: old.index(MARK_BEGIN)] + text + old[old.index(MARK_END) + len(MARK_END):]
    else:
        new = old + ("\n" if old else "") + text + "\n"
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits_mobilenet", "digits_resnet"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--eval", type=int, default=50)
    parser.add_argument("--reference", type=int, default=2, help="eval samples compared with the reference")
    parser.add_argument("--write", help="Markdown file to update between the bench markers")
    args = parser.parse_args()
    command = "python bench/qdq_vs_qoperator.py " + " ".join(sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.append(bench_model(name, args, tmp))
            print(rows[-1], flush=True)
    text = table(rows, command)
    print(text)
    if args.write:
        _write(args.write, text)


if __name__ == "__main__":
    main()
