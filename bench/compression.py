"""Smaller files (issue 17, first part): codebook weights (``--weights kmeans:N|uniform:N|pot``)
against fp32 and edgeq's int8, per model: file size, bits a weight, fidelity, latency, load time.

    .venv/bin/python bench/compression.py [--models digits_mobilenet,digits_resnet,kws,textdet,minilm]
        [--variants int8,"int4 (W4A8)",kmeans:4,...] [--rows ROWS.json] [--chart CHART.svg]
    .venv/bin/python bench/compression.py --render --rows ROWS.json --chart CHART.svg

Each model is ``bench/generalization.py``'s case (zoo models with their eval split, never
calibrated on). Variants: fp32 as exported; edgeq int8 (``--mode static``, the 32 calibration
feeds); edgeq int4 W4A8 (``--mode static --weights int4``: 4-bit Conv/MatMul/Gemm weights per
channel, int8 activations, int8 kernels); compress mode at kmeans 2/3/4/6 bits, uniform 4 bits
and pot (4-bit powers of two); compress mode with a size target (``--max-size 6x`` and ``8x``:
per-layer k-means widths, each layer's effect measured on the calibration feeds); auto mode
(its answer), with ``--max-size 4x`` (its fidelity promise, 30 dB, kept: ``auto/size_fit.py``),
and ``--max-size min`` (the smallest file that keeps the promise) at 30 dB and at
``--min-sqnr 20``; where a size breaks the promise the row gives auto's message, with the
smallest file found that keeps it. ``--variants``
picks some (fp32 always runs).
Fidelity on the unseen feeds against fp32: SQNR (all outputs, mean over samples), top-1
agreement (classifiers) or the worst embedding cosine (MiniLM). Latency: 1 thread, the median of
5 interleaved rounds over 8 unseen feeds, as a speed-up over fp32; load: seconds to create the
session (where the codebooks are folded back into weights). ``--chart``: every variant's file
size against its SQNR, each model's best trade-offs joined (``edgeq.report.frontier``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

VARIANTS = ["int8", "int4 (W4A8)", "kmeans:2", "kmeans:3", "kmeans:4", "uniform:4", "pot", "kmeans:6",
            "max-size 6x", "max-size 8x", "auto", "auto 4x", "auto min", "auto min 20dB"]


def _session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    start = time.perf_counter()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session, time.perf_counter() - start


def _fidelity(ref: list[list[np.ndarray]], got: list[list[np.ndarray]], task: str) -> tuple[float, str]:
    from edgeq.metrics import sqnr_db

    sqnr = statistics.mean(sqnr_db(np.concatenate([r.ravel() for r in a]), np.concatenate([g.ravel() for g in b]))
                           for a, b in zip(ref, got))
    if task == "argmax":
        agree = np.mean([np.argmax(a[0]) == np.argmax(b[0]) for a, b in zip(ref, got)])
        return sqnr, f"top-1 agreement {agree:.3f}"
    if task == "cosine":
        cos = min(float(a[0].ravel() @ b[0].ravel() / np.linalg.norm(a[0]) / np.linalg.norm(b[0])) for a, b in zip(ref, got))
        return sqnr, f"worst cosine {cos:.4f}"
    return sqnr, ""


def write_chart(rows: list[dict], path: str) -> None:
    """The size-vs-fidelity chart of ``rows`` (``edgeq.report.frontier``), as an SVG file."""
    from edgeq.report.frontier import frontier_chart

    series: dict[str, list[tuple[str, float, float]]] = {}
    for row in rows:
        if row["variant"] != "fp32":
            series.setdefault(row["model"], []).append((row["variant"], row["ratio"], row["sqnr"]))
    svg = frontier_chart(series, "File size vs fidelity (bench/compression.py)", "x smaller than the fp32 file",
                         "output SQNR on unseen inputs, dB")
    with open(path, "w", encoding="utf-8") as f:
        f.write(svg + "\n")


def main() -> None:
    from generalization import make_case

    import edgeq
    from edgeq.config import QuantConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="digits_mobilenet,digits_resnet,kws,textdet,minilm")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "generalization"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rows", default=None, help="JSON file the rows are written to (read with --render)")
    parser.add_argument("--chart", default=None, help="SVG file for the size-vs-fidelity chart")
    parser.add_argument("--render", action="store_true", help="only draw --chart from --rows")
    args = parser.parse_args()
    if args.render:
        if not (args.rows and args.chart):
            parser.error("--render needs --rows and --chart")
        with open(args.rows, encoding="utf-8") as f:
            write_chart(json.load(f), args.chart)
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {VARIANTS}")
    rows: list[dict] = []
    print("| model | variant | file KB (x smaller) | bits a weight | SQNR dB | task metric | speed vs fp32 | load s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        case = make_case(name, args)
        feeds = case.unseen
        with tempfile.TemporaryDirectory() as tmp:
            paths, bits = {"fp32": case.path}, {"fp32": "32"}
            for variant in variants:
                path = os.path.join(tmp, variant.replace(":", "").replace(" ", "_").replace("(", "").replace(")", "") + ".onnx")
                if variant == "int8":
                    result = edgeq.quantize(case.path, QuantConfig(mode="static"), case.calib, progress=False)
                elif variant == "int4 (W4A8)":
                    result = edgeq.quantize(case.path, QuantConfig(mode="static", weights="int4"), case.calib, progress=False)
                    bits[variant] = "4 (8: depthwise, first, last)"
                elif variant.startswith("auto"):  # auto's answer; with a size (and a promise), auto/size_fit.py
                    words = variant.split(" ")  # "auto", "auto 4x", "auto min", "auto min 20dB"
                    config = QuantConfig(mode="auto", max_size=words[1] if len(words) > 1 else None,
                                         **({"min_sqnr": float(words[2][:-2])} if len(words) > 2 else {}))
                    start = time.perf_counter()
                    try:
                        result = edgeq.quantize(case.path, config, case.calib, progress=False)
                    except edgeq.EdgeqError as e:  # a size out of reach, or one that breaks the promise: the row says so
                        print(f"| {name} | {variant} | {e} | | | | | |", flush=True)
                        continue
                    auto = result.report["auto"]
                    size = auto.get("size") or {}
                    chosen = "fp32" if auto["verdict"].startswith("fp32") else "int8"
                    widths = ", ".join(f"{n} {k}" for k, n in size.get("widths", {}).items())
                    bits[variant] = f"{chosen} answer{'; ' + widths if widths else ''} ({time.perf_counter() - start:.0f} s)"
                elif variant.startswith("max-size "):
                    config = QuantConfig(mode="compress", max_size=variant.split(" ")[1])
                    try:
                        result = edgeq.quantize(case.path, config, case.calib, progress=False)
                    except edgeq.UsageError as e:  # a limit no width meets: the row says so
                        print(f"| {name} | {variant} | {e} | | | | | |", flush=True)
                        continue
                    bits[variant] = f"{result.report['compress']['bits_per_weight']:.2f}"
                else:
                    result = edgeq.quantize(case.path, QuantConfig(mode="compress", weights=variant), progress=False)
                    bits[variant] = f"{result.report['compress']['bits_per_weight']:.2f}"
                result.save(path)
                paths[variant] = path
            sessions = {v: _session(p) for v, p in paths.items()}
            outputs = {v: [s.run(None, f) for f in feeds] for v, (s, _) in sessions.items()}
            rounds: dict[str, list[float]] = {v: [] for v in paths}
            for _ in range(5):
                for v, (s, _) in sessions.items():
                    start = time.perf_counter()
                    for f in feeds[:8]:
                        s.run(None, f)
                    rounds[v].append(time.perf_counter() - start)
            size0 = os.path.getsize(case.path)
            for v, p in paths.items():
                size = os.path.getsize(p)
                sqnr, task = (float("inf"), "") if v == "fp32" else _fidelity(outputs["fp32"], outputs[v], case.task)
                speed = statistics.median(rounds["fp32"]) / statistics.median(rounds[v])
                rows.append({"model": name, "variant": v, "kb": size / 1e3, "ratio": size0 / size,
                             "bits": bits.get(v, "8 (int8)"), "sqnr": sqnr, "task": task, "speed": speed,
                             "load_s": sessions[v][1]})
                shown = "exact" if v == "fp32" else f"{sqnr:.1f}"
                print(f"| {name} | {v} | {size / 1e3:.0f} ({size0 / size:.2f}x) | {bits.get(v, '8 (int8)')} | {shown} | "
                      f"{task} | {speed:.2f}x | {sessions[v][1]:.2f} |", flush=True)
    if args.rows:
        with open(args.rows, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    if args.chart:
        write_chart(rows, args.chart)


if __name__ == "__main__":
    main()
