"""Per-precision latency and fidelity on onnxruntime's CPU provider at 1 thread: is int16 or
fp16 worth a place on the CPU ladder of auto mode?

    .venv/bin/python bench/precision_cpu.py --models digits_mobilenet digits_resnet --repeats 7

For every zoo model: export fp32 (``edgeq.exporter.export``), then build with ``edgeq.quantize``
(same calibration feeds): int8 (static, uint8 activations, per-channel int8 weights); int16
activations for the whole model (A16W8); int8 with the most sensitive half of the layers in int16
activations (``int16_nodes``) or in fp16 (``fp16_nodes``) or fp32 (``exclude``); and the
whole model in fp16 (``mode="fp16"``). Latency: one session per variant (1 intra-op thread,
sequential), 5 warm-up runs, then ``--repeats`` interleaved timings of at least ``--runs``
inferences; the table gives the median per-inference time. Fidelity: min output SQNR vs fp32
on the model's eval data.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import interleaved_ms, session  # noqa: E402


def _min_sqnr(ref: bytes, cand: bytes, feeds: list[dict]) -> float:
    from edgeq.metrics import sqnr_db

    a, b = session(ref), session(cand)
    outs = [(a.run(None, f), b.run(None, f)) for f in feeds]
    return min(sqnr_db(np.concatenate([r[i] for r, _ in outs]), np.concatenate([c[i] for _, c in outs]))
               for i in range(len(outs[0][0])))


def bench_model(name: str, runs: int, repeats: int) -> list[tuple[str, float, float]]:
    import onnx_ir as ir

    import edgeq
    from edgeq import zoo
    from edgeq.auto.analysis import sensitivity
    from edgeq.config import QuantConfig
    from edgeq.exporter import export

    spec = zoo.get(name)
    calib, evals = spec.calibration_data(32), spec.eval_data(16)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        export(name, path)
        with open(path, "rb") as f:
            fp32 = f.read()
        layers = sensitivity(path, calib, eval_data=evals, progress=False).layers
        half = tuple(e["node"] for e in layers[: max(1, len(layers) // 2)])
        configs = {
            "int8": QuantConfig(),
            "int16 activations (whole model)": QuantConfig(activations="int16"),
            f"int8, {len(half)} most sensitive in int16": QuantConfig(int16_nodes=half),
            f"int8, {len(half)} most sensitive in fp16": QuantConfig(fp16_nodes=half),
            f"int8, {len(half)} most sensitive in fp32": QuantConfig(exclude=half),
            "fp16 (whole model)": QuantConfig(mode="fp16"),
        }
        models = {"fp32": fp32}
        for label, config in configs.items():
            result = edgeq.quantize(path, config, calib, progress=False)
            models[label] = ir.to_proto(result.model).SerializeToString()
    ms = interleaved_ms(models, [evals[0]], runs=runs, repeats=repeats, warmup=5)
    return [(label, ms[label], _min_sqnr(fp32, data, evals) if label != "fp32" else float("inf"))
            for label, data in models.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits_mobilenet"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print("| model | variant | latency (ms, median) | vs fp32 | min output SQNR (dB) |")
    print("|---|---|---|---|---|")
    for name in args.models:
        rows = bench_model(name, args.runs, args.repeats)
        base = rows[0][1]
        for label, ms, sqnr in rows:
            print(f"| {name} | {label} | {ms:.3f} | {base / ms:.2f}x | {sqnr:.1f} |")


if __name__ == "__main__":
    main()
