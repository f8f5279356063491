"""Auto mode on the CUDA provider: what ``auto_quantize(provider="cuda")`` picks and how fast it is.

HOW TO RUN (two steps, two machines)
====================================

1. On the CPU dev machine (torch + the edgeq venv), export the models and the feeds::

     .venv/bin/python bench/auto_gpu.py --prepare out/auto_gpu \\
         --models digits_resnet,kws,tiny_transformer,textdet512

   Each model gets ``<name>.onnx``, ``<name>.calib.npz`` (calibration, batch 1 each) and
   ``<name>.heldout.npz`` (held-out feeds that neither calibration nor auto's search sees), plus
   ``manifest.json``. ``textdet512`` is the trained OCR detector exported with a static
   1x3x512x512 input (``edgeq export edgeq.zoo.textdet:load --input-shape input=1x3x512x512``), its
   feeds 4x4 tiles of the synthetic 128x128 documents; the others are zoo exports with a dynamic
   batch. Feeds over 1 MB are stored as uint8 codes with a per-array offset and step (a real
   image has 8-bit pixels anyway): 18 MB for the four default models; resnet224 alone is 50 MB
   (prepare it into a second folder with ``--models resnet224 --calib 24 --heldout 8``; each
   run call carries at most 64 MiB).

2. On the GPU machine (onnxruntime-gpu, and onnx, onnx_ir, ml_dtypes, click, rich, psutil for
   edgeq's quantizer), from the repository root::

     PYTHONPATH=/tmp/site:. python3 bench/auto_gpu.py out/auto_gpu --json $OUT/auto_gpu.json

   See bench/gpu_providers.py for how the onnxruntime-gpu wheel travels there.

Per model: fp32, uniform int8 QDQ (``QuantConfig(mode="static")``), whole-model fp16
(``QuantConfig(mode="fp16")``), auto with ``provider="cuda"`` and auto with ``provider="cpu"``
(1 thread, what ``edgeq quantize --calib`` does by default), all at ``--min-sqnr`` (30 dB).
Reported: the auto pick's per-layer precision counts, its verdict and search time; every model's
held-out min output SQNR against the fp32 model on the CPU provider (outputs computed on CUDA:
the fp32 row shows the TF32 floor of onnxruntime's CUDA default); CUDA latency at batch 1 and 8
(8 only for a dynamic batch; numpy feeds in and out, as an app sees it; interleaved medians of
``--runs`` runs of ``--iters`` calls) and its ratio to fp32; the CPU auto pick's own latency
verdict (1 thread) beside.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_MODELS = "digits_resnet,kws,tiny_transformer,textdet512"
CALIB = {"textdet512": 16}
HELDOUT = {"textdet512": 6}
BIG = 1 << 20  # arrays over this many bytes are stored as uint8 codes
DEVICE = {"name": "cuda"}  # --device cpu: a smoke run of the GPU step on a machine without CUDA

Feeds = list[dict[str, np.ndarray]]


# -- feeds on disk --------------------------------------------------------------------------------
def save_feeds(path: str, feeds: Feeds) -> None:
    arrays: dict[str, np.ndarray] = {}
    for name in feeds[0]:
        stacked = np.stack([f[name] for f in feeds])
        if stacked.dtype == np.float32 and stacked.nbytes > BIG:
            lo, hi = float(stacked.min()), float(stacked.max())
            step = (hi - lo) / 255 or 1.0
            arrays[f"u8:{name}"] = np.round((stacked - lo) / step).astype(np.uint8)
            arrays[f"lohi:{name}"] = np.array([lo, step], np.float64)
        else:
            arrays[f"raw:{name}"] = stacked
    np.savez_compressed(path, **arrays)


def load_feeds(path: str) -> Feeds:
    with np.load(path, allow_pickle=False) as z:
        columns: dict[str, np.ndarray] = {}
        for key in z.files:
            kind, name = key.split(":", 1)
            if kind == "raw":
                columns[name] = z[key]
            elif kind == "u8":
                lo, step = z[f"lohi:{name}"]
                columns[name] = (z[key].astype(np.float32) * np.float32(step) + np.float32(lo)).astype(np.float32)
    n = len(next(iter(columns.values())))
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


# -- --prepare (CPU dev machine) -----------------------------------------------------------------
def _textdet512(path: str, n_calib: int, n_held: int) -> tuple[Feeds, Feeds]:
    from edgeq.exporter import export
    from edgeq.zoo import synth_text

    export("edgeq.zoo.textdet:load", path, input_shapes={"input": (1, 3, 512, 512)})

    def tiled(feeds: Feeds) -> Feeds:
        out = []
        for i in range(0, len(feeds) - 15, 16):
            tiles = [f["input"][0] for f in feeds[i:i + 16]]
            rows = [np.concatenate(tiles[r * 4:r * 4 + 4], axis=2) for r in range(4)]
            out.append({"input": np.concatenate(rows, axis=1)[None].astype(np.float32)})
        return out

    return tiled(synth_text.calibration_data(16 * n_calib)), tiled(synth_text.eval_data(16 * n_held))


def prepare(folder: str, names: list[str], n_calib: int, n_held: int) -> None:
    from edgeq import zoo
    from edgeq.exporter import export

    os.makedirs(folder, exist_ok=True)
    manifest = {"models": []}
    for name in names:
        path = os.path.join(folder, f"{name}.onnx")
        calib_n, held_n = CALIB.get(name, n_calib), HELDOUT.get(name, n_held)
        if name == "textdet512":
            calib, held = _textdet512(path, calib_n, held_n)
        else:
            export(name, path, dynamic_batch=True)
            spec = zoo.get(name)
            calib, held = spec.calibration_data(calib_n), spec.eval_data(held_n)
        save_feeds(os.path.join(folder, f"{name}.calib.npz"), calib)
        save_feeds(os.path.join(folder, f"{name}.heldout.npz"), held)
        manifest["models"].append({"name": name, "calib": len(calib), "heldout": len(held)})
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1e6
        print(f"{name}: {len(calib)} calibration, {len(held)} held-out feeds; folder now {size:.1f} MB")
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


# -- the GPU run ---------------------------------------------------------------------------------
def _session(data: bytes, provider: str) -> Any:
    from edgeq.runtime import CUDAOptions, Session

    if provider == "cuda":
        sess = Session(data, providers=(CUDAOptions(),))
        if sess.providers[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"CUDA was not used: {sess.providers}")
        return sess
    return Session(data, providers=("cpu",))


def _batch(feeds: Feeds, n: int) -> dict[str, np.ndarray]:
    return {k: np.concatenate([feeds[i % len(feeds)][k] for i in range(n)], axis=0) for k in feeds[0]}


def _outputs(sess: Any, feeds: Feeds) -> dict[str, np.ndarray]:
    runs = [sess.run(f) for f in feeds]
    return {k: np.concatenate([np.asarray(r[k], np.float32) for r in runs]) for k in runs[0]}


def _min_sqnr(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    from edgeq.metrics import sqnr_db

    return min(float(sqnr_db(ref[k], got[k])) for k in ref if np.issubdtype(ref[k].dtype, np.floating))


def _latency(models: dict[str, bytes], feed: dict[str, np.ndarray], runs: int, iters: int) -> dict[str, float]:
    """Median ms per call on CUDA: ``runs`` interleaved rounds of ``iters`` calls, median of medians."""
    sessions = {k: _session(v, DEVICE["name"]) for k, v in models.items()}
    for sess in sessions.values():
        for _ in range(5):
            sess.run(feed)
    per: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, sess in sessions.items():
            t = []
            for _ in range(iters):
                t0 = time.perf_counter()
                sess.run(feed)
                t.append((time.perf_counter() - t0) * 1e3)
            per[k].append(statistics.median(t))
    return {k: statistics.median(v) for k, v in per.items()}


def _counts(auto: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for layer in auto["layers"]:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return counts


def _dynamic_batch(data: bytes) -> bool:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return all(not isinstance(i.shape[0], int) for i in sess.get_inputs())


def run_model(folder: str, name: str, args: Any) -> dict[str, Any]:
    import edgeq
    from edgeq.auto import auto_quantize
    from edgeq.config import QuantConfig
    from edgeq.io import model_bytes

    path = os.path.join(folder, f"{name}.onnx")
    calib = load_feeds(os.path.join(folder, f"{name}.calib.npz"))
    held = load_feeds(os.path.join(folder, f"{name}.heldout.npz"))
    with open(path, "rb") as f:
        fp32 = f.read()
    row: dict[str, Any] = {"model": name, "calib": len(calib), "heldout": len(held), "configs": {}}
    models = {"fp32": fp32}
    t0 = time.perf_counter()
    models["int8"] = model_bytes(edgeq.quantize(path, QuantConfig(mode="static"), calib, progress=False).model)
    models["fp16"] = model_bytes(edgeq.quantize(path, QuantConfig(mode="fp16"), calib, progress=False).model)
    row["build_s"] = round(time.perf_counter() - t0, 1)
    for provider in args.auto_providers:  # "cuda+": search.FP16_AFTER_FALLBACK on
        import edgeq.auto.search as search

        t0 = time.perf_counter()
        search.FP16_AFTER_FALLBACK = provider.endswith("+")
        try:
            result = auto_quantize(path, calib, min_sqnr=args.min_sqnr, provider=provider.rstrip("+"),
                                   progress=False, config=QuantConfig(time_budget_s=args.time_budget))
        finally:
            search.FP16_AFTER_FALLBACK = False
        auto = result.report["auto"]
        models[f"auto-{provider}"] = model_bytes(result.model)
        row[f"auto-{provider}"] = {
            "search_s": round(time.perf_counter() - t0, 1), "verdict": auto["verdict"], "chosen": auto["chosen"],
            "counts": _counts(auto), "search_min_sqnr_db": auto["fidelity"].get("min_sqnr_db"),
            "latency_ms": next((c["latency_ms"] for c in auto["configurations"] if c["name"] == auto["chosen"]), None),
            "fp32_latency_ms": auto["fp32_latency_ms"], "configurations": auto["configurations"],
            "notes": auto["notes"]}
        print(f"  {name} auto-{provider}: {auto['verdict']} ({row[f'auto-{provider}']['search_s']} s)", flush=True)
    ref = _outputs(_session(fp32, "cpu"), held)
    for k, data in models.items():
        row["configs"][k] = {"heldout_min_sqnr_db": round(_min_sqnr(ref, _outputs(_session(data, DEVICE["name"]), held)), 2),
                             "bytes": len(data)}
    batches = [b for b in args.batches if b == 1 or _dynamic_batch(fp32)]
    for b in batches:
        times = _latency(models, _batch(held, b), args.runs, args.iters)
        for k, ms in times.items():
            row["configs"][k][f"b{b}_ms"] = round(ms, 4)
            row["configs"][k][f"b{b}_vs_fp32"] = round(times["fp32"] / ms, 3)
    return row


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(rows: list[dict[str, Any]], args: Any) -> str:
    lines = [f"Target {args.min_sqnr} dB min output SQNR; held-out SQNR of the outputs computed on CUDA vs fp32 on "
             "the CPU provider; latency = CUDA provider, numpy feeds, median ms per call (speedup vs fp32).", "",
             "| model | configuration | held-out SQNR dB | b1 ms (x fp32) | b8 ms (x fp32) | layers | search s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | error: {row['error']} | | | | | |")
            continue
        for k, c in row["configs"].items():
            auto = row.get(k, {})
            counts = ", ".join(f"{n} {p}" for p, n in sorted(auto.get("counts", {}).items())) if auto else ""
            b1 = f"{_f(c.get('b1_ms'))} ({_f(c.get('b1_vs_fp32'), '.2f')}x)" if "b1_ms" in c else "-"
            b8 = f"{_f(c.get('b8_ms'))} ({_f(c.get('b8_vs_fp32'), '.2f')}x)" if "b8_ms" in c else "-"
            lines.append(f"| {row['model']} | {k} | {_f(c['heldout_min_sqnr_db'], '.1f')} | {b1} | {b8} | {counts} | "
                         f"{auto.get('search_s', '')} |")
    lines += ["", "Verdicts (auto's own timing: CUDA for auto-cuda; CPU provider at 1 thread for auto-cpu):"]
    for row in rows:
        for p in args.auto_providers:
            a = row.get(f"auto-{p}")
            if a:
                lines.append(f"- {row['model']} auto-{p}: {a['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--prepare", action="store_true", help="export the models and feeds into FOLDER (needs torch)")
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--calib", type=int, default=32)
    p.add_argument("--heldout", type=int, default=16)
    p.add_argument("--min-sqnr", type=float, default=30.0)
    p.add_argument("--time-budget", type=float, default=90.0, help="auto's time budget per run (s)")
    p.add_argument("--auto-providers", default="cuda,cpu",
                   help="auto runs; 'cuda+' is cuda with whole-model fp16 also after a fallback")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--json", default=None)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="where the held-out outputs and latencies run (cpu: a smoke run without a GPU)")
    args = p.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    if args.prepare:
        prepare(args.folder, names, args.calib, args.heldout)
        return 0
    args.auto_providers = [x for x in args.auto_providers.split(",") if x]
    args.batches = [int(x) for x in args.batches.split(",") if x]
    DEVICE["name"] = args.device
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}", flush=True)
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            rows.append(run_model(args.folder, name, args))
        except Exception as exc:  # one model's failure is a row; the others still run
            import traceback

            traceback.print_exc()
            rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"})
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "args": dict(vars(args).items())}, f, indent=1, default=str)
    print(markdown(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
