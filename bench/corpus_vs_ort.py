"""The robustness corpus through edgeq and through onnxruntime.quantization, side by side.

For every corpus model (tests/corpus/builders.py): onnxruntime's ``quant_pre_process``, then
``quantize_static`` (QDQ, per-channel, MinMax) on its output (or on the original when
pre-processing fails) and ``quantize_dynamic``; and ``edgeq.quantize`` static and dynamic.
For each result: did it crash, does it load in onnxruntime, the worst SQNR over held-out feeds
against fp32, and the share of Conv/MatMul/Gemm weight parameters stored in int8.

    .venv/bin/python bench/corpus_vs_ort.py [--out docs/benchmarks-corpus.md] [--models a,b]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import tempfile
import time

import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from corpus.builders import CORPUS  # noqa: E402

ORT_KEYS = ("static raw", "static pre", "dynamic raw", "dynamic pre")
WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1, "MatMulInteger": 1, "ConvInteger": 1}


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text.replace("[ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. ", "")
    text = text.split(", Error ")[-1]  # onnxruntime's node dump before the reason is long
    return f"{type(e).__name__}: {text}"[:160]


def int8_weight_share(model: onnx.ModelProto) -> float:
    """Share of parameters feeding Conv/MatMul/Gemm weight inputs (through DequantizeLinear)
    that are stored as int8/uint8 rather than float."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    int8 = total = 0
    for node in model.graph.node:
        index = WEIGHT_OPS.get(node.op_type)
        if index is None or len(node.input) <= index:
            continue
        name = node.input[index]
        producer = producers.get(name)
        # weight <- DequantizeLinear <- (QuantizeLinear at run time <-) stored tensor
        while producer is not None and producer.op_type in ("DequantizeLinear", "QuantizeLinear", "Identity"):
            name = producer.input[0]
            producer = producers.get(name)
        if name in inits:
            tensor = inits[name]
        elif producer is not None and producer.op_type == "Constant":
            tensor = producer.attribute[0].t
        else:
            continue  # activation x activation MatMul
        size = math.prod(tensor.dims)
        total += size
        if tensor.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            int8 += size
    for node in model.graph.node:  # DynamicQuantizeMatMul / MatMulIntegerToFloat keep B at index 1
        if node.op_type in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat") and node.input[1] in inits:
            size = math.prod(inits[node.input[1]].dims)
            total += size
            int8 += size
    return int8 / total if total else float("nan")


def evaluate(original: onnx.ModelProto, candidate: onnx.ModelProto | None, held_out) -> dict:
    from edgeq.metrics import sqnr_db

    if candidate is None:
        return {}
    try:
        sess_ref, sess = _session(original), _session(candidate)
    except Exception as e:  # onnxruntime refuses the model
        return {"loads": False, "error": _first_line(e)}
    worst = math.inf
    try:
        for feed in held_out:
            for want, got in zip(sess_ref.run(None, feed), sess.run(None, feed)):
                worst = min(worst, sqnr_db(want, got))
    except Exception as e:  # runtime failure on a feed
        return {"loads": True, "error": "run: " + _first_line(e)}
    return {"loads": True, "sqnr": worst, "int8": int8_weight_share(candidate)}


class _Reader:
    def __init__(self, feeds):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def _quiet():
    return contextlib.ExitStack() if os.environ.get("VERBOSE") else contextlib.redirect_stdout(io.StringIO())


def ort_runs(path: str, calib, tmp: str) -> dict[str, tuple[onnx.ModelProto | None, str]]:
    """quant_pre_process, then static and dynamic quantization on the raw and the
    pre-processed model (keys "pre_process", "static raw", "static pre", "dynamic raw", ...)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out: dict[str, tuple[onnx.ModelProto | None, str]] = {}
    pre = os.path.join(tmp, "pre.onnx")
    sources = {"raw": path}
    try:
        with _quiet():
            quant_pre_process(path, pre)
        out["pre_process"] = (onnx.load(pre), "ok")
        sources["pre"] = pre
    except Exception as e:  # the point of the benchmark: record how onnxruntime fails
        out["pre_process"] = (None, _first_line(e))
    for mode in ("static", "dynamic"):
        for kind in ("raw", "pre"):
            if kind not in sources:
                out[f"{mode} {kind}"] = (None, "no pre-processed model")
                continue
            dst = os.path.join(tmp, f"ort_{mode}_{kind}.onnx")
            t0 = time.perf_counter()
            try:
                with _quiet():
                    if mode == "static":
                        quantize_static(sources[kind], dst, _Reader(calib), quant_format=QuantFormat.QDQ,
                                        per_channel=True, activation_type=QuantType.QUInt8,
                                        weight_type=QuantType.QInt8)
                    else:
                        quantize_dynamic(sources[kind], dst, weight_type=QuantType.QInt8, per_channel=True)
                out[f"{mode} {kind}"] = (onnx.load(dst), f"{time.perf_counter() - t0:.2f}s")
            except Exception as e:  # crash of onnxruntime.quantization
                out[f"{mode} {kind}"] = (None, _first_line(e))
    return out


def edgeq_runs(path: str, calib) -> dict[str, tuple[onnx.ModelProto | None, str]]:
    import onnx_ir as ir

    import edgeq

    out: dict[str, tuple[onnx.ModelProto | None, str]] = {}
    for mode in ("static", "dynamic"):
        t0 = time.perf_counter()
        try:
            result = edgeq.quantize(path, edgeq.QuantConfig(mode=mode), calib if mode == "static" else None, progress=False)
            out[mode] = (ir.to_proto(result.model), f"{time.perf_counter() - t0:.2f}s")
        except Exception as e:  # record edgeq failures the same way
            out[mode] = (None, _first_line(e))
    return out


def _cell(status: str, metrics: dict) -> str:
    if not metrics:
        return f"crash: {status}"
    if not metrics.get("loads"):
        return f"result does not load: {metrics['error']}"
    if "error" in metrics:
        return metrics["error"]
    share = metrics["int8"]
    share_text = "n/a" if math.isnan(share) else f"{share:.0%}"
    return f"{metrics['sqnr']:.1f} dB, int8 weights {share_text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/benchmarks-corpus.md")
    parser.add_argument("--models", default=",".join(CORPUS))
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    rows = []
    for name in args.models.split(","):
        original, feeds_fn = CORPUS[name]()
        calib, held_out = feeds_fn(8, 0), feeds_fn(4, 100)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.onnx")
            onnx.save(original, path)
            with contextlib.chdir(tmp):  # quant_pre_process leaves scratch files in the working directory
                ort = ort_runs(path, calib, tmp)
            ours = edgeq_runs(path, calib)
        row = [name, "ok" if ort["pre_process"][0] is not None else ort["pre_process"][1]]
        for runs, keys in ((ort, ORT_KEYS), (ours, ("static", "dynamic"))):
            for key in keys:
                model, status = runs[key]
                if model is None and status == "no pre-processed model":
                    row.append("(pre-process failed)")
                    continue
                row.append(_cell(status, evaluate(original, model, held_out)))
        rows.append(row)
        print(" | ".join(row), flush=True)
    header = ["model", "ORT quant_pre_process", "ORT static, raw model", "ORT static, pre-processed",
              "ORT dynamic, raw model", "ORT dynamic, pre-processed", "edgeq static", "edgeq dynamic"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    import onnxruntime

    text = "\n".join(
        [
            "# The robustness corpus: edgeq vs onnxruntime.quantization",
            "",
            "Command: `.venv/bin/python bench/corpus_vs_ort.py` (onnxruntime "
            f"{onnxruntime.__version__}, onnx {onnx.__version__}; CPU provider, 1 thread).",
            "",
            "Each cell: worst SQNR over 4 held-out feeds against the fp32 model, and the share of "
            "Conv/MatMul/Gemm weight parameters of the main graph stored in int8 (0% means weights "
            "stayed float; LSTM weights and weights inside If/Loop bodies are not counted). "
            "Calibration: 8 feeds. onnxruntime.quantization runs on the raw model and on "
            "quant_pre_process's output (static: QDQ, per-channel, uint8 activations, MinMax; "
            "dynamic: per-channel int8). edgeq: defaults (static: QDQ per-channel uint8 MinMax; "
            "dynamic: MatMul/Gemm only, Conv stays float by design). "
            "Models: tests/corpus/builders.py.",
            "",
            *table,
            "",
        ]
    )
    from edgeq.io import atomic_path

    with atomic_path(args.out) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
