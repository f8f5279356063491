"""Quantization-aware training against post-training quantization, per zoo model (issue 16).

    python bench/qat.py [--models digits_mobilenet,digits_resnet,kws,textdet,tiny_transformer,minilm]
                        [--epochs 3] [--samples 1024] [--eval 200] [--out docs/benchmarks.md]

Per model (exported from the zoo; trained on its calibration source, judged on its evaluation
split, which training never sees): fp32; edgeq PTQ static (W8A8, default options) and auto (the
default of ``edgeq quantize``); the untrained QAT module exported (PTQ on QAT's grid: W8A8, and
W4A8, which only QAT's path writes: int4 per-channel weights); QAT at W8A8 and W4A8 (``edgeq.qat``,
distilled from fp32, ``--epochs``); W4A8 QAT again under bfloat16 autocast for its training time;
transformers also at W8A8 and W4A8 with per-token MatMuls (``QATConfig(per_token=True)``).
Columns: min output SQNR vs fp32 over the evaluation samples, top-1 (classifiers with labels) or
argmax agreement, file size, latency at 1 thread (interleaved rounds, median), training seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BEGIN, END = "<!-- bench/qat.py: begin -->", "<!-- bench/qat.py: end -->"
DEFAULT = ("digits_mobilenet", "digits_resnet", "kws", "textdet", "tiny_transformer", "minilm")


def _score(path: str, feeds, reference, labels, classification: bool) -> dict:
    from edgeq.qat.zoo_recipe import _run, score

    return score(_run(path, feeds), reference, labels, classification)


def rows_for(name: str, args, workdir: str) -> list[dict]:
    from _timing import interleaved_ms

    import edgeq
    from edgeq import zoo
    from edgeq.config import QuantConfig
    from edgeq.exporter import export
    from edgeq.qat import QATConfig
    from edgeq.qat.zoo_recipe import _run, qat_zoo

    spec = zoo.get(name)
    classification = spec.task == "classification"
    src = os.path.join(workdir, f"{name}.fp32.onnx")
    export(name, src)
    feeds = spec.eval_data(args.eval)
    labels = spec.eval_labels(args.eval) if classification else None
    reference = _run(src, feeds)
    calib = spec.calibration_data(32)
    rows = [{"model": name, "variant": "fp32", "path": src, **_score(src, feeds, reference, labels, classification)}]
    for label, config in (("edgeq PTQ static W8A8", QuantConfig(mode="static")), ("edgeq PTQ auto (default)", None)):
        out = os.path.join(workdir, f"{name}.{label.split()[2]}.onnx")
        start = time.perf_counter()
        edgeq.quantize(src, config, calib, progress=False).save(out)
        rows.append({"model": name, "variant": label, "path": out, "quantize_s": time.perf_counter() - start,
                     **_score(out, feeds, reference, labels, classification)})
    runs = [(8, None, False), (4, None, False), (4, "bf16", False)]
    if spec.task in ("embedding", "hidden_states"):  # transformers: their run-time MatMuls per token too
        runs += [(8, None, True), (4, None, True)]
    for bits, amp, per_token in runs:
        tag = f"{bits}{amp or ''}{'pt' if per_token else ''}"
        out = os.path.join(workdir, f"{name}.qat{tag}.onnx")
        ptq = os.path.join(workdir, f"{name}.ptq{tag}.onnx")
        summary = qat_zoo(name, out, epochs=args.epochs, config=QATConfig(weight_bits=bits, per_token=per_token),
                          amp=amp, samples=args.samples, eval_samples=args.eval, fp32_path=src, ptq_out=ptq,
                          progress=False)
        suffix = ", per-token MatMuls" if per_token else ""
        if amp is None:
            rows.append({"model": name, "variant": f"PTQ on QAT's grid W{bits}A8{suffix} (untrained)", "path": ptq,
                         **summary["ptq"]})
        rows.append({"model": name, "variant": f"QAT W{bits}A8{suffix}" + (f", {amp} autocast" if amp else ""),
                     "path": out, "train_s": summary["train_seconds"], "best_epoch": summary["best_epoch"],
                     "validation": summary["validation_sqnr_db"], "check": summary["export_check"]["within_one_step"],
                     **summary["qat"]})
    timed = {r["variant"]: open(r["path"], "rb").read() for r in rows}
    ms = interleaved_ms(timed, feeds[:8], runs=None, repeats=args.rounds, warmup=3)
    for r in rows:
        r["ms"], r["speedup"] = ms[r["variant"]], ms["fp32"] / ms[r["variant"]]
        r["kb"] = os.path.getsize(r["path"]) / 1024
    return rows


def render(rows: list[dict], args, seconds: float) -> str:
    lines = [
        f"Produced by `python bench/qat.py --epochs {args.epochs} --samples {args.samples} --eval {args.eval}` "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {seconds / 60:.1f} min).",
        "",
        "| model | variant | SQNR dB vs fp32 | top-1 / argmax agreement | size KB | ms at 1 thread (x fp32) | training s (best epoch) |",
        "|---|---|---|---|---|---|---|",
    ]
    last = None
    for r in rows:
        task = " / ".join(f"{r[k]:.4f}" for k in ("top1", "argmax_agreement") if k in r) or "-"
        sqnr = "exact" if r["sqnr_db"] == float("inf") else f"{r['sqnr_db']:.1f}"
        train = f"{r['train_s']:.1f} ({r['best_epoch']})" if "train_s" in r else ""
        lines.append(f"| {r['model'] if r['model'] != last else ''} | {r['variant']} | {sqnr} | {task} | "
                     f"{r['kb']:.0f} | {r['ms']:.3f} ({r['speedup']:.2f}x) | {train} |")
        last = r["model"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="page to write the table into, between the markers")
    args = parser.parse_args()
    import generalization as gen

    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-qat-") as workdir:
        for name in args.models.split(","):
            print(f"[{time.perf_counter() - start:6.0f} s] {name}", flush=True)
            rows += rows_for(name, args, workdir)
    text = render(rows, args, time.perf_counter() - start)
    print(text)
    if args.out:
        gen.replace_block(args.out, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
