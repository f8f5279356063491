"""Work on a Ray cluster (issue 18): time with 1 to 16 workers, and the same bytes as one process.

    .venv/bin/python bench/cluster.py [--models mobilenet224,resnet224] [--workers 1,2,4,8,16]
        [--jobs auto,sensitivity,static] [--calib 32] [--bundle DIR | --make-bundle DIR]
        [--out docs/benchmarks.md | -] [--json FILE]

Per model (zoo models, exported by ``edgeq.exporter``, or read from a bundle that
``--make-bundle`` wrote, for a machine without torch), three jobs, first in one process (no
cluster), then on a local Ray instance with each worker count (``cluster.connect("local",
workers=N)``: N CPUs, N tasks at once):

1. static calibration (``--mode static --method entropy``: the shards of the calibration data; the
   samples ``--calib-times`` over, the copies with seeded noise, for a data set worth spreading);
2. ``edgeq sensitivity`` (every layer's two variants built and scored by the workers);
3. auto mode (its per-layer ranking on the workers), with latency from a deterministic cost model
   (measured latency decides differently from run to run even in one process, and is measured on
   the driver, never on a worker: what changes with workers is the search's build-and-score time).

Each row: wall time (median of ``--repeats``), speed-up over one process, and whether the result
(the model's bytes; sensitivity's JSON) is identical to one process's. Ray's start-up is not in
the times (it is paid once per session, not per job). The table goes between markers into --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

BEGIN = "<!-- bench/cluster.py: begin -->"
END = "<!-- bench/cluster.py: end -->"
JOBS = ("static calibration", "sensitivity", "auto")


def _case(name: str, args) -> tuple[str, list[dict]]:
    if args.bundle:
        import realworld

        case = realworld.load_bundled(name, args.bundle)
        return case.path, list(case.calib)[: args.calib]
    from edgeq import zoo
    from edgeq.exporter import export

    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, f"{name}.fp32.onnx")
    if not os.path.exists(path):
        export(name, path)
    return path, [dict(f) for f in zoo.get(name).calibration_data(args.calib)]


def _digest(result: Any) -> str:
    """The model file's bytes as the CLI writes it (sensitivity: its JSON report), hashed."""
    import tempfile

    if not hasattr(result, "save"):
        return hashlib.sha256(json.dumps(result.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        result.save(path)
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]


def _more(feeds: list[dict], times: int) -> list[dict]:
    """``feeds`` and ``times - 1`` copies of them with seeded noise (1% of each input's spread):
    a larger calibration set for timing the static calibration's shards."""
    out = list(feeds)
    for k in range(1, times):
        rng = np.random.default_rng(k)
        out += [{n: (a + rng.normal(0, 0.01 * (float(a.std()) or 1.0), a.shape)).astype(a.dtype) if a.dtype.kind == "f"
                 else a for n, a in f.items()} for f in feeds]
    return out


def _warm(_: Any, item: int) -> int:
    """A worker process started and edgeq's auto modules imported (not timed: a running cluster's
    workers are up already)."""
    import edgeq.auto.remote  # noqa: F401
    import edgeq.auto.search  # noqa: F401

    time.sleep(1.0)  # held long enough that the other tasks start their own workers
    return item


def run_job(job: str, path: str, feeds: list[dict], times: int = 1) -> Any:
    import edgeq
    from edgeq.auto import sensitivity
    from edgeq.config import QuantConfig

    if job == "static calibration":
        return edgeq.quantize(path, QuantConfig(mode="static", method="entropy"), _more(feeds, times), progress=False)
    if job == "sensitivity":
        return sensitivity(path, feeds, progress=False)
    return edgeq.quantize(path, QuantConfig(mode="auto", time_budget_s=None), feeds, progress=False)


ANSWERS: dict[tuple[str, str], str] = {}  # (model, job) -> what auto answered (one process)
PHASES: dict[str, float] = {}  # auto's steps: seconds in the last run (inclusive), see _phases


def _phases() -> None:
    """Time auto's steps (inclusive: the fallback holds the chains; ``waits``: this process
    waiting for workers' builds) into ``PHASES``, for where the time falls."""
    import functools

    from edgeq.auto import gate, knapsack, placement, search
    from edgeq.cluster import executor

    def timed(module: Any, name: str, label: str) -> None:
        real = getattr(module, name)

        @functools.wraps(real)
        def wrapper(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                PHASES[label] = PHASES.get(label, 0.0) + time.perf_counter() - start
        setattr(module, name, wrapper)

    for module, name, label in [(search, "calibrate_once", "calibration"), (search, "_refine_methods", "range methods"),
                                (search, "_repair", "repairs"), (search, "_fallback", "fallback"),
                                (search, "_prefix", "prefix bisections"), (search, "_requantize", "taken back"),
                                (search, "_ladder", "ladder"), (knapsack, "by_time", "knapsack"),
                                (placement, "place", "timing"), (gate, "final_gate", "gate"),
                                (executor.Pending, "result", "waits")]:
        timed(module, name, label)


def _timed(job: str, path: str, feeds: list[dict], args) -> tuple[float, str]:
    times, digests = [], set()
    phases = []
    for _ in range(args.repeats):
        PHASES.clear()
        start = time.perf_counter()
        result = run_job(job, path, feeds, args.calib_times)
        times.append(time.perf_counter() - start)
        phases.append({k: round(v, 2) for k, v in PHASES.items()})
        digests.add(_digest(result))
        if job == "auto":
            ANSWERS.setdefault((path, job), result.report["auto"]["verdict"].split(":")[0])
    if len(digests) != 1:
        raise SystemExit(f"{job}: {len(digests)} different results in one setting: not deterministic")
    if job == "auto":
        print(f"    auto's steps (s, inclusive): {phases[times.index(statistics.median(times))] if len(times) % 2 else phases[-1]}",
              flush=True)
    return statistics.median(times), digests.pop()


def measure(name: str, args) -> list[dict[str, Any]]:
    import ray

    from edgeq import cluster
    from edgeq.auto import latency, unit_time
    from edgeq.runtime.cpu import ENV, int8_saturates
    from ortutil import int8_pays_timing, int8_pays_unit_times

    latency.measure = int8_pays_timing  # module docstring (3)
    _phases()
    unit_time.unit_times = int8_pays_unit_times
    path, feeds = _case(name, args)
    rows = []
    base: dict[str, tuple[float, str]] = {}
    for job in args.jobs:
        base[job] = _timed(job, path, feeds, args)
        rows.append({"model": name, "job": job, "workers": "one process", "s": base[job][0], "speedup": 1.0,
                     "identical": True, "answer": ANSWERS.get((path, job))})
        print(f"{name:14} {job:20} one process  {base[job][0]:7.1f} s", flush=True)
    for n in args.workers:
        started = time.perf_counter()
        executor = cluster.connect("local", workers=n, env={ENV: "1" if int8_saturates() else "0"})  # as the CLI pins it
        executor.map(_warm, range(n), label="warm-up")  # every worker process started, as on a running cluster
        ray_start = time.perf_counter() - started
        try:
            with cluster.using(executor):
                for job in args.jobs:
                    seconds, digest = _timed(job, path, feeds, args)
                    row = {"model": name, "job": job, "workers": n, "s": seconds, "speedup": base[job][0] / seconds,
                           "identical": digest == base[job][1], "ray_start_s": ray_start}
                    rows.append(row)
                    print(f"{name:14} {job:20} {n:2d} workers  {seconds:7.1f} s  {row['speedup']:5.2f}x  "
                          f"{'identical' if row['identical'] else 'DIFFERENT'}", flush=True)
        finally:
            executor.close()
            if ray.is_initialized():
                ray.shutdown()
    return rows


def to_markdown(rows: list[dict], command: str, host: str) -> str:
    lines = [
        "## Work on a Ray cluster: time against workers, and the same bytes",
        "",
        f"Produced by `{command}` on {host}. Each job first in one process, then on a local Ray",
        "instance with N workers (`--cluster local --workers N`); time: median of the repeats, Ray's",
        "start-up and its workers' (processes started, modules imported) excluded; identical: the",
        "model's bytes (sensitivity: its JSON report) equal one process's. Auto's latency comes from a",
        "cost model here (bench/cluster.py, docstring (3)).",
        "",
    ]
    models = list(dict.fromkeys(r["model"] for r in rows))
    counts = list(dict.fromkeys(r["workers"] for r in rows))
    lines.append("| model | job | " + " | ".join(f"{c} {'worker' if c == 1 else 'workers'}" if c != "one process"
                                                 else c for c in counts) + " |")
    lines.append("|---|---|" + "---|" * len(counts))
    for model in models:
        for job in JOBS:
            if not any(r["model"] == model and r["job"] == job for r in rows):
                continue
            cells = []
            for c in counts:
                r = next((r for r in rows if r["model"] == model and r["job"] == job and r["workers"] == c), None)
                if r is None:
                    cells.append("-")
                elif c == "one process":
                    cells.append(f"{r['s']:.1f} s")
                else:
                    cells.append(f"{r['s']:.1f} s ({r['speedup']:.2f}x{'' if r['identical'] else ', DIFFERENT'})")
            answer = next((r.get("answer") for r in rows if r["model"] == model and r["job"] == job
                           and r["workers"] == "one process" and r.get("answer")), None)
            lines.append(f"| {model} | {job}{f' ({answer})' if answer else ''} | " + " | ".join(cells) + " |")
    same = all(r["identical"] for r in rows)
    lines += ["", f"Every result identical to one process's: {'yes' if same else 'NO'}."]
    return "\n".join(lines) + "\n"


def replace_block(path: str, text: str) -> None:
    with open(path, encoding="utf-8") as f:
        page = f.read()
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in page and END in page:
        page = page[: page.index(BEGIN)] + block + page[page.index(END) + len(END):]
    else:
        page = page.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mobilenet224,resnet224")
    parser.add_argument("--workers", default="1,2,4,8,16")
    parser.add_argument("--jobs", default="static,sensitivity,auto", help="of: static, sensitivity, auto")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--calib-times", type=int, default=8,
                        help="static calibration on the samples this many times (seeded noise on the copies)")
    parser.add_argument("--bundle", default=None, help="read the models and data from a realworld.py bundle")
    parser.add_argument("--make-bundle", default=None, metavar="DIR", help="only write the bundle (bench/realworld.py)")
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "cluster"))
    parser.add_argument("--out", default="docs/benchmarks.md", help="page for the table ('-': none)")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--render", default=None, metavar="JSON[,JSON]", help="only render these runs' tables")
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    short = {"static": "static calibration", "sensitivity": "sensitivity", "auto": "auto"}
    args.jobs = [short[j] for j in args.jobs.split(",") if j]
    if args.make_bundle:
        import realworld

        return realworld.main(["--models", ",".join(names), "--calib", str(args.calib), "--eval", "8",
                               "--make-bundle", args.make_bundle])
    if args.render:
        return render(args.render.split(","), args.out)
    import platform

    from edgeq.runtime.device_jobs import node_facts

    facts = node_facts()
    host = f"{facts['cpu']} ({facts['cpus']} CPUs, {platform.system()})"
    command = "python bench/cluster.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    rows: list[dict[str, Any]] = []
    for name in names:
        rows += measure(name, args)
        if args.json:  # after each model: a run cut short keeps what it measured
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"rows": rows, "host": host, "command": command}, f, indent=1)
    text = to_markdown(rows, command, host)
    print(text)
    if args.out != "-":
        replace_block(args.out, text)
    return 0


def render(paths: list[str], out: str) -> int:
    """The tables of several runs (their --json files: one per machine) into ``out``."""
    parts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        parts.append(to_markdown(run["rows"], run["command"], run["host"]))
    text = "\n".join(parts[:1] + [p.split("\n", 2)[2] for p in parts[1:]])  # one heading
    print(text)
    if out != "-":
        replace_block(out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
