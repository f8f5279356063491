"""Auto with its default task guard and with it off, judged on unseen data (issue 13: ddddocr_det).

    python3 bench/guard_onoff.py --bundle DIR [--models ddddocr_det] [--json OUT]

Per model (a case written by ``bench/realworld.py --make-bundle``): ``edgeq.quantize`` with
default options (auto: the score-map guard on for detectors, ``min_iou`` 0.95) and with
``min_iou=0`` (the guard off), both judged on the unseen samples (SQNR, the task metric of
``bench/generalization.py``) and timed against fp32 at 1 thread (interleaved, 5 rounds). Shows
whether the guard's estimate on the calibration samples turned away answers that keep the task
metric on new data. Auto times where it runs: run it on the CPU the model is for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    import _timing
    from generalization import _run, sqnr_figures, task_metric
    from realworld import load_bundled

    import edgeq

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--models", default="ddddocr_det")
    parser.add_argument("--json", default=None)
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "guard_onoff"))
    args = parser.parse_args()
    workdir = args.workdir
    os.makedirs(workdir, exist_ok=True)
    rows = {}
    for name in args.models.split(","):
        case = load_bundled(name, args.bundle)
        answers = {}
        for label, config in (("guard on", None), ("guard off", edgeq.QuantConfig(mode="auto", min_iou=0.0))):
            began = time.perf_counter()
            result = edgeq.quantize(case.path, config, case.calib, progress=False)
            path = os.path.join(workdir, f"{name}.{label.replace(' ', '_')}.onnx")
            result.save(path)
            auto = result.report.get("auto", {})
            answers[label] = {"path": path, "seconds": round(time.perf_counter() - began, 1),
                              "chosen": str(auto.get("chosen")), "verdict": str(auto.get("verdict", "")),
                              "gate": auto.get("gate")}
        models = {"fp32": open(case.path, "rb").read(), **{k: open(a["path"], "rb").read() for k, a in answers.items()}}
        ref = _run(models["fp32"], case.unseen)
        for label, a in answers.items():
            got = _run(models[label], case.unseen)
            a["sqnr"], a["task"] = sqnr_figures(ref, got), task_metric(case.task, ref, got)
        ms = _timing.interleaved_ms(models, case.unseen[:8], runs=None, repeats=5, warmup=2, threads=1)
        for label, a in answers.items():
            a["speedup"] = ms["fp32"] / ms[label]
            estimates = [f.get("metric") for f in (a["gate"] or {}).get("failed", []) if f.get("metric") is not None]
            print(f"| {name} | {label} | {a['chosen']} | {a['speedup']:.2f}x | {a['sqnr']['sqnr']:.1f} | "
                  f"{a['task']['text']} | {', '.join(f'{e:.3f}' for e in estimates) or '-'} | {a['seconds']} |")
        rows[name] = answers
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, default=str, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
