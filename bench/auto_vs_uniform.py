"""edgeq auto vs uniform int8 vs fp32 vs onnxruntime.quantization, zoo models and the corpus.

    .venv/bin/python bench/auto_vs_uniform.py                    # full run: every zoo model + corpus
    .venv/bin/python bench/auto_vs_uniform.py --quick --models digits_resnet   # smoke run, < 1 min
        [--models zoo,corpus | name,corpus:name,...] [--calib 32] [--eval 100] [--min-sqnr 30]
        [--extra mobilenet224:15] [--repeats 3] [--runs 60] [--out docs/auto.md] [--hub docs/benchmarks.md]

Per model, four configurations from the same fp32 ONNX file:

* fp32 (zoo models exported once by ``edgeq.exporter`` into --workdir, out/bench/auto);
* edgeq uniform int8: ``edgeq.quantize`` static with defaults (every quantizable node int8);
* edgeq auto: ``edgeq.auto.auto_quantize``, target min output SQNR --min-sqnr (or the model's
  user metric and score, see USER_METRICS), 1 thread on the CPU provider; its search is scored
  on calibration-split samples (zoo: 16 drawn with seed 1; corpus: 8 with seed 50);
* onnxruntime.quantization (``_ort_baseline.py``): quant_pre_process, then static QDQ MinMax
  per-channel; its dynamic result too where static fails or the model has no Conv.

Then, on HELD-OUT eval data that neither calibration nor auto's search saw: min output SQNR vs
fp32, the task metric (top-1 vs labels / agreement with fp32 for classifiers, mean cosine and
nearest-neighbour agreement for embeddings, the user metric where one exists); latency at 1
thread, batch 1, CPU provider (all configurations' runs interleaved, --repeats medians of up to
--runs runs, then their median); int8 layers (Conv/MatMul/Gemm nodes that run int8, counted in
the graph); quantize time. Writes the table between the markers in --out and a summary between
the markers in --hub (each only when the markers are there).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _ort_baseline import ort_quantize  # noqa: E402

BEGIN, END = "<!-- bench/auto_vs_uniform.py: begin -->", "<!-- bench/auto_vs_uniform.py: end -->"
HUB_BEGIN, HUB_END = "<!-- bench/auto_vs_uniform.py summary: begin -->", "<!-- bench/auto_vs_uniform.py summary: end -->"
QUICK_MODELS = "digits_resnet,tiny_transformer,corpus:mobilenetv3_block,corpus:transformer_layer"
SKIP_CORPUS = {"big_external"}  # 2.4 GB with external data: its own test covers it
# zoo models whose quality is a user metric (auto's target is then the score, not the SQNR):
# name -> ("module:function" taking (reference_outputs, outputs) dicts, min score, label)
USER_METRICS = {"textdet": ("edgeq.zoo.metrics:textmap_iou", 0.95, "IoU@0.3 vs fp32")}
STEPS = ("export", "uniform int8", "auto", "onnxruntime", "evaluate")

Feeds = list[dict[str, np.ndarray]]


@dataclasses.dataclass
class Case:
    """One model: its fp32 file, calibration / search / held-out data, and how it is scored."""

    name: str
    path: str
    calib: Feeds
    search: Feeds
    held_out: Feeds
    task: str  # classification | embedding | hidden_states | corpus | <user metric label>
    labels: np.ndarray | None = None
    metric: str | None = None
    min_score: float | None = None
    metric_label: str = ""


# -- the models ---------------------------------------------------------------------------------
def model_names(spec: str) -> list[str]:
    """``zoo`` -> every zoo name; ``corpus`` -> ``corpus:NAME`` for every corpus model."""
    from edgeq import zoo
    from edgeq.errors import UsageError

    names: list[str] = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        if item == "zoo":
            names += [n for n in zoo.names() if zoo.get(n).task != "language_model"]  # LMs: bench/llm.py
        elif item == "corpus":
            names += [f"corpus:{n}" for n in _corpus() if n not in SKIP_CORPUS]
        elif item.startswith("corpus:"):
            if item.split(":", 1)[1] not in _corpus():
                raise SystemExit(f"unknown corpus model {item!r}: choose among {', '.join(_corpus())}")
            names.append(item)
        else:
            try:
                zoo.get(item)  # an unknown name fails here, before any work, listing the zoo
            except UsageError as e:
                raise SystemExit(str(e)) from None
            names.append(item)
    return list(dict.fromkeys(names))


def _corpus() -> dict:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from corpus.builders import CORPUS

    return CORPUS


def _sources_mtime() -> float:
    """Newest modification time under edgeq/zoo/ and edgeq/exporter/ (code and checkpoints)."""
    newest = 0.0
    for folder in (os.path.join("edgeq", "zoo"), os.path.join("edgeq", "exporter")):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            newest = max([newest, *(os.path.getmtime(os.path.join(dirpath, f)) for f in files
                                    if not f.endswith(".pyc"))])
    return newest


def _user_metric(name: str) -> tuple[str, float, str] | None:
    entry = USER_METRICS.get(name)
    if entry is None:
        return None
    module, _, attr = entry[0].partition(":")
    try:
        getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    return entry


def make_case(name: str, args) -> Case:
    os.makedirs(args.workdir, exist_ok=True)
    if name.startswith("corpus:"):
        import onnx

        short = name.split(":", 1)[1]
        model, feeds = _corpus()[short]()
        path = os.path.join(args.workdir, f"corpus_{short}.onnx")
        onnx.save(model, path)
        return Case(name, path, feeds(args.corpus_calib, 0), feeds(8, 50), feeds(args.corpus_eval, 100), "corpus")
    from edgeq import zoo
    from edgeq.exporter import export

    spec = zoo.get(name)
    path = os.path.join(args.workdir, f"{name}.fp32.onnx")
    if args.fresh or not os.path.exists(path) or os.path.getmtime(path) < _sources_mtime():
        export(name, path)  # cached in --workdir (MiniLM: ~90 MB, ~10 s), again when edgeq/zoo/ changes
    labels = spec.eval_labels(args.eval) if spec.task == "classification" else None
    case = Case(name, path, spec.calibration_data(args.calib), spec.calibration_data(16, seed=1),
                spec.eval_data(args.eval), spec.task, labels)
    metric = _user_metric(name)
    if metric is not None:
        case.metric, case.min_score, case.metric_label = metric
    return case


# -- measuring ----------------------------------------------------------------------------------
def _outputs(data: bytes, feeds: Feeds) -> list[tuple[str, list[np.ndarray]]]:
    from edgeq.report.evaluate import cpu_session

    sess = cpu_session(data, 1)
    runs = [sess.run(None, f) for f in feeds]
    return [(o.name, [r[i] for r in runs]) for i, o in enumerate(sess.get_outputs())]


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    try:
        return np.concatenate(arrays)
    except ValueError:  # shapes differ between feeds (symbolic H, W)
        return np.concatenate([a.reshape(-1) for a in arrays])


def fidelity(case: Case, ref: list, got: list) -> dict[str, Any]:
    """Min SQNR over float outputs (all held-out samples at once) and the task metric."""
    from edgeq.metrics import sqnr_db

    out: dict[str, Any] = {}
    pairs = [(r, g) for (_, r), (_, g) in zip(ref, got) if np.asarray(r[0]).dtype.kind == "f"]
    out["sqnr"] = min(sqnr_db(np.concatenate([a.ravel() for a in r]), np.concatenate([a.ravel() for a in g]))
                      for r, g in pairs)
    if case.task in ("classification", "embedding", "hidden_states"):  # zoo: one batch-1 output per sample
        r0, g0 = (np.concatenate([a.reshape(len(a), -1) for a in outs[0][1]]) for outs in (ref, got))
    if case.task == "classification":
        if case.labels is not None:
            out["top1"] = float(np.mean(g0.argmax(-1) == np.asarray(case.labels)[: len(g0)]))
        out["agree"] = float(np.mean(g0.argmax(-1) == r0.argmax(-1)))
    elif case.task in ("embedding", "hidden_states"):
        rn = r0 / np.linalg.norm(r0, axis=1, keepdims=True)
        gn = g0 / np.linalg.norm(g0, axis=1, keepdims=True)
        out["mean_cos"] = float(np.mean(np.sum(rn * gn, axis=1)))
        sr, sg = rn @ rn.T, gn @ gn.T
        np.fill_diagonal(sr, -np.inf)
        np.fill_diagonal(sg, -np.inf)
        out["nn"] = float(np.mean(sr.argmax(1) == sg.argmax(1)))
    if case.metric:
        from edgeq.auto.workbench import resolve_metric

        fn = resolve_metric(case.metric)
        out["score"] = float(fn({n: _stack(a) for n, a in ref}, {n: _stack(a) for n, a in got}))
    return out


def int8_layers(data: bytes) -> tuple[int, int, int]:
    """(Conv/MatMul/Gemm nodes that run int8, all of them, those with int16 activations), If/Loop
    bodies included: a float op counts as int8 when an input comes from DequantizeLinear (QDQ),
    int16 when such an input is int16 (its zero point's type), an integer op always int8."""
    import onnx

    model = onnx.load_from_string(data)
    integer = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat", "QGemm", "QAttention", "DynamicQuantizeLSTM"}
    floating = {"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU"}
    graphs, nodes = [model.graph], []
    while graphs:
        graph = graphs.pop()
        nodes += list(graph.node)
        graphs += [a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    producer = {o: n for n in nodes for o in n.output}
    inits = {t.name: t.data_type for g in [model.graph] for t in g.initializer}
    inits.update({n.output[0]: n.attribute[0].t.data_type for n in nodes if n.op_type == "Constant" and n.attribute
                  and n.attribute[0].type == onnx.AttributeProto.TENSOR})
    wide = {onnx.TensorProto.INT16, onnx.TensorProto.UINT16}
    int8 = int16 = total = 0
    for node in nodes:
        if node.op_type in integer:
            int8, total = int8 + 1, total + 1
        elif node.op_type in floating:
            total += 1
            dq = [producer[i] for i in node.input if i in producer and producer[i].op_type == "DequantizeLinear"]
            if any(len(d.input) > 2 and inits.get(d.input[2]) in wide for d in dq):
                int16 += 1
            elif dq:
                int8 += 1
    return int8, total, int16


def run_model(case: Case, args, step) -> list[dict]:
    import edgeq
    from edgeq.auto import auto_quantize
    from edgeq.config import QuantConfig
    from edgeq.io import model_bytes
    from edgeq.report.evaluate import cpu_session, median_latency_ms

    with open(case.path, "rb") as f:
        models: dict[str, bytes] = {"fp32": f.read()}
    target = (None, case.min_score) if case.metric else (args.min_sqnr, None)
    rows: dict[str, dict[str, Any]] = {"fp32": {}}
    step(case.name, "uniform int8")
    t0 = time.perf_counter()
    try:
        uniform = edgeq.quantize(case.path, QuantConfig(), case.calib, progress=False)
        models["edgeq uniform int8"] = model_bytes(uniform.model)
        rows["edgeq uniform int8"] = {"seconds": time.perf_counter() - t0, "target": target}
    except Exception as e:  # a crash is a finding: put it in the table
        rows["edgeq uniform int8"] = {"error": f"crashed: {type(e).__name__}: {' '.join(str(e).split())[:140]}"}
    for i, (min_sqnr, min_score) in enumerate([target] + [(t, None) for t in args.extra.get(case.name, [])]):
        label = "edgeq auto" if i == 0 else f"edgeq auto (target {min_sqnr:g} dB)"
        step(case.name, "auto")
        t0 = time.perf_counter()
        try:
            result = auto_quantize(case.path, case.calib, eval_data=case.search, min_sqnr=min_sqnr,
                                   metric=case.metric if min_score is not None else None, min_score=min_score,
                                   threads=1, progress=False)
        except Exception as e:  # a crash of auto is a finding: put it in the table
            rows[label] = {"error": f"auto crashed: {type(e).__name__}: {' '.join(str(e).split())[:140]}"}
            continue
        models[label] = model_bytes(result.model)
        auto = result.report["auto"]
        rows[label] = {"seconds": time.perf_counter() - t0, "verdict": auto.get("verdict", ""),
                       "target": (min_sqnr, min_score), "fp32_returned": auto.get("chosen") == "fp32"}
    step(case.name, "onnxruntime")
    for run in ort_quantize(case.path, case.calib, args.workdir, dynamic=args.ort_dynamic,
                            check_feed=case.held_out[0], stem=case.name.replace(":", "_")):
        rows[run.label] = {"seconds": run.seconds, "note": run.note, "target": target}
        if run.error:
            rows[run.label]["error"] = run.error
        else:
            with open(run.path, "rb") as f:
                models[run.label] = f.read()
    step(case.name, "evaluate")
    t0 = time.perf_counter()
    ref = _outputs(models["fp32"], case.held_out)
    fast = (time.perf_counter() - t0) / len(case.held_out) < 2e-3  # sub-ms models: more runs, same budget
    for label, data in models.items():
        rows[label].update(fidelity(case, ref, ref if label == "fp32" else _outputs(data, case.held_out)))
        rows[label]["int8"] = int8_layers(data)
    # plain onnxruntime sessions (no feed checks: they would weigh on sub-ms models), runs interleaved
    sessions = [cpu_session(data, 1) for data in models.values()]
    medians: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.repeats):
        times = median_latency_ms(sessions, case.held_out[0], runs=args.runs * (5 if fast else 1), budget_s=30.0)
        for k, v in zip(models, times):
            medians[k].append(v)
    fp32_ms = statistics.median(medians["fp32"])
    out = []
    for label, row in rows.items():
        if label in medians:
            row["latency_ms"] = statistics.median(medians[label])
            row["speedup"] = fp32_ms / row["latency_ms"]
        if "target" in row and "sqnr" in row:
            row["meets"] = _meets(row)
        out.append({"model": case.name, "config": label, "task": case.task, "metric_label": case.metric_label, **row})
    return out


def _meets(row: dict) -> str:
    """'yes' / 'no: why': the target met on held-out data, and not slower than fp32."""
    min_sqnr, min_score = row["target"]
    why = []
    if min_sqnr is not None and row["sqnr"] < min_sqnr:
        why.append(f"held-out SQNR {row['sqnr']:.1f} < {min_sqnr:g} dB")
    if min_score is not None and row.get("score", -np.inf) < min_score:
        why.append(f"held-out score {row.get('score', float('nan')):.3f} < {min_score:g}")
    if row["speedup"] < 1.0:
        why.append(f"{row['speedup']:.2f}x fp32" + (" (within 3% noise)" if row["speedup"] >= 0.97 else ""))
    if why:
        return "no: " + "; ".join(why)
    return "yes (fp32 returned)" if row.get("fp32_returned") else "yes"


# -- tables -------------------------------------------------------------------------------------
def _db(value: float) -> str:
    return "exact" if value == float("inf") else f"{value:.1f}"


def _task_text(r: dict) -> str:
    parts = []
    if "top1" in r:
        parts.append(f"top-1 {r['top1']:.3f}")
    if "agree" in r:
        parts.append(f"agree {r['agree']:.3f}")
    if "mean_cos" in r:
        parts.append(f"mean cos {r['mean_cos']:.5f}, NN {r['nn']:.3f}")
    if "score" in r:
        parts.append(f"{r['metric_label'] or 'score'} {r['score']:.3f}")
    return ", ".join(parts) or "n/a"


def _layers(counts: tuple[int, int, int]) -> str:
    int8, total, int16 = counts
    return f"{int8}/{total}" + (f" (+{int16} int16)" if int16 else "")


def to_markdown(rows: list[dict], command: str, args, wall_s: float) -> str:
    import onnxruntime

    lines = [
        "## Benchmark: auto vs uniform int8 vs fp32 vs onnxruntime.quantization",
        "",
        "Per-layer precision chosen by measured error and measured speed (`edgeq.auto.auto_quantize`, target:",
        f"min output SQNR {args.min_sqnr:g} dB on every output, or the model's user metric) against uniform int8",
        "(`edgeq.quantize`, static defaults: every quantizable node int8), onnxruntime.quantization",
        "(`quant_pre_process`, then `quantize_static` QDQ MinMax per-channel; `quantize_dynamic` too where",
        "static fails or the model has no Conv) and the fp32 model.",
        "",
        f"- Fidelity: held-out eval data never seen by calibration or by auto's search (zoo: {args.eval} samples;",
        f"  corpus: {args.corpus_eval} feeds of batch 2). Min output SQNR vs fp32; task metric: top-1 vs labels and",
        "  top-1 agreement with fp32 (classifiers), mean cosine and nearest-neighbour agreement with fp32",
        "  (embeddings, hidden states), the user metric where the model has one; n/a for the corpus.",
        f"- Latency: CPU provider, onnxruntime {onnxruntime.__version__}, 1 thread, batch 1 (corpus: its feed),",
        f"  every configuration's runs interleaved, median of {args.repeats} medians of up to {args.runs} runs.",
        "- int8 layers: Conv/MatMul/Gemm nodes running int8 (QDQ-fed or integer ops) / all of them; \"+N int16\":",
        "  N more with int16 activations.",
        "- Quantize time: wall seconds in one process (auto: the whole search, timing included; ORT: pre-process",
        "  plus quantize).",
        "- Last column: the configuration meets auto's target on the held-out data and is not slower than fp32",
        "  (the acceptance of issue 7, applied to every configuration for comparison).",
        "",
        f"Produced by (wall time {wall_s / 60:.1f} min on {os.cpu_count()} shared cores):",
        "",
        "```",
        command,
        "```",
        "",
        "| model | configuration | min output SQNR, held-out (dB) | task metric, held-out | latency 1 thread (ms) | "
        "vs fp32 | int8 layers | quantize time (s) | meets target, not slower than fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['config']} | {r['error'].replace('|', '/')} | | | | | | |")
            continue
        secs = "" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        lat = f"{r['latency_ms']:.3f} | {r['speedup']:.2f}x" if "latency_ms" in r else " | "
        lines.append(f"| {r['model']} | {r['config']} | {_db(r['sqnr'])} | {_task_text(r)} | {lat} | "
                     f"{_layers(r['int8'])} | {secs} | {r.get('meets', '')} |")
        if r.get("verdict"):
            notes.append(f"- {r['model']}, {r['config']}: {r['verdict']}")
    for r in rows:
        if r.get("note") and r["note"] != "after quant_pre_process":
            notes.append(f"- {r['model']}, {r['config']}: {r['note']}")
    lines += ["", "Auto's verdicts (its own measurements, on its search data) and onnxruntime notes:", "", *notes]
    return "\n".join(lines) + "\n"


def _pick(rows: list[dict], model: str, config: str) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["config"] == config), None)


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if "error" in r:
        return r["error"].split(":")[0]
    fid = f"IoU {r['score']:.3f}" if "score" in r else ("exact" if r["sqnr"] == float("inf") else f"{r['sqnr']:.1f} dB")
    return f"{fid} / {r['speedup']:.2f}x"


def hub_summary(rows: list[dict], command: str, args) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    autos = [_pick(rows, m, "edgeq auto") for m in models]
    misses = [f"{a['model']} ({a.get('meets') or a.get('error')})" for a in autos
              if a and not a.get("meets", "").startswith("yes")]

    def score(config: str) -> str:
        picked = [r for m in models if (r := _pick(rows, m, config))]
        met = sum(r.get("meets", "").startswith("yes") for r in picked)
        failed = sum(1 for r in picked if "error" in r)
        return f"{config} {met} of {len(picked)}" + (f" ({failed} failed to quantize or load)" if failed else "")

    lines = [
        "```",
        command,
        "```",
        "",
        f"Target: min output SQNR {args.min_sqnr:g} dB on every output (textdet: IoU@0.3 of the text map vs fp32",
        "\u2265 0.95), measured on held-out data; latency: CPU provider, 1 thread, batch 1, interleaved runs, median",
        "of medians. Full table, task metrics, int8 layers, quantize times and auto's verdicts:",
        "[auto.md](auto.md#benchmark-auto-vs-uniform-int8-vs-fp32-vs-onnxruntimequantization).",
        "",
        "- Meets the target on held-out data and is not slower than fp32 (issue 7's acceptance): "
        + ", ".join(score(c) for c in ("edgeq auto", "edgeq uniform int8", "ORT static", "ORT dynamic"))
        + " (ORT dynamic runs where ORT static fails or the model has no Conv).",
        "- edgeq auto misses it on: " + ("; ".join(misses) if misses else "none") + ".",
        "",
        "| model | fp32 ms | edgeq uniform int8 | edgeq auto | auto: meets target, not slower | ORT static | ORT dynamic |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, a in zip(models, autos):
        fp32 = _pick(rows, m, "fp32")
        if fp32 is None or "error" in fp32:
            lines.append(f"| {m} | {fp32['error'] if fp32 else 'failed'} | | | | | |")
            continue
        meets = (a.get("meets") or a.get("error", "")) if a else "-"
        lines.append(f"| {m} | {fp32['latency_ms']:.3f} | {_cell(_pick(rows, m, 'edgeq uniform int8'))} | {_cell(a)} | "
                     f"{meets} | {_cell(_pick(rows, m, 'ORT static'))} | {_cell(_pick(rows, m, 'ORT dynamic'))} |")
    lines += ["", "Cells: min output SQNR on held-out data (IoU for textdet) / speed-up over fp32."]
    return "\n".join(lines) + "\n"


def replace_block(path: str, begin: str, end: str, text: str) -> None:
    """Replace what lies between ``begin`` and ``end`` in ``path`` (atomically); a page without
    the markers is left alone (a warning says so)."""
    from edgeq.io import atomic_path

    page = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if begin not in page or end not in page:
        print(f"warning: {path} has no {begin} ... {end} markers: not written", file=sys.stderr)
        return
    page = page[: page.index(begin) + len(begin)] + "\n" + text + page[page.index(end):]
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma list of zoo names, corpus:NAME, 'zoo', 'corpus' "
                        "(default zoo,corpus; with --quick " + QUICK_MODELS + ")")
    parser.add_argument("--quick", action="store_true", help="smoke run: little data, 1 latency repeat, no docs written")
    parser.add_argument("--calib", type=int, default=None, help="zoo calibration samples (default 32; quick 8)")
    parser.add_argument("--eval", type=int, default=None, help="zoo held-out eval samples (default 100; quick 20)")
    parser.add_argument("--corpus-calib", type=int, default=16)
    parser.add_argument("--corpus-eval", type=int, default=8)
    parser.add_argument("--min-sqnr", type=float, default=30.0)
    parser.add_argument("--extra", default="", help="extra auto targets per model: name:dB[,name:dB]")
    parser.add_argument("--ort-dynamic", default="auto", choices=["auto", "always", "fallback", "never"],
                        help="when to add onnxruntime's dynamic result (auto: static failed or no Conv)")
    parser.add_argument("--repeats", type=int, default=None, help="latency medians (default 3; quick 1)")
    parser.add_argument("--runs", type=int, default=None, help="interleaved runs per median (default 60; quick 15)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "out", "bench", "auto"))
    parser.add_argument("--fresh", action="store_true", help="export the zoo models again (else cached in --workdir)")
    parser.add_argument("--out", default=None, help="page with the markers (default docs/auto.md; quick: none; '-': none)")
    parser.add_argument("--hub", default=None, help="hub page for the summary (default docs/benchmarks.md; quick: none)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.models = args.models or (QUICK_MODELS if quick else "zoo,corpus")
    args.calib = args.calib or (8 if quick else 32)
    args.eval = args.eval or (20 if quick else 100)
    args.repeats = args.repeats or (1 if quick else 3)
    args.runs = args.runs or (15 if quick else 60)
    if quick:
        args.corpus_calib, args.corpus_eval = min(args.corpus_calib, 8), min(args.corpus_eval, 4)
    docs = os.path.join(ROOT, "docs")
    args.out = None if args.out == "-" or (args.out is None and quick) else (args.out or os.path.join(docs, "auto.md"))
    args.hub = None if args.hub == "-" or (args.hub is None and quick) else (args.hub or os.path.join(docs, "benchmarks.md"))
    extra: dict[str, list[float]] = {}
    for item in filter(None, args.extra.split(",")):
        model, _, target = item.partition(":")
        extra.setdefault(model.strip(), []).append(float(target))
    args.extra = extra
    import logging

    logging.basicConfig(level=logging.ERROR)
    from edgeq.calibrate.collect import progress_bar

    names = model_names(args.models)
    rows: list[dict] = []
    started = time.perf_counter()
    with progress_bar(True) as bar:
        task = bar.add_task("auto_vs_uniform", total=len(names) * len(STEPS))

        for index, name in enumerate(names):
            def step(name: str, what: str, base: int = index * len(STEPS)) -> None:
                done = STEPS.index(what) if what in STEPS else STEPS.index("auto")
                bar.update(task, completed=base + done, description=f"{name}: {what}")

            t0 = time.perf_counter()
            step(name, "export")
            try:
                model_rows = run_model(make_case(name, args), args, step)
            except Exception as e:  # one broken model must not cost the whole run: record it
                text = " ".join(str(e).split())[:200]
                model_rows = [{"model": name, "config": "fp32", "error": f"failed: {type(e).__name__}: {text}"}]
            bar.update(task, completed=(index + 1) * len(STEPS))
            rows += model_rows
            bar.console.print(f"{name}: {time.perf_counter() - t0:.0f} s; " + "; ".join(
                f"{r['config']} " + (r["error"][:60] if "error" in r else f"{r['sqnr']:.1f} dB {r['speedup']:.2f}x")
                for r in model_rows))
    wall = time.perf_counter() - started
    command = ".venv/bin/python bench/auto_vs_uniform.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = to_markdown(rows, command.strip(), args, wall)
    for path, begin, end, body in ((args.out, BEGIN, END, text), (args.hub, HUB_BEGIN, HUB_END, None)):
        if path:
            replace_block(path, begin, end, body if body is not None else hub_summary(rows, command.strip(), args))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
