"""Auto with and without the knapsack's second candidate (edgeq/auto/knapsack.py), one run per model.

    .venv/bin/python bench/auto_knapsack.py --models ddddocr_rec,digits_resnet
    # a machine without the models' packages: the cases written by bench/realworld.py --make-bundle
    python3 bench/auto_knapsack.py --bundle DIR --models ddddocr_rec

Per model: auto's default answer without the candidate (as before it) and with it, each quantized
in this process from the same calibration samples; then fp32 and both answers timed interleaved
at 1 thread (``_timing.interleaved_ms``, median of ``--repeats`` rounds over 8 unseen feeds), and
both judged on the unseen samples (SQNR, worst sample, the task metric). Auto times where it
runs, so its choices are this CPU's: run it on the machine the models are for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _answer(path: str, calib: list, knapsack: bool, out: str) -> dict:
    import edgeq
    from edgeq.auto import search

    saved = search.by_time
    if not knapsack:
        search.by_time = lambda *a, **k: None
    try:
        began = time.perf_counter()
        result = edgeq.quantize(path, None, calib, progress=False)
        seconds = time.perf_counter() - began
    finally:
        search.by_time = saved
    result.save(out)
    auto = result.report.get("auto", {})
    chosen = auto.get("chosen") or "fp32"
    return {"path": out, "seconds": round(seconds, 1), "chosen": str(chosen), "verdict": auto.get("verdict", "")}


def run_model(name: str, args) -> dict:
    import _timing
    from generalization import _run, make_case, sqnr_figures, task_metric
    from realworld import load_bundled

    case = load_bundled(name, args.bundle) if args.bundle else make_case(name, args)
    folder = os.path.join(args.workdir, name)
    os.makedirs(folder, exist_ok=True)
    row = {"model": name, "calib": len(case.calib), "unseen": len(case.unseen)}
    answers = {label: _answer(case.path, case.calib, label != "before", os.path.join(folder, f"{label[:6]}.onnx"))
               for label in ("before", "with knapsack") if label.split()[0] in args.variants.split(",")}
    models = {}  # each file read once: judged, then timed
    for label, path in {"fp32": case.path, **{k: a["path"] for k, a in answers.items()}}.items():
        with open(path, "rb") as f:
            models[label] = f.read()
    ref = _run(models["fp32"], case.unseen)
    for label, a in answers.items():
        got = _run(models[label], case.unseen)
        a["sqnr"] = sqnr_figures(ref, got)
        a["task"] = task_metric(case.task, ref, got)
    ms = _timing.interleaved_ms(models, case.unseen[:8], runs=None, repeats=args.repeats, warmup=2, threads=1)
    for label, a in answers.items():
        a["ms"], a["speedup"] = ms[label], ms["fp32"] / ms[label]
    row.update(fp32_ms=ms["fp32"], answers=answers)
    print(json.dumps(row, default=str), flush=True)
    return row


def to_markdown(rows: list[dict], command: str, machine: str) -> str:
    lines = [f"`{command}` ({machine})", "",
             "| model | auto | answer | x fp32, 1 thread | SQNR unseen dB (worst) | task metric, unseen | quantize s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for label, a in r["answers"].items():
            s = a["sqnr"]
            lines.append(f"| {r['model']} | {label} | {a['chosen']} | {a['speedup']:.2f}x ({a['ms']:.2f} ms) | "
                         f"{s['sqnr']:.1f} ({s['worst']:.1f}) | {a['task']['text']} | {a['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ddddocr_rec")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--variants", default="before,with", help="before, with (the knapsack), or both")
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "auto_knapsack"))
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    from realworld import _cpu_name

    rows = [run_model(name, args) for name in args.models.split(",")]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, default=str)
    print(to_markdown(rows, "bench/auto_knapsack.py " + " ".join(argv or sys.argv[1:]), _cpu_name()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
