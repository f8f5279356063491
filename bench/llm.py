"""A decoder language model: perplexity, decode and prefill speed, size: fp32, edgeq, onnxruntime.

    python bench/llm.py [--threads 1,2] [--large] [--out docs/benchmarks.md]

Models: the zoo's trained byte-level decoder (``tiny_lm``, 2.0M parameters: perplexity on the
held-out documentation topics means something) and, with ``--large``, a random-weight instance of
the same architecture (d=768, 12 heads, 8 layers, 57M parameters, 229 MB fp32: larger than the
CPU caches, as real language models are) for decode speed only.

Variants: edgeq weight-only int8 and int4 (blocks of 32; round to nearest, and GPTQ on 32
calibration windows of the training text; and per-layer 4/8 bits to a perplexity target on those
windows, ``--max-ppl-increase``, judged here on the held-out text), edgeq dynamic int8 (int8 MatMuls, activations
quantized at run time), onnxruntime's ``MatMulNBitsQuantizer`` (RTN, blocks of 32 and its default
128; HQQ, 32; GPTQ, 32, on the same calibration windows) and ``quantize_dynamic``.

Decode: tokens/s generating 64 tokens greedily after a 64-byte prompt with the KV cache, median
of 3 runs; prefill: tokens/s of a 256-byte prompt, median of 3; perplexity: held-out text in
windows of the model's 256 positions; session memory: a fresh process builds the session and
generates 8 tokens (``edgeq.runtime.decoder_bench``), its peak RSS from before the session.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BEGIN, END = "<!-- bench/llm.py: begin -->", "<!-- bench/llm.py: end -->"
LARGE = {"dim": 768, "heads": 12, "layers": 8, "ffn": 3072}
CALIB: dict[str, list] = {}


def _edgeq(src: str, out: str, mode: str = "weight-only", data: list | None = None, **options) -> None:
    import edgeq
    from edgeq.config import QuantConfig

    edgeq.quantize(src, QuantConfig(mode=mode, **options), data, progress=False).save(out)


def _ort_nbits(src: str, out: str, block: int, algo: str = "rtn", accuracy_level: int | None = None) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = HQQWeightOnlyQuantConfig(block_size=block) if algo == "hqq" else None
    q = MatMulNBitsQuantizer(onnx.load(src), block_size=block, is_symmetric=False, accuracy_level=accuracy_level,
                             algo_config=config)
    q.process()
    q.model.save_model_to_file(out, False)


def _ort_gptq(src: str, out: str, block: int) -> None:
    """onnxruntime's GPTQ (its bundled Intel Neural Compressor code), fed the same calibration windows."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.matmul_nbits_quantizer import GPTQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(CALIB[src])

        def get_next(self):
            return next(self.feeds, None)

    config = GPTQWeightOnlyQuantConfig(calibration_data_reader=Reader(), block_size=block)
    q = MatMulNBitsQuantizer(onnx.load(src), block_size=block, is_symmetric=False, algo_config=config)
    q.process()
    q.model.save_model_to_file(out, False)


def _ort_dynamic(src: str, out: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, out, weight_type=QuantType.QInt8)


VARIANTS = {
    "edgeq int8 weight-only b32 (level 0)": lambda s, o: _edgeq(s, o, weights="int8", accuracy_level=0),
    "edgeq int4 b32 (default: level measured)": lambda s, o: _edgeq(s, o, weights="int4"),
    "edgeq int4 b32 (level 0)": lambda s, o: _edgeq(s, o, weights="int4", accuracy_level=0),
    "edgeq int4 b32 GPTQ (level measured)": lambda s, o: _edgeq(s, o, data=CALIB.get(s), weights="int4"),
    "edgeq int4 GPTQ, per-layer bits to 0.5% ppl": lambda s, o: _edgeq(s, o, data=CALIB.get(s), weights="int4",
                                                                        max_ppl_increase=0.005),
    "edgeq int4 GPTQ, per-layer bits to 0.2% ppl": lambda s, o: _edgeq(s, o, data=CALIB.get(s), weights="int4",
                                                                        max_ppl_increase=0.002),
    "edgeq dynamic int8": lambda s, o: _edgeq(s, o, mode="dynamic"),
    "ORT RTN int4 b32": lambda s, o: _ort_nbits(s, o, 32),
    "ORT RTN int4 b32 (level 4)": lambda s, o: _ort_nbits(s, o, 32, accuracy_level=4),
    "ORT RTN int4 b128": lambda s, o: _ort_nbits(s, o, 128),
    "ORT HQQ int4 b32": lambda s, o: _ort_nbits(s, o, 32, "hqq"),
    "ORT GPTQ int4 b32": lambda s, o: _ort_gptq(s, o, 32),
    "ORT quantize_dynamic int8": _ort_dynamic,
}


def _speed(path: str, threads: int, prompt: list[int]) -> tuple[float, float]:
    from edgeq.runtime.generate import DecoderLM

    lm = DecoderLM(path, threads=threads)
    list(lm.generate(prompt[:8], 4))  # warm-up
    decode, prefill = [], []
    for _ in range(3):
        list(lm.generate(prompt[:64], 64))
        decode.append(lm.times.decode_tokens_per_s)
        list(lm.generate(prompt[:256], 1))
        prefill.append(lm.times.prefill_tokens_per_s)
    return statistics.median(decode), statistics.median(prefill)


def rows_for(label: str, src: str, text_tokens: list[int] | None, prompt: list[int], threads: list[int],
             workdir: str, variants: dict) -> list[dict]:
    from edgeq.runtime.generate import DecoderLM

    rows = []
    for variant, build in [("fp32", None), *variants.items()]:
        slug = "".join(c if c.isalnum() else "_" for c in variant)
        out = src if build is None else os.path.join(workdir, f"{label.replace(' ', '_')}.{slug}.onnx")
        row: dict = {"model": label, "variant": variant}
        start = time.perf_counter()
        try:
            if build is not None:
                build(src, out)
        except Exception as e:  # a baseline that fails is a row saying so
            row["error"] = f"{type(e).__name__}: {str(e)[:80]}"
            rows.append(row)
            continue
        row["quantize_s"] = time.perf_counter() - start
        row["bytes"] = os.path.getsize(out) + (os.path.getsize(out + ".data") if os.path.exists(out + ".data") else 0)
        if text_tokens is not None:
            row["ppl"] = DecoderLM(out).perplexity(text_tokens)
        from edgeq.runtime.decoder_bench import measure_decoder_isolated

        mem = measure_decoder_isolated(out, threads=1, prompt_tokens=64, new_tokens=8, runs=1)
        row["session_s"], row["peak_mb"] = mem["session_s"], (mem["peak_rss_bytes"] or 0) / 2**20
        for t in threads:
            row[f"decode_{t}"], row[f"prefill_{t}"] = _speed(out, t, prompt)
        rows.append(row)
        print(f"  {label} {variant}: {row}", file=sys.stderr, flush=True)
    return rows


def render(rows: list[dict], threads: list[int], cmd: str) -> str:
    lines = ["```", cmd, "```", "",
             f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, onnxruntime CPU provider. "
             "Decode: tokens/s generating 64 tokens after a 64-byte prompt (KV cache), median of 3; prefill: tokens/s "
             "of a 256-byte prompt; perplexity: held-out documentation topics, windows of the model's 256 positions; "
             "session s / peak MB: a fresh process building the session (MatMulNBits prepacks then) and generating 8 "
             "tokens, its peak resident memory from before the session (edgeq bench's decoder figures). "
             "Level: MatMulNBits' accuracy_level (0 float compute, 4 int8 compute).", ""]
    head = "| model | variant | file vs fp32 | perplexity (vs fp32) | " + " | ".join(
        f"decode tok/s @{t} (vs fp32) | prefill tok/s @{t}" for t in threads) + " | session s / peak MB | quantize (s) |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    base = {r["model"]: r for r in rows if r["variant"] == "fp32"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | failed: {r['error']} |" + " |" * (3 + 2 * len(threads)))
            continue
        b = base[r["model"]]
        ppl = f"{r['ppl']:.3f} ({r['ppl'] / b['ppl']:.3f}x)" if "ppl" in r else "-"
        speed = " | ".join(f"{r[f'decode_{t}']:.1f} ({r[f'decode_{t}'] / b[f'decode_{t}']:.2f}x) | {r[f'prefill_{t}']:.0f}"
                           for t in threads)
        lines.append(f"| {r['model']} | {r['variant']} | {r['bytes'] / b['bytes']:.3f} ({r['bytes'] / 1e6:.1f} MB) | "
                     f"{ppl} | {speed} | {r['session_s']:.2f} / {r['peak_mb']:.0f} | {r.get('quantize_s', 0):.1f} |")
    return "\n".join(lines) + "\n"


def _large(path: str) -> None:
    import onnx

    from edgeq.exporter import export
    from edgeq.zoo import get, lm

    spec = get("tiny_lm")
    model = lm.build(**LARGE).eval()
    import torch

    past = torch.zeros((LARGE["layers"], 1, LARGE["heads"], 3, LARGE["dim"] // LARGE["heads"]))
    export(model, path, example_inputs=(torch.tensor([[1, 2, 3]]), past, past.clone()), input_names=spec.input_names,
           output_names=spec.output_names, dynamic=spec.dynamic_axes)
    proto = onnx.load(path)
    for key, value in spec.metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--large", action="store_true", help="also the 57M-parameter random-weight instance (speed)")
    parser.add_argument("--text-bytes", type=int, default=16000)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "edgeq_llm"))
    parser.add_argument("--out", default=None, help="docs/benchmarks.md: replace its bench/llm.py block")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    os.makedirs(args.workdir, exist_ok=True)
    from edgeq.exporter import export
    from edgeq.zoo import get
    from edgeq.zoo.lm import text

    src = os.path.join(args.workdir, "tiny_lm.fp32.onnx")
    export("tiny_lm", src)
    CALIB[src] = get("tiny_lm").calibration_data(32)
    held = list(text("eval").encode("utf-8"))[: args.text_bytes]
    prompt = list(text("eval").encode("utf-8"))[-400:]
    rows = rows_for("tiny_lm", src, held, prompt, threads, args.workdir, VARIANTS)
    if args.large:
        big = os.path.join(args.workdir, "lm_large.fp32.onnx")
        _large(big)
        fast = {k: v for k, v in VARIANTS.items() if "GPTQ" not in k and "HQQ" not in k}  # no text: nothing to calibrate
        rows += rows_for("random 57M", big, None, prompt, threads, args.workdir, fast)
    cmd = "python bench/llm.py" + (" --large" if args.large else "") + (
        f" --threads {args.threads}" if args.threads != "1,2" else "")
    text_out = render(rows, threads, cmd)
    print(text_out)
    if args.out:
        import generalization as gen

        gen.replace_block(args.out, text_out, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
