"""Per-token dynamic int8 MatMuls on MiniLM: fp32 vs dynamic per-tensor vs dynamic per-token vs auto.

    .venv/bin/python bench/per_token.py [--model minilm] [--calib 32] [--eval 96] [--seq 32 128]

The zoo model is exported with ``edgeq.exporter.export``; its calibration feeds go to auto, its
evaluation feeds (never seen by calibration) score every variant: SQNR and cosine of the output
against fp32, all samples stacked. Latency: onnxruntime CPU provider, 1 intra-op thread,
interleaved runs (``edgeq.auto.latency.measure``), the median of ``--repeats`` medians, on the
first evaluation feed padded with masked tokens to each ``--seq`` length (the zoo's MiniLM feeds
have 32 tokens). File size: the saved model (weights inside it).

Variants: ``QuantConfig(mode="dynamic")`` (DynamicQuantizeMatMul, one activation scale per tensor),
``dynamic_granularity="per-token"`` (passes/per_token.py; opset 18 as exported: the elementwise
front end), the same with ``opset=21`` (one blocked QuantizeLinear), and auto
(``edgeq.quantize(path, None, calib)``: per-token dynamic MatMuls where int8 misses the target,
and int8 per-token on its precision ladder), also with ``opset=21``.
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


def _pad(feed: dict[str, np.ndarray], seq: int) -> dict[str, np.ndarray]:
    """``feed`` with masked padding tokens (id 0, mask 0) up to ``seq`` tokens."""
    n = next(iter(feed.values())).shape[1]
    if seq <= n:
        return {k: v[:, :seq] for k, v in feed.items()}
    return {k: np.pad(v, ((0, 0), (0, seq - n))) for k, v in feed.items()}


def _outputs(path: str, feeds: list[dict]) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def _layers(report: dict) -> str:
    auto = report.get("auto")
    if not auto:
        return ""
    counts: dict[str, int] = {}
    for layer in auto["layers"]:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return ", ".join(f"{n} {p}" for p, n in counts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=96)
    parser.add_argument("--seq", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-auto", action="store_true")
    args = parser.parse_args()

    import edgeq
    from edgeq import QuantConfig
    from edgeq.auto.latency import measure
    from edgeq.exporter import export
    from edgeq.metrics import cosine, sqnr_db
    from edgeq.zoo import get

    spec = get(args.model)
    calib, evals = spec.calibration_data(args.calib), spec.eval_data(args.eval)
    work = tempfile.mkdtemp(prefix="per_token_")
    src = os.path.join(work, f"{args.model}.onnx")
    export(args.model, src)
    variants = {
        "dynamic per-tensor (DynamicQuantizeMatMul)": QuantConfig(mode="dynamic"),
        "dynamic per-token": QuantConfig(mode="dynamic", dynamic_granularity="per-token"),
        "dynamic per-token, opset 21": QuantConfig(mode="dynamic", dynamic_granularity="per-token", opset=21),
    }
    if not args.no_auto:
        variants["auto (default, 30 dB)"] = None
        variants["auto, opset 21"] = QuantConfig(mode="auto", opset=21)
    paths, notes, seconds = {"fp32": src}, {}, {}
    for label, config in variants.items():
        start = time.perf_counter()
        auto = config is None or config.mode == "auto"
        result = edgeq.quantize(src, config, calib if auto else None, progress=False)
        seconds[label] = time.perf_counter() - start
        paths[label] = os.path.join(work, f"v{len(paths)}.onnx")
        result.save(paths[label])
        notes[label] = _layers(result.report)
        if auto:
            notes[label] = f"{result.report['auto']['verdict']}; layers: {notes[label]}"
    ref = _outputs(src, evals)
    fidelity = {k: (sqnr_db(ref, out), cosine(ref, out)) for k, out in ((k, _outputs(p, evals)) for k, p in paths.items())}
    latency: dict[int, dict[str, float]] = {}
    for seq in args.seq:
        feed = _pad(evals[0], seq)
        models = {k: open(p, "rb").read() for k, p in paths.items()}
        runs = [measure(models, feed, threads=1, runs=40, budget_s=20.0) for _ in range(args.repeats)]
        latency[seq] = {k: statistics.median(r[k] for r in runs) for k in models}
    head = ["variant", *(f"{s} tokens: ms (vs fp32)" for s in args.seq), "SQNR vs fp32 (dB)", "cosine",
            "file (MB)", "size vs fp32", "quantize (s)"]
    print(f"{args.model}: {len(evals)} eval samples ({next(iter(evals[0].values())).shape[1]} tokens), "
          f"{len(calib)} calibration samples, onnxruntime CPU, 1 thread")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    fp32_size = os.path.getsize(src)
    for k, p in paths.items():
        times = [f"{latency[s][k]:.2f} ({latency[s]['fp32'] / latency[s][k]:.2f}x)" for s in args.seq]
        db, cos = fidelity[k]
        size = os.path.getsize(p)
        print(f"| {k} | " + " | ".join(times) + f" | {db:.1f} | {cos:.5f} | {size / 1e6:.1f} | "
              f"{fp32_size / size:.2f}x | {seconds.get(k, 0):.1f} |")
    for k, note in notes.items():
        if note:
            print(f"- {k}: {note}")


if __name__ == "__main__":
    main()
