"""Prove that a refactor of edgeq's quantize pipeline changed no behaviour: same models, same bytes.

    .venv/bin/python bench/same_models.py --record out/same_models.baseline.json   # before the change
    .venv/bin/python bench/same_models.py --check  out/same_models.baseline.json   # after: table, exit 1 if any differ
        [--workdir out/bench/same_models] [--cases PATTERN,...] [--calib 16] [--eval 8]

Run ``--record`` with the old code (e.g. ``PYTHONPATH=/path/to/old/checkout``) and ``--check`` with
the new code; ``edgeq`` and ``models`` are imported from PYTHONPATH when it has them (the repo root
of this script is only a fallback), and the file each came from is printed first.

Each case is one model x one configuration, run through public API only: ``edgeq.quantize(path,
QuantConfig(...), data, eval_data=..., ranges=..., progress=False)``. Models: small zoo models
(exported once by ``edgeq.export``) and graphs of the robustness corpus (tests/corpus/builders.py).
The fp32 files and the calibration / evaluation feeds are written once into --workdir and reused,
so record and check quantize the very same inputs; their sha256 are recorded and checked first.

Configurations per model: static defaults (with eval data), methods entropy / percentile / mse,
per-tensor weights, symmetric int8 activations, int16 activations, one node and one op type
excluded, one node int16, one node fp16, dynamic, fp16, QOperator format (plain and
integer-only), and a ranges round trip (the static run's ``result.ranges.save`` file fed back with
``ranges=FILE, data=None``). Node names are picked from the static run's report when recording and
then taken from the record, so a check runs exactly the recorded configurations.

Per deterministic case it compares: sha256 of ``onnx_ir.to_proto(result.model).SerializeToString()``,
the op-type histogram (subgraphs included), ``report["summary"]`` without ``seconds``,
``report["float"]`` (node, op, reason), the SQNR per output of ``report["evaluation"]`` (3
decimals) where eval data was given, and the ranges file's sha256 for static runs. A case that
raises records ``ExceptionType: first line``, so an unchanged error compares equal.

Auto mode picks by measured latency, so its model is not byte-deterministic: for two models the
check compares the configurations it tried (name, min SQNR, meets target, float nodes, precision
changes; not the "fp32" entry auto appends when no int8 pick beats fp32 on latency) and shows
the chosen one for information only.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import hashlib
import json
import math
import os
import sys
import time
import traceback
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_edgeq() -> None:
    """``edgeq`` from sys.path (PYTHONPATH first); this repo only as a fallback."""
    import importlib.util

    if importlib.util.find_spec("edgeq") is None and ROOT not in sys.path:
        sys.path.append(ROOT)


_import_edgeq()

import numpy as np  # noqa: E402

FORMAT = "edgeq-same-models"
VERSION = 1
ZOO_MODELS = ("digits_mobilenet", "digits_resnet", "tiny_transformer", "kws")
CORPUS_MODELS = ("paddle_style", "yolo_style", "mobilenetv3_block", "transformer_layer", "lstm_model",
                 "if_loop", "old_torch_style", "tf_style")
AUTO_MODELS = {  # model -> config kwargs (None: config=None, what `edgeq quantize --calib` does)
    "digits_resnet": {"mode": "auto", "time_budget_s": None},
    "kws": None,
}
COMPUTE_OPS = ("Conv", "MatMul", "Gemm")

Feeds = list[dict[str, np.ndarray]]


# -- inputs: fp32 files and feeds, made once into the workdir -------------------------------------
def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _feeds_sha256(feeds: Feeds) -> str:
    h = hashlib.sha256()
    for i, feed in enumerate(feeds):
        for name in sorted(feed):
            a = np.ascontiguousarray(feed[name])
            h.update(f"{i}|{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _save_feeds(path: str, feeds: Feeds) -> None:
    arrays = {f"a{i}_{j}": np.asarray(feed[name]) for i, feed in enumerate(feeds) for j, name in enumerate(feed)}
    names = json.dumps([list(feed) for feed in feeds])
    tmp = path + ".tmp.npz"
    np.savez(tmp, __names__=np.array(names), **arrays)
    os.replace(tmp, path)


def _load_feeds(path: str) -> Feeds:
    with np.load(path, allow_pickle=False) as z:
        names = json.loads(str(z["__names__"]))
        return [{name: z[f"a{i}_{j}"] for j, name in enumerate(sample)} for i, sample in enumerate(names)]


def _corpus() -> dict:
    import edgeq

    for root in (os.path.dirname(os.path.dirname(os.path.abspath(edgeq.__file__))), ROOT):
        tests = os.path.join(root, "tests")
        if os.path.isfile(os.path.join(tests, "corpus", "builders.py")):
            if tests not in sys.path:
                sys.path.append(tests)
            break
    from corpus.builders import CORPUS

    return CORPUS


def prepare_inputs(model: str, workdir: str, n_calib: int, n_eval: int) -> dict[str, Any]:
    """The fp32 file and feeds of ``model`` in ``workdir`` (made when absent) and their sha256."""
    os.makedirs(workdir, exist_ok=True)
    stem = os.path.join(workdir, model.replace(":", "_"))
    path, calib_path, eval_path = f"{stem}.fp32.onnx", f"{stem}.calib{n_calib}.npz", f"{stem}.eval{n_eval}.npz"
    if model.startswith("corpus:"):
        if not all(os.path.exists(p) for p in (path, calib_path, eval_path)):
            import onnx

            proto, feeds_fn = _corpus()[model.split(":", 1)[1]]()
            if not os.path.exists(path):
                onnx.save(proto, path + ".tmp")
                os.replace(path + ".tmp", path)
            if not os.path.exists(calib_path):
                _save_feeds(calib_path, feeds_fn(n_calib, 0))
            if not os.path.exists(eval_path):
                _save_feeds(eval_path, feeds_fn(n_eval, 100))
    else:
        if not os.path.exists(path):
            import edgeq

            edgeq.export(model, path + ".tmp.onnx")
            os.replace(path + ".tmp.onnx", path)
        if not os.path.exists(calib_path) or not os.path.exists(eval_path):
            from edgeq import zoo

            spec = zoo.get(model)
            if not os.path.exists(calib_path):
                _save_feeds(calib_path, spec.calibration_data(n_calib))
            if not os.path.exists(eval_path):
                _save_feeds(eval_path, spec.eval_data(n_eval))
    calib, held_out = _load_feeds(calib_path), _load_feeds(eval_path)
    return {"path": path, "calib": calib, "eval": held_out,
            "hashes": {"fp32_sha256": _sha256_file(path), "calib_sha256": _feeds_sha256(calib),
                       "eval_sha256": _feeds_sha256(held_out)}}


# -- canonical, comparable results -----------------------------------------------------------------
def canon(obj: Any) -> Any:
    """JSON-stable form: non-finite floats as strings, tuples as lists, numpy scalars as Python."""
    if isinstance(obj, dict):
        return {str(k): canon(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canon(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _db(value: Any) -> Any:
    return round(float(value), 3) if isinstance(value, (int, float)) and math.isfinite(value) else canon(value)


def _op_histogram(model_proto: Any) -> dict[str, int]:
    counts: collections.Counter = collections.Counter()

    def walk(graph: Any) -> None:
        for node in graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            counts[key] += 1
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model_proto.graph)
    return dict(sorted(counts.items()))


def _error(e: BaseException) -> dict[str, str]:
    first = (str(e).strip().splitlines() or [""])[0]
    return {"error": f"{type(e).__name__}: {first}"}


def describe(result: Any, case: dict[str, Any]) -> dict[str, Any]:
    """What a deterministic case is compared on."""
    import onnx_ir as ir

    proto = ir.to_proto(result.model)
    report = result.report
    out: dict[str, Any] = {
        "model_sha256": hashlib.sha256(proto.SerializeToString()).hexdigest(),
        "ops": _op_histogram(proto),
        "summary": {k: v for k, v in report.get("summary", {}).items() if k != "seconds"},
        "float": [[e.get("node"), e.get("op"), e.get("reason")] for e in report.get("float", [])],
    }
    if case.get("eval"):
        outputs = (report.get("evaluation") or {}).get("outputs", {})
        out["eval_sqnr_db"] = {name: _db(v.get("sqnr_db")) for name, v in sorted(outputs.items())}
    if case.get("save_ranges"):
        out["ranges_sha256"] = None
        if result.ranges is not None:
            result.ranges.save(case["_ranges_path"])
            out["ranges_sha256"] = _sha256_file(case["_ranges_path"])
    return canon(out)


def describe_auto(result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(compared, informational) for an auto-mode case."""
    auto = result.report.get("auto") or {}
    configurations = list(auto.get("configurations", []))
    # when no int8 pick beats fp32 on latency, auto appends an "fp32" configuration last: timing-dependent
    if auto.get("chosen") == "fp32" and configurations and configurations[-1].get("name") == "fp32":
        configurations.pop()
    tried = [{"name": c.get("name"), "min_sqnr_db": c.get("min_sqnr_db"), "meets_target": c.get("meets_target"),
              "float_nodes": c.get("float_nodes"), "precision_changes": c.get("precision_changes")}
             for c in configurations]
    info = {"chosen": auto.get("chosen"), "verdict": auto.get("verdict"),
            "latency_ms": {c.get("name"): c.get("latency_ms") for c in auto.get("configurations", [])}}
    return canon({"tried": tried}), canon(info)


# -- the cases -------------------------------------------------------------------------------------
def _picks(report: dict[str, Any]) -> dict[str, Any]:
    """Node names / op type for the exclude, int16 and fp16 cases, from a static run's report."""
    quantized = [q for q in report.get("quantized", []) if q.get("node")]
    compute = ([q for q in quantized if q.get("role") in ("compute", "dynamic") and q.get("op") in COMPUTE_OPS]
               or [q for q in quantized if q.get("op") in COMPUTE_OPS] or quantized)
    if not compute:
        return {}
    convs = [q for q in compute if q["op"] == "Conv"] or compute
    ops = collections.Counter(q["op"] for q in compute)
    return {"node": convs[0]["node"], "last_node": compute[-1]["node"],
            "op_type": min(ops, key=lambda op: (ops[op], op))}


def model_cases(model: str, picks: dict[str, Any]) -> list[dict[str, Any]]:
    """The case specs of one model (JSON-ready; a record keeps them and a check replays them)."""
    def case(name: str, config: dict[str, Any] | None, *, data: bool = True, eval: bool = False,
             kind: str = "deterministic", **extra: Any) -> dict[str, Any]:
        return {"id": f"{model}/{name}", "model": model, "config": config, "data": data, "eval": eval,
                "kind": kind, **extra}

    cases = [
        case("static", {"mode": "static"}, eval=True, save_ranges=True),
        case("entropy", {"mode": "static", "method": "entropy"}),
        case("percentile", {"mode": "static", "method": "percentile"}),
        case("mse", {"mode": "static", "method": "mse"}),
        case("per_tensor", {"mode": "static", "granularity": "per-tensor"}),
        case("symmetric_int8", {"mode": "static", "activations": "int8", "symmetric": True}),
        case("act_int16", {"mode": "static", "activations": "int16"}),
    ]
    if picks:
        cases += [
            case("exclude_node", {"mode": "static", "exclude": [picks["node"]]}),
            case("exclude_op", {"mode": "static", "exclude": [picks["op_type"]]}),
            case("int16_node", {"mode": "static", "int16_nodes": [picks["node"]]}),
            case("fp16_node", {"mode": "static", "fp16_nodes": [picks["last_node"]]}),
        ]
    cases += [
        case("dynamic", {"mode": "dynamic"}, data=False, eval=True),
        case("fp16", {"mode": "fp16"}, data=False, eval=True),
        case("qoperator", {"mode": "static", "format": "qoperator"}, eval=True),
        case("qoperator_integer_only", {"mode": "static", "format": "qoperator", "integer_only": True}),
        case("ranges_roundtrip", {"mode": "static"}, data=False, ranges_from=f"{model}/static"),
    ]
    if model in AUTO_MODELS:
        cases.append(case("auto", AUTO_MODELS[model], kind="auto"))
    return cases


def _config(kwargs: dict[str, Any] | None) -> Any:
    import edgeq

    if kwargs is None:
        return None
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return edgeq.QuantConfig(**fixed)


def _ranges_path(workdir: str, model: str) -> str:
    return os.path.join(workdir, "ranges", model.replace(":", "_") + ".ranges.json")


def run_case(case: dict[str, Any], inputs: dict[str, Any], workdir: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(compared result, informational, the QuantResult or None)."""
    import edgeq

    case = dict(case, _ranges_path=_ranges_path(workdir, case["model"]))
    os.makedirs(os.path.dirname(case["_ranges_path"]), exist_ok=True)
    try:
        result = edgeq.quantize(
            inputs["path"], _config(case["config"]), inputs["calib"] if case["data"] else None,
            eval_data=inputs["eval"] if case["eval"] else None,
            ranges=case["_ranges_path"] if case.get("ranges_from") else None, progress=False)
        if case["kind"] == "auto":
            compared, info = describe_auto(result)
            return compared, info, result
        return describe(result, case), {}, result
    except Exception as e:  # noqa: BLE001 - an unchanged error must compare equal too
        if os.environ.get("SAME_MODELS_TRACEBACK"):
            traceback.print_exc()
        return _error(e), {}, None


# -- record / check --------------------------------------------------------------------------------
def _selected(case_id: str, patterns: list[str] | None) -> bool:
    if not patterns:
        return True
    model = case_id.rsplit("/", 1)[0]
    return any(fnmatch.fnmatchcase(case_id, p) or fnmatch.fnmatchcase(model, p) for p in patterns)


def _models(patterns: list[str] | None) -> list[str]:
    names = [*ZOO_MODELS, *(f"corpus:{n}" for n in CORPUS_MODELS)]
    return [m for m in names if not patterns or any(
        fnmatch.fnmatchcase(m, p) or fnmatch.fnmatchcase(m, p.split("/", 1)[0]) for p in patterns)]


def _diff(want: Any, got: Any) -> str:
    if isinstance(want, dict) and isinstance(got, dict):
        keys = [k for k in dict.fromkeys([*want, *got]) if want.get(k, "<absent>") != got.get(k, "<absent>")]
        return ", ".join(keys)
    return "value"


def _short(obj: Any, width: int = 70) -> str:
    text = json.dumps(obj) if not isinstance(obj, str) else obj
    return text if len(text) <= width else text[: width - 3] + "..."


def record(args: argparse.Namespace) -> int:
    patterns = args.cases
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "calib": args.calib, "eval": args.eval,
                           "models": {}, "cases": {}}
    start = time.perf_counter()
    models = _models(patterns)
    for mi, model in enumerate(models, 1):
        t = time.perf_counter()
        inputs = prepare_inputs(model, args.workdir, args.calib, args.eval)
        print(f"== [{mi}/{len(models)}] {model}: inputs ready ({time.perf_counter() - t:.1f} s, "
              f"fp32 {inputs['hashes']['fp32_sha256'][:12]})", flush=True)
        static = model_cases(model, {})[0]
        compared, _, result = run_case(static, inputs, args.workdir)
        picks = _picks(result.report) if result is not None else {}
        out["models"][model] = {**inputs["hashes"], "picks": picks}
        for case in model_cases(model, picks):
            if not _selected(case["id"], patterns):
                continue
            t = time.perf_counter()
            if case["id"] == static["id"]:
                got, info = compared, {}  # already run (the picks come from it)
            else:
                got, info, _ = run_case(case, inputs, args.workdir)
            entry = {"spec": case, "result": got}
            if info:
                entry["info"] = info
            out["cases"][case["id"]] = entry
            what = got.get("error") or (f"chosen {info.get('chosen')!r}" if info else got["model_sha256"][:12])
            print(f"  {case['id']:<45} {time.perf_counter() - t:6.2f} s  {_short(what)}", flush=True)
    out["seconds"] = round(time.perf_counter() - start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
    with open(args.record + ".tmp", "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(args.record + ".tmp", args.record)
    n_auto = sum(1 for c in out["cases"].values() if c["spec"]["kind"] == "auto")
    print(f"recorded {len(out['cases'])} cases ({n_auto} auto) of {len(out['models'])} models in "
          f"{out['seconds']:.0f} s -> {args.record}")
    return 0


def check(args: argparse.Namespace) -> int:
    with open(args.check, encoding="utf-8") as f:
        rec = json.load(f)
    if rec.get("format") != FORMAT:
        raise SystemExit(f"{args.check} is not a {FORMAT} record")
    calib, n_eval = rec["calib"], rec["eval"]
    by_model: dict[str, list[tuple[str, dict]]] = collections.defaultdict(list)
    for case_id, entry in rec["cases"].items():
        if _selected(case_id, args.cases):
            by_model[entry["spec"]["model"]].append((case_id, entry))
    rows: list[tuple[str, str, str]] = []
    failed = 0
    start = time.perf_counter()
    for mi, (model, entries) in enumerate(by_model.items(), 1):
        inputs = prepare_inputs(model, args.workdir, calib, n_eval)
        want_hashes = {k: v for k, v in rec["models"][model].items() if k.endswith("_sha256")}
        changed = [k for k, v in want_hashes.items() if inputs["hashes"].get(k) != v]
        print(f"== [{mi}/{len(by_model)}] {model}" + (f": INPUTS DIFFER ({', '.join(changed)})" if changed else ""),
              flush=True)
        ids = {case_id for case_id, _ in entries}
        for case_id, entry in entries:
            spec = entry["spec"]
            ranges_from = spec.get("ranges_from")
            if ranges_from and ranges_from not in ids:  # its ranges file comes from the current code's static run
                run_case(rec["cases"][ranges_from]["spec"], inputs, args.workdir)
                ids.add(ranges_from)
            t = time.perf_counter()
            got, info, _ = run_case(spec, inputs, args.workdir)
            got = json.loads(json.dumps(got))
            same = got == entry["result"] and not changed
            status = "same" if same else "DIFFERENT"
            detail = "" if same else ("inputs differ: " + ", ".join(changed) if changed
                                      else "differs in " + _diff(entry["result"], got))
            if spec["kind"] == "auto":
                was, now = entry.get("info", {}).get("chosen"), info.get("chosen")
                detail = (detail + "; " if detail else "") + (
                    f"chosen {now!r} (info)" if was == now else f"chosen {was!r} -> {now!r} (info, timing-dependent)")
            if "error" in got and same:
                detail = (detail + "; " if detail else "") + "same error: " + _short(got["error"], 60)
            failed += not same
            rows.append((case_id, status, detail))
            print(f"  {case_id:<45} {time.perf_counter() - t:6.2f} s  {status}", flush=True)
    width = max([len(r[0]) for r in rows] + [4])
    print(f"\n{'case':<{width}}  result     detail")
    print(f"{'-' * width}  ---------  ------")
    for case_id, status, detail in rows:
        print(f"{case_id:<{width}}  {status:<9}  {detail}")
    print(f"\n{len(rows) - failed} of {len(rows)} cases same, {failed} different "
          f"({time.perf_counter() - start:.0f} s; record {args.check})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--record", metavar="FILE.json", help="run every case and write the results")
    what.add_argument("--check", metavar="FILE.json", help="run the recorded cases and compare; exit 1 if any differ")
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "same_models"),
                        help="fp32 models, feeds and ranges files (made once, reused)")
    parser.add_argument("--cases", type=lambda s: [p.strip() for p in s.split(",") if p.strip()], default=None,
                        help="comma-separated globs over case ids (MODEL/CASE) or model names, "
                             "e.g. 'digits_resnet,corpus:*/static'")
    parser.add_argument("--calib", type=int, default=16, help="calibration samples per model (record only)")
    parser.add_argument("--eval", type=int, default=8, help="held-out eval samples per model (record only)")
    args = parser.parse_args(argv)

    import edgeq
    from edgeq import zoo

    print(f"edgeq from {edgeq.__file__}\nzoo from {zoo.__file__}", flush=True)
    return record(args) if args.record else check(args)


if __name__ == "__main__":
    sys.exit(main())
