"""Weight-only int4/int8 (edgeq's weight-only mode) against fp32 and onnxruntime's MatMulNBitsQuantizer.

    python bench/weight_only.py [--models tiny_transformer,minilm] [--eval 32] [--out docs/benchmarks.md]

Per model (exported from the zoo; judged on its evaluation data, real sentences for MiniLM):
output SQNR vs fp32 over all samples, cosine of the mean-pooled hidden states (the sentence
embedding), file size, and latency at 1 thread (interleaved rounds, median; edgeq and
onnxruntime's quantizer side by side in one run). Variants: edgeq int8 and int4 (blocks of 32 and
128; the head keeps 8 bits, embeddings int8), int4 with GPTQ rounding on the model's 32 zoo
calibration samples (the evaluation samples are others), int4 with accuracy_level 4 (int8 compute),
onnxruntime's RTN (``MatMulNBitsQuantizer``, asymmetric, blocks of 32 and 128) and HQQ (blocks of 32).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BEGIN, END = "<!-- bench/weight_only.py: begin -->", "<!-- bench/weight_only.py: end -->"
DEFAULT = ("tiny_transformer", "minilm")


CALIB: dict[str, list] = {}  # model -> its zoo calibration samples (disjoint from the evaluation ones)


def _edgeq(src: str, out: str, data: list | None = None, **options) -> None:
    import edgeq
    from edgeq.config import QuantConfig

    edgeq.quantize(src, QuantConfig(mode="weight-only", **options), data, progress=False).save(out)


def _ort(src: str, out: str, block: int, algo: str = "rtn", accuracy_level: int | None = None) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = HQQWeightOnlyQuantConfig(block_size=block) if algo == "hqq" else None
    q = MatMulNBitsQuantizer(onnx.load(src), block_size=block, is_symmetric=False, accuracy_level=accuracy_level,
                             algo_config=config)
    q.process()
    q.model.save_model_to_file(out, False)


VARIANTS = {
    "edgeq int8 (b32)": lambda s, o: _edgeq(s, o, weights="int8", accuracy_level=0),
    "edgeq int4 b32": lambda s, o: _edgeq(s, o, weights="int4", accuracy_level=0),
    "edgeq int4 b32 GPTQ (32 calibration samples)": lambda s, o: _edgeq(s, o, CALIB[s], weights="int4", accuracy_level=0),
    "edgeq int4 b128": lambda s, o: _edgeq(s, o, weights="int4", granularity="per-block:128", accuracy_level=0),
    "edgeq int4 b32, accuracy_level 4": lambda s, o: _edgeq(s, o, weights="int4", accuracy_level=4),
    "ORT RTN int4 b32": lambda s, o: _ort(s, o, 32),
    "ORT RTN int4 b128 (its default)": lambda s, o: _ort(s, o, 128),
    "ORT HQQ int4 b32": lambda s, o: _ort(s, o, 32, "hqq"),
}


def _pooled(hidden: np.ndarray, feed: dict) -> np.ndarray:
    mask = feed.get("attention_mask")
    if hidden.ndim != 3:
        return hidden.reshape(hidden.shape[0], -1)
    m = np.ones(hidden.shape[:2], np.float32) if mask is None else mask.astype(np.float32)
    return (hidden * m[..., None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1.0)


def _outputs(path: str, feeds: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    from _timing import session

    sess = session(open(path, "rb").read())
    outs = [sess.run(None, f)[0] for f in feeds]
    flat = np.concatenate([o.reshape(-1) for o in outs])
    pooled = np.concatenate([_pooled(o, f) for o, f in zip(outs, feeds)])
    return flat, pooled


def row(name: str, args, workdir: str) -> list[dict]:
    from _timing import interleaved_ms

    from edgeq.exporter import export
    from edgeq.metrics import sqnr_db
    from edgeq.zoo import get

    src = os.path.join(workdir, f"{name}.fp32.onnx")
    if not os.path.exists(src):
        export(name, src)
    feeds = list(get(name).eval_data(args.eval))
    CALIB[src] = list(get(name).calibration_data(32))
    ref, ref_pooled = _outputs(src, feeds)
    rows = [{"model": name, "variant": "fp32", "bytes": os.path.getsize(src), "sqnr": float("inf"), "cos": 1.0,
             "quantize_s": 0.0, "path": src}]
    for variant, build in VARIANTS.items():
        out = os.path.join(workdir, f"{name}.{variant.split(' (')[0].replace(' ', '_').replace(',', '')}.onnx")
        start = time.perf_counter()
        try:
            build(src, out)
        except Exception as e:  # a baseline that fails is a row saying so
            rows.append({"model": name, "variant": variant, "error": f"{type(e).__name__}: {str(e)[:80]}"})
            continue
        seconds = time.perf_counter() - start
        got, pooled = _outputs(out, feeds)
        cos = np.sum(ref_pooled * pooled, 1) / (np.linalg.norm(ref_pooled, axis=1) * np.linalg.norm(pooled, axis=1))
        rows.append({"model": name, "variant": variant, "bytes": os.path.getsize(out), "sqnr": sqnr_db(ref, got),
                     "cos": float(cos.min()), "cos_mean": float(cos.mean()), "quantize_s": seconds, "path": out})
    timed = {r["variant"]: open(r["path"], "rb").read() for r in rows if "error" not in r}
    ms = interleaved_ms(timed, feeds[:8], runs=None, repeats=args.rounds, warmup=3)
    for r in rows:
        if "error" not in r:
            r["ms"] = ms[r["variant"]]
            r["speedup"] = ms["fp32"] / ms[r["variant"]]
    return rows


def render(rows: list[dict], cmd: str) -> str:
    lines = ["```", cmd, "```", "",
             f"CPU: {platform.processor() or platform.machine()}, 1 thread, onnxruntime CPU provider; latency: median "
             "of interleaved rounds on the first 8 evaluation samples. SQNR: all outputs of all evaluation samples vs "
             "fp32; cosine: mean-pooled hidden states (the sentence embedding), worst sample / mean.", "",
             "| model | variant | file vs fp32 | SQNR (dB) | embedding cosine, worst / mean | latency vs fp32 | quantize (s) |",
             "|---|---|---|---|---|---|---|"]
    base = {r["model"]: r["bytes"] for r in rows if r["variant"] == "fp32"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | failed: {r['error']} | | | | |")
            continue
        sqnr = "exact" if r["variant"] == "fp32" else f"{r['sqnr']:.1f}"
        cos = "1" if r["variant"] == "fp32" else f"{r['cos']:.4f} / {r['cos_mean']:.4f}"
        lines.append(f"| {r['model']} | {r['variant']} | {r['bytes'] / base[r['model']]:.3f} ({r['bytes'] / 1e6:.1f} MB) "
                     f"| {sqnr} | {cos} | {r['speedup']:.2f}x ({r['ms']:.2f} ms) | {r['quantize_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT))
    parser.add_argument("--eval", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "edgeq_weight_only"))
    parser.add_argument("--out", default=None, help="docs/benchmarks.md: replace its bench/weight_only.py block")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        rows += row(name, args, args.workdir)
        print(f"{name} done", file=sys.stderr, flush=True)
    cmd = "python bench/weight_only.py" + (f" --models {args.models}" if args.models != ",".join(DEFAULT) else "")
    text = render(rows, cmd)
    print(text)
    if args.out:
        import generalization as gen

        gen.replace_block(args.out, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
