"""edgeq auto vs uniform int8 (edgeq static) vs fp32 on the zoo models.

    .venv/bin/python bench/auto_vs_uniform.py [--models digits_mobilenet,digits_resnet,mobilenet224,tiny_transformer]
        [--calib 32] [--eval 100] [--min-sqnr 30] [--extra mobilenet224:15] [--repeats 3] [--out docs/auto.md]

For every model: export fp32 (edgeq.exporter) once into --workdir; quantize it uniformly
(``edgeq.quantize``, static, min/max, every quantizable node int8) and with
``edgeq.auto.auto_quantize`` (target --min-sqnr; its search is scored on 16 calibration-split
samples it did not calibrate on, so the held-out eval data below stays unseen). Then, on the
held-out eval data: min output SQNR vs fp32, top-1 vs labels where the model has labels; and
1-thread latency on the CPU provider (batch 1, the three models' runs interleaved, median of
each run of --repeats, then the median of those). Writes a Markdown table with the command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BEGIN, END = "<!-- bench/auto_vs_uniform.py: begin -->", "<!-- bench/auto_vs_uniform.py: end -->"
DEFAULT_MODELS = "digits_mobilenet,digits_resnet,mobilenet224,tiny_transformer"


def _export(name: str, workdir: str) -> str:
    from edgeq.exporter import export

    path = os.path.join(workdir, f"{name}.onnx")
    if not os.path.exists(path):
        export(name, path)
    return path


def _outputs(data: bytes, feeds: list[dict]) -> list[np.ndarray]:
    from edgeq.report.evaluate import cpu_session

    sess = cpu_session(data, 1)
    outs = [sess.run(None, f) for f in feeds]
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


def _fidelity(ref: list[np.ndarray], got: list[np.ndarray], labels, classifier: bool) -> dict:
    from edgeq.report.metrics import sqnr_db

    sqnr = min(sqnr_db(r, g) for r, g in zip(ref, got) if r.dtype.kind == "f")
    out = {"sqnr": sqnr}
    if labels is not None:
        out["top1"] = float(np.mean(got[0].reshape(len(labels), -1).argmax(1) == labels))
    if classifier:
        out["agree"] = float(np.mean(got[0].argmax(-1) == ref[0].argmax(-1)))
    return out


def _int8_share(report: dict) -> str:
    if "auto" in report:
        layers = report["auto"]["layers"]
        return f"{sum(e['precision'] != 'fp32' for e in layers)}/{len(layers)}"
    return f"{report['summary']['int8_kernels']}/{report['summary']['int8_kernels'] + sum(1 for e in report['float'] if e['op'] in ('Conv', 'MatMul', 'Gemm'))}"


def run_model(name: str, args) -> list[dict]:
    import edgeq
    from edgeq.auto import auto_quantize
    from edgeq.auto.latency import measure
    from edgeq.auto.workbench import model_bytes_of
    from edgeq.config import QuantConfig
    from models import zoo

    spec = zoo.get(name)
    path = _export(name, args.workdir)
    calib = spec.calibration_data(args.calib)
    search_eval = spec.calibration_data(16, seed=1)
    evals = spec.eval_data(args.eval)
    labels = spec.eval_labels(args.eval) if spec.task == "classification" else None
    t0 = time.perf_counter()
    uniform = edgeq.quantize(path, QuantConfig(), calib, progress=False)
    t_uniform = time.perf_counter() - t0
    with open(path, "rb") as f:
        fp32 = f.read()
    models = {"fp32": fp32, "uniform int8": model_bytes_of(uniform.model)}
    autos, seconds = {}, {"uniform int8": t_uniform}
    for target in [args.min_sqnr, *args.extra.get(name, [])]:
        label = "auto" if target == args.min_sqnr else f"auto (target {target:g} dB)"
        t0 = time.perf_counter()
        autos[label] = auto_quantize(path, calib, eval_data=search_eval, min_sqnr=target, threads=1, progress=False)
        seconds[label] = time.perf_counter() - t0
        models[label] = model_bytes_of(autos[label].model)
    ref = _outputs(fp32, evals)
    rows = []
    medians: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.repeats):
        for k, v in measure(models, evals[0], threads=1, runs=args.runs, budget_s=30.0).items():
            medians[k].append(v)
    for label, data in models.items():
        fid = _fidelity(ref, ref if label == "fp32" else _outputs(data, evals), labels,
                        spec.task == "classification")
        report = {"uniform int8": uniform.report, **{k: a.report for k, a in autos.items()}}.get(label)
        rows.append({
            "model": name, "config": label, "sqnr": fid["sqnr"], "top1": fid.get("top1"), "agree": fid.get("agree"),
            "latency_ms": statistics.median(medians[label]),
            "int8": _int8_share(report) if report else "0",
            "seconds": seconds.get(label),
            "verdict": autos[label].report["auto"]["verdict"] if label in autos else "",
        })
    fp32_ms = rows[0]["latency_ms"]
    for row in rows:
        row["speedup"] = fp32_ms / row["latency_ms"]
    return rows


def to_markdown(rows: list[dict], command: str, args) -> str:
    lines = [
        "## Benchmark: auto vs uniform int8 vs fp32",
        "",
        "Per-layer precision chosen by measured error and measured speed (`edgeq.auto.auto_quantize`,",
        f"target: min output SQNR {args.min_sqnr} dB) against uniform int8 (`edgeq.quantize`, static",
        "min/max, every quantizable node int8) and the fp32 model. Held-out eval data "
        f"({args.eval} samples, never seen by calibration or by auto's search); latency: CPU provider,",
        f"1 thread, batch 1, runs interleaved, median of {args.repeats} medians.",
        "",
        "Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        "| model | configuration | min output SQNR (dB) | top-1 vs labels | top-1 agreement vs fp32 | "
        "latency 1 thread (ms) | vs fp32 | int8 layers | quantize time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sqnr = "exact" if r["sqnr"] == float("inf") else f"{r['sqnr']:.1f}"
        top1 = "n/a" if r["top1"] is None else f"{r['top1']:.3f}"
        agree = "n/a" if r["agree"] is None else f"{r['agree']:.3f}"
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"| {r['model']} | {r['config']} | {sqnr} | {top1} | {agree} | {r['latency_ms']:.3f} | "
                     f"{r['speedup']:.2f}x | {r['int8']} | {secs} |")
    lines += ["", "Auto's verdicts:", ""]
    lines += [f"- {r['model']}, {r['config']}: {r['verdict']}" for r in rows if r["verdict"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=100)
    parser.add_argument("--min-sqnr", type=float, default=30.0)
    parser.add_argument("--extra", default="", help="extra auto targets per model: name:dB[,name:dB]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "edgeq-bench-auto"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "auto.md"))
    args = parser.parse_args(argv)
    extra: dict[str, list[float]] = {}
    for item in filter(None, args.extra.split(",")):
        model, _, target = item.partition(":")
        extra.setdefault(model.strip(), []).append(float(target))
    args.extra = extra
    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows += run_model(name, args)
    command = ".venv/bin/python bench/auto_vs_uniform.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = to_markdown(rows, command.strip(), args)
    if args.out:
        from edgeq.io import atomic_path

        if os.path.exists(args.out):  # replace only the generated section of an existing page
            with open(args.out, encoding="utf-8") as f:
                page = f.read()
            if BEGIN in page and END in page:
                text = page[: page.index(BEGIN) + len(BEGIN)] + "\n" + text + page[page.index(END):]
        with atomic_path(args.out) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
