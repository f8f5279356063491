"""fp32 / fp16 / int8 (QDQ) on the CUDA provider against the CPU provider: outputs and latency.

HOW TO RUN (two steps, two machines)
====================================

1. On the CPU dev machine (needs torch + the edgeq venv), prepare the models and inputs.
   Two folders, because resnet224's weights alone are ~47 MB in fp32 and each folder must stay
   under 40 MB::

     .venv/bin/python bench/gpu_providers.py --prepare out/gpu_a \\
         --models digits_mobilenet,tiny_transformer,mobilenet224
     .venv/bin/python bench/gpu_providers.py --prepare out/gpu_b \\
         --models resnet224 --variants fp16,int8

   Both folders were prepared this way on 2026-11-23 (out/gpu_a 34.2 MB, out/gpu_b 39.1 MB;
   out/ is git-ignored: carry them). Re-running --prepare replaces a folder's manifest.
   Each folder gets ``manifest.json``, ``<model>.<variant>.onnx``, ``<model>.inputs.npz``
   (batch 8) and ``<model>.ref.npz`` (fp32 outputs on the CPU provider, computed here, so the
   fp32 file itself is optional on the GPU machine). ``--max-mb`` (default 40) stops adding files
   past the budget and says what it left out. ``--smoke`` adds a built-in conv net that needs
   neither torch nor edgeq.zoo.

2. On the GPU machine (onnxruntime-gpu + numpy only; no torch, onnx or onnx_ir needed),
   from the repository root::

     PYTHONPATH=. python bench/gpu_providers.py out/gpu_a --json out/gpu_a/results.json
     PYTHONPATH=. python bench/gpu_providers.py out/gpu_b --json out/gpu_b/results.json

   Tested on the lent H100 (its image has CPU-only onnxruntime 1.30 and CUDA 13 libraries from
   torch's nvidia-* wheels, which ``onnxruntime.preload_dlls()`` finds). The onnxruntime-gpu
   1.31.1 wheel (CUDA 13 build) is 256 MB, so it travels in the five 52 MiB parts under .whl/
   (``split -b 52m``), one ``run`` call each while the machine stays warm, each call carrying
   one part and doing ``mkdir -p /tmp/p && cp .whl/ortgpu.partNN /tmp/p/``; the last call then::

     cat /tmp/p/ortgpu.part0* > /tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
         /tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
     PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 bench/gpu_providers.py out/gpu_a \
         --json $OUT/gpu_a.json

   (carry ``out/gpu_a`` in that call too; /tmp/site must come first on PYTHONPATH so it shadows
   the image's CPU onnxruntime). gpu_a took ~70 s, gpu_b ~20 s there; then a separate call
   carrying ``out/gpu_b`` while the machine is still warm (/tmp/site stays until it is given
   back). ``python3 -m pytest -o addopts= tests/gpu`` runs the CUDA tests the same way. The run prints "available providers: [... CUDAExecutionProvider
   ...]" first; a row marked FELL BACK means CUDA could not be used.

   Options: ``--providers cuda,cuda-strict,cpu`` (default; ``cuda-strict`` is CUDA with TF32 off,
   run for the fp32 files only: onnxruntime's CUDA default computes fp32 Conv/MatMul in TF32,
   measured on mobilenet224 at 32.5 dB against CPU fp32 with TF32 and 93.5 dB without),
   ``--batches 1,8``, ``--runs 5`` (timed runs per configuration; each run is ``--iters 30`` calls; the figure is the median of the per-run
   medians), ``--warmup 10``, ``--threads 0`` (CPU intra-op threads, 0 = onnxruntime's default).
   It prints a Markdown table: latency p50 (median of run medians) and p90, throughput,
   CUDA-over-CPU speedup, fidelity against the fp32 CPU reference (SQNR, top-1 agreement),
   max abs difference between CUDA and CPU for the same file, the share of kernel time that ran
   on the requested provider (from an onnxruntime profile; ``int8`` QDQ on CUDA shows where the
   Q/DQ and integer kernels ran), and the GPU memory each session added (nvidia-smi, after all
   its batches ran; the CUDA context is created once beforehand and not counted). If the CUDA
   provider cannot load, the row says so (fell back to CPU) instead of reporting CPU numbers
   as CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

DEFAULT_MODELS = ("digits_mobilenet", "tiny_transformer", "mobilenet224", "resnet224")
VARIANTS = ("fp32", "fp16", "int8")
BATCH = 8


# ---------------------------------------------------------------------------------------------
# --prepare (CPU dev machine)
# ---------------------------------------------------------------------------------------------
def _smoke_model(path: str) -> list[dict[str, np.ndarray]]:
    """A small conv net built with onnx.helper (no torch): writes it, returns 40 feeds."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)

    def he(*shape):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    inits = {"w1": he(32, 3, 3, 3), "w2": he(32, 1, 3, 3), "w3": he(64, 32, 1, 1), "wf": he(10, 64)}
    inits.update({f"b{i}": (0.1 * rng.standard_normal(n)).astype(np.float32) for i, n in ((1, 32), (2, 32), (3, 64))})
    inits["bf"] = np.zeros(10, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=32),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "smoke_convnet",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return [{"x": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(40)]


def _export_zoo(name: str, path: str) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], str]:
    from edgeq import zoo

    spec = zoo.get(name)
    try:
        from edgeq.exporter import export
    except ImportError:
        export = None
    if export is not None:
        result = export(name, path, dynamic_batch=True)
        how = f"edgeq.exporter.export ({getattr(result, 'exporter', '?')})"
    else:  # the exporter has not landed: TorchScript export with the spec's dynamic axes
        import torch

        print("  edgeq.exporter.export unavailable; using torch.onnx.export (TorchScript)")
        with torch.no_grad():
            torch.onnx.export(spec.build(), spec.example_inputs(), path, input_names=list(spec.input_names),
                              output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes,
                              opset_version=17, dynamo=False)
        how = "torch.onnx.export (TorchScript, opset 17)"
    return spec.calibration_data(32), spec.eval_data(BATCH), how


def _batched(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate batch-1 feeds along axis 0 (the first feed tiled if shapes differ)."""
    first = feeds[0]
    if all(all(f[k].shape[1:] == first[k].shape[1:] for k in first) for f in feeds):
        return {k: np.concatenate([f[k] for f in feeds[:BATCH]], axis=0) for k in first}
    return {k: np.repeat(v[:1], BATCH, axis=0) for k, v in first.items()}


def _quantize_int8(fp32_path: str, out: str, calib: list[dict[str, np.ndarray]]) -> str:
    try:
        import edgeq

        result = edgeq.quantize(fp32_path, edgeq.QuantConfig(), data=calib, progress=False)
        result.save(out)
        return "edgeq.quantize (static int8 QDQ, defaults)"
    except (ImportError, AttributeError) as e:
        print(f"  edgeq.quantize unavailable ({e}); using onnxruntime.quantization.quantize_static QDQ")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    quantize_static(fp32_path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return "onnxruntime.quantization.quantize_static QDQ (fallback: edgeq.quantize not available)"


def prepare(folder: str, names: list[str], variants: list[str], max_mb: float) -> None:
    import onnxruntime as ort

    import edgeq.io
    from edgeq.passes.fp16 import convert_fp16

    os.makedirs(folder, exist_ok=True)
    manifest: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": [], "skipped": []}
    used = 0
    work = tempfile.mkdtemp(prefix="gpu-prepare-")
    try:
        for name in names:
            print(f"[prepare] {name}")
            fp32 = os.path.join(work, f"{name}.fp32.onnx")
            if name == "smoke_convnet":
                feeds = _smoke_model(fp32)
                calib, evals, exporter = feeds[:32], feeds[32:], "onnx.helper"
            else:
                calib, evals, exporter = _export_zoo(name, fp32)
            try:
                from edgeq.prepare import prepare_model

                model, _ = prepare_model(edgeq.io.load_model(fp32))
                edgeq.io.save_model(model, fp32 + ".prep.onnx")
                os.replace(fp32 + ".prep.onnx", fp32)
            except ImportError:
                pass
            feed = _batched(evals)
            sess = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
            outs = sess.run(None, feed)
            ref = {o.name: v for o, v in zip(sess.get_outputs(), outs)}
            files = {"fp32": fp32}
            int8_by = None
            if "fp16" in variants:
                model = edgeq.io.load_model(fp32)
                fp16_report = convert_fp16(model)
                files["fp16"] = edgeq.io.save_model(model, os.path.join(work, f"{name}.fp16.onnx"))
                print(f"  fp16: {fp16_report['nodes_fp16']} nodes fp16, kept fp32: {fp16_report['kept_fp32_op_types']}")
            if "int8" in variants:
                files["int8"] = os.path.join(work, f"{name}.int8.onnx")
                int8_by = _quantize_int8(fp32, files["int8"], calib)
            files = {v: p for v, p in files.items() if v in variants}
            np.savez_compressed(os.path.join(work, f"{name}.inputs.npz"), **feed)
            np.savez_compressed(os.path.join(work, f"{name}.ref.npz"), **ref)
            extra = [os.path.join(work, f"{name}.inputs.npz"), os.path.join(work, f"{name}.ref.npz")]
            size = sum(os.path.getsize(p) for p in [*files.values(), *extra])
            if used + size > max_mb * 1e6:
                reason = f"{size / 1e6:.1f} MB would pass the {max_mb:.0f} MB budget ({used / 1e6:.1f} MB used)"
                print(f"  SKIPPED {name}: {reason}; prepare it into another folder")
                manifest["skipped"].append({"model": name, "reason": reason})
                continue
            for path in [*files.values(), *extra]:
                shutil.move(path, os.path.join(folder, os.path.basename(path)))
            used += size
            manifest["models"].append({
                "name": name,
                "exporter": exporter,
                "files": {v: os.path.basename(p) for v, p in files.items()},
                "bytes": {v: os.path.getsize(os.path.join(folder, os.path.basename(p))) for v, p in files.items()},
                "inputs": f"{name}.inputs.npz",
                "reference": f"{name}.ref.npz",
                "reference_is": "fp32 model on CPUExecutionProvider, onnxruntime " + ort.__version__,
                "int8_by": int8_by,
                "input_shapes": {k: list(v.shape) for k, v in feed.items()},
            })
            print(f"  wrote {', '.join(sorted(files))} + inputs ({size / 1e6:.1f} MB; folder {used / 1e6:.1f} MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"[prepare] {folder}: {len(manifest['models'])} models, {used / 1e6:.1f} MB")


# ---------------------------------------------------------------------------------------------
# GPU mode (onnxruntime-gpu + numpy + edgeq.runtime)
# ---------------------------------------------------------------------------------------------
def _gpu_mem_mb() -> float | None:
    """This process's GPU memory from nvidia-smi (None without nvidia-smi)."""
    from edgeq.runtime.compare import gpu_memory_mb

    return gpu_memory_mb()


def _metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    from edgeq.metrics import fidelity

    return fidelity(ref.astype(np.float64), got.astype(np.float64))


def _kernel_share(path: str, names: list[str], feed: dict[str, np.ndarray], provider: str) -> dict:
    """Profile one run: share of kernel time on ``provider`` and op types that ran elsewhere."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.log_severity_level = 3
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="gpu-prof-"), "p")
    sess = ort.InferenceSession(path, so, providers=names)
    sess.run(None, feed)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    on, total, elsewhere, ops_on = 0.0, 0.0, set(), set()
    for e in events:
        args = e.get("args", {})
        if e.get("cat") != "Node" or "provider" not in args or not e.get("name", "").endswith("_kernel_time"):
            continue
        total += e.get("dur", 0)
        if args["provider"] == provider:
            on += e.get("dur", 0)
            ops_on.add(args.get("op_name", "?"))
        else:
            elsewhere.add(f"{args.get('op_name', '?')}@{args['provider'].replace('ExecutionProvider', '')}")
    return {"share": on / total if total else None, "elsewhere": sorted(elsewhere), "ops": sorted(ops_on)}


def _strict_cuda():
    """CUDAOptions with TF32 off: onnxruntime's CUDA provider runs float32 Conv/MatMul in TF32 on
    Ampere and newer unless ``use_tf32=0`` (CUDAOptions has no field for it yet)."""
    from edgeq.runtime import CUDAOptions

    class StrictCUDAOptions(CUDAOptions):
        def to_ort(self) -> dict[str, str]:
            return {**super().to_ort(), "use_tf32": "0"}

    return StrictCUDAOptions()


def _time(session, feed, warmup: int, runs: int, iters: int) -> dict[str, float]:
    sess = session.ort_session
    for _ in range(warmup):
        sess.run(None, feed)
    medians, all_ms = [], []
    for _ in range(runs):
        ms = []
        for _ in range(iters):
            t0 = time.perf_counter()
            sess.run(None, feed)
            ms.append((time.perf_counter() - t0) * 1e3)
        medians.append(float(np.median(ms)))
        all_ms.extend(ms)
    return {"p50_ms": float(np.median(medians)), "p90_ms": float(np.percentile(all_ms, 90)),
            "run_medians_ms": medians}


def _slice(feed: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    return {k: v[:batch] for k, v in feed.items()}


def run_gpu(folder: str, providers: list[str], batches: list[int], threads: int, warmup: int, runs: int,
            iters: int) -> list[dict]:
    import onnxruntime as ort

    from edgeq.runtime import CUDAOptions, Session
    from edgeq.runtime.providers import canonical_name

    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, if that is how they came
        except Exception as e:  # noqa: BLE001 - best effort, the session reports what failed
            print(f"note: onnxruntime.preload_dlls failed: {e}")
    print(f"onnxruntime {ort.__version__}, available providers: {ort.get_available_providers()}")
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    if "cuda" in providers and "CUDAExecutionProvider" in ort.get_available_providers() and manifest["models"]:
        # Create the CUDA context once, so GPU memory figures are each session's own.
        first = manifest["models"][0]
        Session(os.path.join(folder, next(iter(first["files"].values()))), providers=(CUDAOptions(),)).providers  # noqa: B018 (builds the session)
    rows: list[dict] = []
    for entry in manifest["models"]:
        with np.load(os.path.join(folder, entry["inputs"]), allow_pickle=False) as data:
            full = {k: data[k] for k in data.files}
        with np.load(os.path.join(folder, entry["reference"]), allow_pickle=False) as data:
            ref_full = {k: data[k] for k in data.files}
        for variant in VARIANTS:
            if variant not in entry["files"]:
                continue
            path = os.path.join(folder, entry["files"][variant])
            outputs_by_provider: dict[tuple[str, int], dict[str, np.ndarray]] = {}
            for provider in providers:
                if provider == "cuda-strict" and variant != "fp32":
                    continue  # TF32 only changes float32 math
                chain = {"cuda": (CUDAOptions(), "cpu"), "cuda-strict": (_strict_cuda(), "cpu")}.get(provider, (provider,))
                mem0 = _gpu_mem_mb()
                session = Session(path, providers=chain, threads=threads or None)
                used = session.providers
                wanted = canonical_name(provider.removesuffix("-strict"))
                first_row = len(rows)
                share = _kernel_share(path, used, _slice(full, 1), wanted)
                for batch in batches:
                    feed = _slice(full, batch)
                    if any(v.shape[0] != batch for v in feed.values()):
                        continue
                    outs = session.run(feed)
                    outputs_by_provider[(provider, batch)] = outs
                    timing = _time(session, feed, warmup, runs, iters)
                    first = next(iter(outs))
                    fid = _metrics(ref_full[first][:batch], outs[first]) if first in ref_full else {}
                    rows.append({
                        "model": entry["name"], "variant": variant, "provider": provider, "batch": batch,
                        "providers_used": used, "fell_back": used[0] != wanted,
                        **timing, "throughput": batch * 1e3 / timing["p50_ms"],
                        "session_start_ms": (session.start_seconds or 0) * 1e3,
                        "kernel_share_on_provider": share["share"], "ops_elsewhere": share["elsewhere"],
                        "sqnr_vs_fp32_db": fid.get("sqnr_db"), "top1_vs_fp32": fid.get("top1_agreement"),
                        "cosine_vs_fp32": fid.get("cosine"), "file_bytes": os.path.getsize(path),
                    })
                    print(f"  {entry['name']} {variant} {provider} b{batch}: {timing['p50_ms']:.3f} ms "
                          f"(used {used[0]}), SQNR vs fp32 {fid.get('sqnr_db', float('nan')):.1f} dB")
                mem1 = _gpu_mem_mb()
                for row in rows[first_row:]:  # this session's growth, after every batch ran
                    row["gpu_mem_mb"] = None if mem0 is None or mem1 is None else mem1 - mem0
                del session
            _cross_provider(rows, outputs_by_provider, entry["name"], variant)
    return rows


def _cross_provider(rows: list[dict], outs: dict, model: str, variant: str) -> None:
    """Max abs difference and SQNR of each provider's outputs against the CPU provider's."""
    for row in rows:
        if row["model"] != model or row["variant"] != variant:
            continue
        cpu = outs.get(("cpu", row["batch"]))
        mine = outs.get((row["provider"], row["batch"]))
        base = next((r for r in rows if r["model"] == model and r["variant"] == variant
                     and r["provider"] == "cpu" and r["batch"] == row["batch"]), None)
        if cpu is None or mine is None:
            continue
        name = next(iter(cpu))
        row["max_abs_vs_cpu"] = float(np.max(np.abs(cpu[name].astype(np.float64) - mine[name].astype(np.float64))))
        row["sqnr_vs_cpu_db"] = _metrics(cpu[name], mine[name])["sqnr_db"]
        row["speedup_vs_cpu"] = base["p50_ms"] / row["p50_ms"] if base else None


def _fmt(v, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not np.isfinite(v):
        return "inf" if v > 0 else "-inf"
    return format(v, spec)


def markdown(rows: list[dict]) -> str:
    head = ("| model | variant | provider (used) | batch | p50 ms | p90 ms | samples/s | x CPU | "
            "SQNR vs fp32 dB | top-1 vs fp32 | max abs vs CPU | kernel time on provider | GPU MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        used = r["providers_used"][0].replace("ExecutionProvider", "")
        prov = f"{r['provider']} ({used}{', FELL BACK' if r['fell_back'] else ''})"
        share = r["kernel_share_on_provider"]
        share_txt = "-" if share is None else f"{share * 100:.0f}%"
        if r["ops_elsewhere"] and r["provider"] != "cpu":
            share_txt += " (elsewhere: " + ", ".join(r["ops_elsewhere"][:4]) + ")"
        lines.append(
            f"| {r['model']} | {r['variant']} | {prov} | {r['batch']} | {_fmt(r['p50_ms'], '.3f')} | "
            f"{_fmt(r['p90_ms'], '.3f')} | {_fmt(r['throughput'], '.0f')} | {_fmt(r.get('speedup_vs_cpu'), '.2f')} | "
            f"{_fmt(r['sqnr_vs_fp32_db'], '.1f')} | {_fmt(r['top1_vs_fp32'], '.3f')} | "
            f"{_fmt(r.get('max_abs_vs_cpu'), '.2e')} | {share_txt} | {_fmt(r['gpu_mem_mb'], '.0f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", nargs="?", help="prepared folder to run (GPU mode)")
    p.add_argument("--prepare", metavar="DIR", help="export/convert/quantize into DIR (CPU machine)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--max-mb", type=float, default=40.0)
    p.add_argument("--smoke", action="store_true", help="add a built-in conv net (no torch needed)")
    p.add_argument("--providers", default="cuda,cuda-strict,cpu",
                   help="cuda = onnxruntime defaults (TF32 math for fp32 on Ampere+); cuda-strict = "
                        "CUDA with TF32 off (fp32 variant only); cpu")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.prepare:
        names = [n for n in args.models.split(",") if n] + (["smoke_convnet"] if args.smoke else [])
        variants = [v for v in args.variants.split(",") if v]
        bad = sorted(set(variants) - set(VARIANTS))
        if bad:
            p.error(f"unknown variant(s) {bad}: use {','.join(VARIANTS)}")
        prepare(args.prepare, names, variants, args.max_mb)
        return 0
    if not args.folder:
        p.error("give a prepared folder (GPU mode) or --prepare DIR")
    rows = run_gpu(args.folder, [x for x in args.providers.split(",") if x], [int(b) for b in args.batches.split(",")],
                   args.threads, args.warmup, args.runs, args.iters)
    table = markdown(rows)
    print()
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
