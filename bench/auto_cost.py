"""Auto mode's own cost: wall time and peak memory of the default quantize, per model (issue 13 item 5).

    .venv/bin/python bench/auto_cost.py [--models minilm,resnet224] [--runs 2] [--calib 32]
        [--baseline PATH_TO_OTHER_TREE]

Each run is a fresh process (``python -c``: ``edgeq.quantize(path, None, calib)``, auto mode, as
``edgeq quantize IN -o OUT --calib DIR`` runs it) whose wall time and peak resident memory
(the child's own ``ru_maxrss``: the data and the imports included) are recorded; the median over ``--runs`` is printed. With
``--baseline``, the same runs with ``PYTHONPATH`` set to another checkout (``git worktree add``),
alternating with this tree's, so both see the same machine load. Zoo models are exported once into
``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import json, resource, sys, time
from edgeq import zoo
import edgeq
name, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
calib = zoo.get(name).calibration_data(n)
start = time.perf_counter()
result = edgeq.quantize(path, None, calib, progress=False)
auto = result.report.get("auto", {})
print(json.dumps({"seconds": time.perf_counter() - start, "verdict": str(auto.get("verdict", ""))[:160],
                  "configurations": len(auto.get("configurations", [])),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_once(tree: str, name: str, path: str, calib: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, name, path, str(calib)], env=env, cwd=tree,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} in {tree}: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall  # with the imports and the data: peak_mb is the child's own ru_maxrss
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--baseline", default=None, help="another checkout of edgeq to compare with")
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "auto_cost"))
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from edgeq.exporter import export

    os.makedirs(args.workdir, exist_ok=True)
    trees = [("this tree", here)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
    rows = []
    for name in args.models.split(","):
        path = os.path.abspath(os.path.join(args.workdir, f"{name}.fp32.onnx"))
        if not os.path.exists(path):
            export(name, path)
        got: dict[str, list[dict]] = {label: [] for label, _ in trees}
        for _ in range(args.runs):
            for label, tree in trees:
                got[label].append(run_once(tree, name, path, args.calib))
        for label, _ in trees:
            runs = got[label]
            peaks = [r["peak_mb"] for r in runs if r["peak_mb"] is not None]
            rows.append({"model": name, "tree": label, "seconds": statistics.median(r["seconds"] for r in runs),
                         "peak_mb": max(peaks) if peaks else None, "configurations": runs[-1]["configurations"],
                         "verdict": runs[-1]["verdict"]})
    print(f"| model | tree | auto seconds (median of {args.runs}) | peak memory (MB) | configurations built | answer |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] else "-"
        print(f"| {r['model']} | {r['tree']} | {r['seconds']:.1f} | {peak} | {r['configurations']} | {r['verdict']} |")


if __name__ == "__main__":
    main()
