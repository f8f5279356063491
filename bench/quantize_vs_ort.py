"""edgeq vs onnxruntime.quantization on the zoo models, with the same calibration and eval data.

    .venv/bin/python bench/quantize_vs_ort.py [--models digits_mobilenet,digits_resnet]
        [--calib 64] [--eval 200] [--repeats 3] [--out docs/benchmarks-quantize.md]

For every model: export fp32 (edgeq.exporter, else torch.onnx), then quantize it with each tool
in a fresh subprocess (quantize time = median of --repeats runs, peak RSS of that process), then
evaluate every model in this process: file size, fidelity vs fp32 on the eval data (SQNR and
cosine over all outputs, top-1 vs labels for classifiers; mean per-sample cosine and
nearest-neighbour agreement for embedding models), and latency on the CPU provider at 1 thread
(batch 1, runs of all models interleaved, median). Writes a Markdown table with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TOOLS = {
    "edgeq static minmax": ("edgeq", {"mode": "static", "method": "minmax"}),
    "edgeq static entropy": ("edgeq", {"mode": "static", "method": "entropy"}),
    "edgeq dynamic": ("edgeq", {"mode": "dynamic"}),
    "ORT static MinMax": ("ort", {"method": "MinMax"}),
    "ORT static Entropy": ("ort", {"method": "Entropy"}),
    "ORT static Percentile": ("ort", {"method": "Percentile"}),
    "ORT dynamic": ("ort_dynamic", {}),
}


# -- worker side: one quantization in a fresh process ---------------------------------------
def _peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it does not inherit the parent's peak
    through fork/exec on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_feeds(path: str) -> list[dict[str, np.ndarray]]:
    """Feeds saved by ``_save_feeds`` (keys ``index/input``)."""
    feeds: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            index, name = key.split("/", 1)
            feeds.setdefault(int(index), {})[name] = data[key]
    return [feeds[i] for i in sorted(feeds)]


def _save_feeds(path: str, feeds: list[dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{i}/{k}": v for i, feed in enumerate(feeds) for k, v in feed.items()})


def _worker(tool: str, options: dict, model: str, out: str, calib_path: str) -> dict:
    feeds = _load_feeds(calib_path) if tool != "ort_dynamic" and options.get("mode") != "dynamic" else None
    # each tool imports what it needs before the baseline, so "over imports" is the work's
    if tool == "edgeq":
        import edgeq.calibrate  # noqa: F401
        import edgeq.prepare  # noqa: F401
        import edgeq.quantizer  # noqa: F401
    else:
        import onnxruntime.quantization  # noqa: F401

    baseline = _peak_rss_mb()
    start = time.perf_counter()
    if tool == "edgeq":
        import edgeq

        result = edgeq.quantize(model, edgeq.QuantConfig(**options), feeds, progress=False)
        result.save(out)
    elif tool == "ort":
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(feeds)

            def get_next(self):
                return next(self.it, None)

        quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, options["method"]))
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(model, out, weight_type=QuantType.QInt8)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    return {"seconds": seconds, "peak_rss_mb": peak, "work_mb": peak - baseline}


# -- parent side -------------------------------------------------------------------------------
def _export(name: str, path: str) -> None:
    if os.path.exists(path):
        return
    try:
        from edgeq.exporter import export

        export(name, path)
        return
    except ImportError:
        pass
    import torch

    from edgeq import zoo

    spec = zoo.get(name)
    torch.onnx.export(spec.build(), spec.example_inputs(), path, input_names=list(spec.input_names),
                      output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes,
                      opset_version=17, dynamo=False)


def _quantize(label: str, model: str, out: str, name: str, args) -> dict:
    tool, options = TOOLS[label]
    runs = []
    for _ in range(args.repeats):
        calib = os.path.join(os.path.dirname(out), f"{name}.calib{args.calib}.npz")
        cmd = [sys.executable, __file__, "--worker", json.dumps([tool, options, model, out, calib])]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:160]}
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {key: float(np.median([r[key] for r in runs])) for key in ("seconds", "peak_rss_mb", "work_mb")}


def _outputs(path: str, feeds: list[dict]) -> list[np.ndarray]:
    from edgeq.report.evaluate import cpu_session

    sess = cpu_session(path, 1)
    return [sess.run(None, f)[0] for f in feeds]


def _fidelity(ref: list[np.ndarray], got: list[np.ndarray], labels, task: str) -> dict:
    from edgeq.metrics import cosine, sqnr_db

    r = np.concatenate([x.reshape(x.shape[0], -1) for x in ref])
    g = np.concatenate([x.reshape(x.shape[0], -1) for x in got])
    out = {"sqnr_db": sqnr_db(r, g), "cosine": cosine(r, g)}
    if labels is not None and task == "classification":
        out["top1"] = float(np.mean(np.argmax(g, -1) == np.asarray(labels)[: len(g)]))
    if task != "classification":
        rn = r / np.linalg.norm(r, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        out["mean_cosine"] = float(np.mean(np.sum(rn * gn, axis=1)))
        sr, sg = rn @ rn.T, gn @ gn.T
        np.fill_diagonal(sr, -np.inf)
        np.fill_diagonal(sg, -np.inf)
        out["nn_agreement"] = float(np.mean(np.argmax(sr, 1) == np.argmax(sg, 1)))
    return out


def run(args) -> str:
    from edgeq import zoo
    from edgeq.report.evaluate import cpu_session, median_latency_ms

    names = args.models.split(",") if args.models else [n for n in zoo.names() if zoo.get(n).task != "language_model"]
    folder = os.path.join(ROOT, "out", "bench", "quantize")
    os.makedirs(folder, exist_ok=True)
    lines = []
    for name in names:
        spec = zoo.get(name)
        fp32 = os.path.join(folder, f"{name}.fp32.onnx")
        _export(name, fp32)
        _save_feeds(os.path.join(folder, f"{name}.calib{args.calib}.npz"), spec.calibration_data(args.calib))
        feeds = spec.eval_data(args.eval)
        labels = spec.eval_labels(args.eval)
        ref = _outputs(fp32, feeds)
        rows = {"fp32": {"path": fp32, "size": os.path.getsize(fp32)}}
        if labels is not None and spec.task == "classification":
            rows["fp32"]["top1"] = float(np.mean(np.argmax(np.concatenate(ref), -1) == labels[: len(feeds)]))
        for label in [t for t in TOOLS if not args.tools or t in args.tools.split(",")]:
            out = os.path.join(folder, f"{name}.{label.replace(' ', '_')}.onnx")
            row = _quantize(label, fp32, out, name, args)
            if "error" not in row:
                row.update(path=out, size=os.path.getsize(out))
                row.update(_fidelity(ref, _outputs(out, feeds), labels, spec.task))
            rows[label] = row
            print(name, label, {k: v for k, v in row.items() if k != "path"}, flush=True)
        ok = [k for k, r in rows.items() if "path" in r]
        sessions = [cpu_session(rows[k]["path"], 1) for k in ok]
        lat = [median_latency_ms(sessions, feeds[0], runs=args.latency_runs, budget_s=60.0) for _ in range(3)]
        for i, k in enumerate(ok):
            rows[k]["latency_ms"] = float(np.median([run[i] for run in lat]))
        lines += _table(name, spec.task, rows)
    cmd = "python bench/quantize_vs_ort.py " + " ".join(sys.argv[1:])
    header = [
        "# edgeq vs onnxruntime.quantization", "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {os.cpu_count()} CPU cores (shared), onnxruntime {__import__('onnxruntime').__version__}, "
        f"CPU provider. Calibration: {args.calib} samples; evaluation: {args.eval} samples. Quantize time: median "
        f"of {args.repeats} run(s) in a fresh process, peak RSS of that process. Latency: batch 1, 1 thread, "
        f"median of 3 medians of up to {args.latency_runs} interleaved runs. Speed-up = fp32 latency / latency. "
        "RSS over imports: peak RSS minus the RSS after importing onnx, onnx_ir, onnxruntime and edgeq "
        "(what the quantization itself costs).", "",
    ]
    return "\n".join(header + lines) + "\n"


def _table(name: str, task: str, rows: dict) -> list[str]:
    fp32_ms = rows["fp32"].get("latency_ms")
    cls = task == "classification"
    head = ["tool", "quantize s", "peak RSS MB", "RSS over imports MB", "size KB", "SQNR dB", "cosine",
            "top-1" if cls else "mean cos", "" if cls else "NN agree", "latency ms", "speed-up"]
    head = [h for h in head if h]
    out = [f"## {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in rows.items():
        if "error" in r:
            out.append(f"| {label} | failed: {r['error']} |" + " |" * (len(head) - 2))
            continue
        cells = [label, f"{r['seconds']:.2f}" if "seconds" in r else "", f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "",
                 f"{r['work_mb']:.0f}" if "work_mb" in r else "",
                 f"{r['size'] / 1024:.0f}", f"{r['sqnr_db']:.1f}" if "sqnr_db" in r else "",
                 f"{r['cosine']:.5f}" if "cosine" in r else ""]
        if cls:
            cells.append(f"{r['top1']:.4f}" if "top1" in r else "")
        else:
            cells += [f"{r['mean_cosine']:.5f}" if "mean_cosine" in r else "",
                      f"{r['nn_agreement']:.3f}" if "nn_agreement" in r else ""]
        ms = r.get("latency_ms")
        cells += [f"{ms:.3f}" if ms else "", f"{fp32_ms / ms:.2f}x" if ms and fp32_ms else ""]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None)
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tools", default=None, help="comma-separated subset of: " + ", ".join(TOOLS))
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks-quantize.md"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*json.loads(args.worker))))
        return
    text = run(args)
    from edgeq.io import atomic_path

    with atomic_path(args.out) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
