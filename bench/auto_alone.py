"""Auto mode alone on one bundled case (``bench/realworld.py --make-bundle``): the gate's story, the
answer against fp32 on the unseen split, and both timed interleaved at 1 and 2 threads.

    python bench/auto_alone.py NAME BUNDLE_DIR

Prints auto's wall time and verdict, the configurations the gate refused (point and bound), what
each search again built, the answer's gate figures, its SQNR on the unseen feeds (all, worst, 5th
percentile) with the task metric, then fp32 and the answer timed on 8 unseen feeds (5 rounds,
median; ``_timing.interleaved_ms``). For a machine where a whole realworld row would not fit in
one run (the GPU host's 10-minute calls).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402
import generalization  # noqa: E402
import realworld  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python bench/auto_alone.py NAME BUNDLE_DIR", file=sys.stderr)
        return 2
    import edgeq
    from edgeq.config import QuantConfig

    name, folder = argv
    logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)d %(name)s %(message)s")
    for logger in ("edgeq.auto.gate", "edgeq.auto.retarget", "edgeq.auto.unit_time"):
        logging.getLogger(logger).setLevel(logging.INFO)
    case = realworld.load_bundled(name, folder)
    start = time.time()
    result = edgeq.quantize(case.path, QuantConfig(mode="auto"), case.calib, progress=False)
    auto = result.report["auto"]
    gate = auto["gate"]
    print("auto s", round(time.time() - start, 1))
    print("verdict:", auto["verdict"])
    print("refused:", [(f["configuration"], f["min_sqnr_db"], f["bound_db"]) for f in gate.get("failed", [])])
    print("searched again:", json.dumps(gate.get("searched_again")))
    print("answer at the gate:", gate.get("configuration"), gate.get("min_sqnr_db"), gate.get("bound_db"))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"{name}.auto.onnx")
        result.save(out)
        with open(case.path, "rb") as f:
            fp32 = f.read()
        with open(out, "rb") as f:
            answer = f.read()
    ref, got = generalization._run(fp32, case.unseen), generalization._run(answer, case.unseen)
    print("unseen:", generalization.sqnr_figures(ref, got), generalization.task_metric(case.task, ref, got).get("text"))
    for threads in (1, 2):
        ms = _timing.interleaved_ms({"fp32": fp32, "auto": answer}, case.unseen[:8], runs=None, repeats=5, warmup=3,
                                    threads=threads)
        print(f"{threads} thread(s):", {k: round(v, 3) for k, v in ms.items()}, f"{ms['fp32'] / ms['auto']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
