"""Compare models across execution providers: speed, memory and fidelity in one report.

    report = compare(["fp32.onnx", "int8.onnx"], providers=("cpu", "cuda"), inputs="feeds/")
    report.to_dict()        # JSON-ready; edgeq.report.html.render_html(report.to_dict(), ...)

For every model x provider x threads x batch, ``edgeq.runtime.bench`` measures latency
percentiles, throughput, session start and peak RSS (each configuration in a fresh process).
Fidelity: every model on every provider runs the same feeds (the files of ``inputs``, or random
feeds from the reference's input specs) and each output is compared with the reference, the
first model on the first provider: SQNR, cosine, max abs error, top-1 agreement. GPU memory
(from ``nvidia-smi``; omitted without it) is what each CUDA/TensorRT session added while it
was built and ran the fidelity feeds (the first one also holds the CUDA context). ``profile=True`` adds per-operator-type time from onnxruntime's profiler.

Providers not available in this onnxruntime build are skipped and listed with the reason; a
provider that onnxruntime could not use for a model (it fell back) is flagged in the rows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.errors import ProviderError, UsageError

__all__ = ["CompareReport", "compare", "gpu_memory_mb", "to_markdown", "speedup_text", "INT8_KERNELS"]

logger = logging.getLogger(__name__)

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# Kernels that compute in integers: their share of kernel time says whether int8 runs as int8.
INT8_KERNELS = frozenset({
    "QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger", "QLinearAdd", "QLinearMul",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere", "QAttention", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "NhwcQLinearConv", "QOrderedMatMul",
})


@dataclasses.dataclass(frozen=True)
class CompareReport:
    """All figures of one comparison; ``to_dict`` is the JSON form renderers read."""

    models: tuple[str, ...]
    providers: tuple[str, ...]
    reference: dict[str, str]
    runs: tuple[dict[str, Any], ...]  # BenchResult dicts (+ fell_back)
    fidelity: tuple[dict[str, Any], ...]  # per model x provider: outputs -> metrics
    profiles: tuple[dict[str, Any], ...] = ()
    skipped: tuple[dict[str, str], ...] = ()
    feeds: dict[str, Any] = dataclasses.field(default_factory=dict)
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "edgeq.compare",
            "models": list(self.models),
            "providers": list(self.providers),
            "reference": dict(self.reference),
            "runs": [dict(r) for r in self.runs],
            "fidelity": [dict(f) for f in self.fidelity],
            "profiles": [dict(p) for p in self.profiles],
            "skipped": [dict(s) for s in self.skipped],
            "feeds": dict(self.feeds),
            "environment": dict(self.environment),
        }


def gpu_memory_mb(pid: int | None = None) -> float | None:
    """GPU memory used by process ``pid`` (this one by default) in MiB, from nvidia-smi.

    None when nvidia-smi is missing or fails; 0.0 when the process holds no GPU memory.
    """
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    pid = os.getpid() if pid is None else pid
    total = 0.0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].replace(".", "", 1).isdigit():
            total += float(parts[1])
    return total


def _choose_providers(providers: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    from edgeq.runtime.providers import available_providers, canonical_name

    avail = available_providers()
    chosen, skipped = [], []
    for name in providers:
        full = canonical_name(name)
        if full in avail:
            if full not in [canonical_name(c) for c in chosen]:
                chosen.append(name)
        else:
            reason = f"{full} is not available in this onnxruntime build (available: {', '.join(avail)})"
            logger.warning("compare: skipping %s: %s", name, reason)
            skipped.append({"provider": name, "reason": reason})
    if not chosen:
        raise ProviderError(
            f"none of the requested providers ({', '.join(providers)}) is available; available: "
            f"{', '.join(avail)} (for CUDA/TensorRT install onnxruntime-gpu: pip install 'edgeq[gpu]')"
        )
    return chosen, skipped


def _feeds(reference: Any, inputs: str | None, batch: int | None, count: int, max_feeds: int,
           dims: Mapping[str, int] | None, shapes: Mapping[str, Sequence[int]] | None) -> tuple[list[dict], dict]:
    from edgeq.runtime.feeds import iter_feeds, random_feeds

    specs = reference.input_specs
    if inputs is None:
        feeds = [random_feeds(specs, batch or 1, dims, shapes, seed=i) for i in range(count)]
        return feeds, {"source": "random", "count": count, "batch": batch or 1}
    feeds = []
    for _, feed in iter_feeds(inputs, [s.name for s in specs]):
        feeds.append(reference.check(feed))
        if len(feeds) >= max_feeds:
            logger.info("compare: using the first %d feeds of %s for fidelity", max_feeds, inputs)
            break
    return feeds, {"source": os.fspath(inputs), "count": len(feeds)}


def _rows(outputs: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """One output over all feeds, float64, stacked along the first axis (last axis kept)."""
    return np.concatenate([np.asarray(o[key], dtype=np.float64).reshape(-1, *o[key].shape[-1:]) for o in outputs])


def _fidelity(ref: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    from edgeq.metrics import fidelity

    out = {}
    # Outputs pair by name; models from different tools may rename them, then by position.
    by_name = all(name in got[0] for name in ref[0])
    if not by_name and len(ref[0]) != len(got[0]):
        return {"error": {"error": f"outputs {list(got[0])} do not match the reference's {list(ref[0])}"}}
    for index, name in enumerate(ref[0]):
        other = name if by_name else list(got[0])[index]
        r, g = _rows(ref, name), _rows(got, other)
        if r.shape != g.shape:
            out[name] = {"error": f"shape {list(g.shape)} differs from the reference's {list(r.shape)}"}
            continue
        top1 = all(np.ndim(feed[name]) == 2 for feed in ref)  # (batch, classes): not maps or hidden states
        out[name] = fidelity(r, g, top1=top1) if by_name else {**fidelity(r, g, top1=top1), "matched": other}
    return out


def _environment() -> dict[str, Any]:
    import platform

    import onnxruntime as ort

    from edgeq._version import __version__

    return {"edgeq": __version__, "onnxruntime": ort.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "available_providers": list(ort.get_available_providers())}


def compare(
    models: Sequence[str | os.PathLike],
    providers: Sequence[str] = ("cpu",),
    inputs: str | os.PathLike | None = None,
    *,
    threads: Sequence[int] = (1,),
    batches: Sequence[int] | None = None,
    warmup: int = 3,
    iters: int | None = None,
    seconds: float = 1.0,
    min_iters: int = 10,
    random_feeds: int = 4,
    max_feeds: int = 32,
    profile: bool = False,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    isolate: bool = True,
    progress: bool = False,
    rounds: int | None = None,
) -> CompareReport:
    """Benchmark and cross-check ``models`` on ``providers``; see the module docstring (``rounds``:
    ``edgeq.runtime.bench``'s, models interleaved)."""
    from edgeq.runtime.bench import bench
    from edgeq.runtime.providers import canonical_name
    from edgeq.runtime.session import Session, check_model_file

    models = [os.fspath(m) for m in models]
    if not models:
        raise UsageError("give at least one model to compare")
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    for model in models:
        check_model_file(model)
    chosen, skipped = _choose_providers(list(providers))
    inputs = os.fspath(inputs) if inputs is not None else None
    threads = list(threads) or [1]
    fid_batch = batches[0] if batches else None

    # Fidelity first: it fails fast on inputs that do not fit, before minutes of timing.
    sessions = {(m, p): Session(m, providers=(p,), threads=threads[0]) for m in models for p in chosen}
    ref_key = (models[0], chosen[0])
    feeds, feed_info = _feeds(sessions[ref_key], inputs, fid_batch, random_feeds, max_feeds, dims, shapes)
    outputs, gpu_added = {}, {}
    for key, session in sessions.items():  # sessions are built on first run: measure each one's GPU memory
        before = gpu_memory_mb()
        outputs[key] = [session.run(f) for f in feeds]
        after = gpu_memory_mb()
        gpu_added[key] = None if before is None or after is None else after - before
    fidelity_rows = []
    for (model, provider), session in sessions.items():
        used = session.providers
        row = {
            "model": model, "provider": provider, "providers_used": used,
            "fell_back": used[0] != canonical_name(provider),
            "outputs": {} if (model, provider) == ref_key else _fidelity(outputs[ref_key], outputs[(model, provider)]),
        }
        if used[0] in _GPU_PROVIDERS:  # the first GPU session also holds the CUDA context
            row["gpu_memory_mb"] = gpu_added[(model, provider)]
        fidelity_rows.append(row)
    del sessions, outputs

    results = bench(models, providers=chosen, threads=threads, batches=batches, warmup=warmup, iters=iters,
                    seconds=seconds, min_iters=min_iters, inputs=inputs, dims=dims, shapes=shapes,
                    isolate=isolate, progress=progress, rounds=rounds)
    runs = []
    for r in results:
        d = r.to_dict()
        d["fell_back"] = bool(r.providers_used) and r.providers_used[0] != canonical_name(r.provider)
        runs.append(d)

    profiles = _profiles(models, chosen, threads[0], fid_batch, inputs, dims, shapes) if profile else []
    return CompareReport(
        models=tuple(models), providers=tuple(chosen),
        reference={"model": models[0], "provider": chosen[0]},
        runs=tuple(runs), fidelity=tuple(fidelity_rows), profiles=tuple(profiles),
        skipped=tuple(skipped), feeds=feed_info, environment=_environment(),
    )


def _profiles(models, providers, threads, batch, inputs, dims, shapes) -> list[dict[str, Any]]:
    from edgeq.runtime.profile import profile as run_profile

    out = []
    for model in models:
        for provider in providers:
            result = run_profile(model, providers=(provider,), threads=threads, runs=10, warmup=2, batch=batch,
                                 inputs=inputs, dims=dims, shapes=shapes, keep_trace=False)
            out.append({
                "model": model, "provider": provider, "providers_used": list(result.providers),
                "kernel_ms": result.kernel_ms, "qdq_share": result.qdq_share,
                "int8_kernel_share": sum(o.share for o in result.by_op_type if o.op_type in INT8_KERNELS),
                "nodes_by_provider": dict(result.nodes_by_provider),
                "by_op_type": [dataclasses.asdict(o) for o in result.by_op_type],
            })
    return out


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not np.isfinite(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def speedup_text(run: Mapping[str, Any]) -> str:
    """A run's speed-up against the first model, with the rounds' lowest and highest where it has them
    (``edgeq.runtime.bench``: several rounds): "1.39x (1.30-1.45)"; "-" for the first model."""
    if run.get("speedup") is None:
        return "-"
    spread = run.get("speedup_range")
    return f"{run['speedup']:.2f}x" + ("" if not spread else f" ({spread[0]:.2f}-{spread[1]:.2f})")


def to_markdown(report: Mapping[str, Any]) -> str:
    """The compare report as Markdown: speed table, fidelity table, skipped providers."""
    name = lambda path: os.path.basename(path)  # noqa: E731
    lines = ["# edgeq compare", ""]
    ref = report["reference"]
    lines += [f"Reference: `{name(ref['model'])}` on {ref['provider']}. Feeds: {report['feeds'].get('source')} "
              f"({report['feeds'].get('count')}).", ""]
    lines += ["## Speed", "", "| model | provider (used) | threads | batch | p50 ms | p90 ms | p99 ms | samples/s "
              "| start ms | peak RSS MB | vs first |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        used = (r["providers_used"] or [r["provider"]])[0].removesuffix("ExecutionProvider")
        rss = r.get("peak_rss_delta_bytes")
        lines.append(
            f"| {name(r['model'])} | {r['provider']} ({used}{', fell back' if r.get('fell_back') else ''}) | "
            f"{r['threads']} | {r['batch']} | {_fmt(r['p50_ms'])} | {_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | "
            f"{_fmt(r['throughput'], '.1f')} | {_fmt(r['session_start_ms'], '.1f')} | "
            f"{_fmt(None if rss is None else rss / 2**20, '.1f')} | "
            f"{speedup_text(r)} |"
        )
    lines += ["", "## Fidelity against the reference", "",
              "| model | provider | output | SQNR dB | cosine | max abs error | top-1 agreement | GPU MB added |",
              "|---|---|---|---|---|---|---|---|"]
    for f in report["fidelity"]:
        for out, m in (f["outputs"] or {"(reference)": {}}).items():
            lines.append(
                f"| {name(f['model'])} | {f['provider']} | {out} | {_fmt(m.get('sqnr_db'), '.1f')} | "
                f"{_fmt(m.get('cosine'), '.6f')} | {_fmt(m.get('max_abs_error'), '.3g')} | "
                f"{_fmt(m.get('top1_agreement'), '.3f')} | {_fmt(f.get('gpu_memory_mb'), '.0f')} |"
            )
    if report.get("profiles"):
        lines += ["", "## Where the time goes", "", "| model | provider | kernel ms/run | integer kernels | Q/DQ | "
                  "top op types |", "|---|---|---|---|---|---|"]
        for p in report["profiles"]:
            top = ", ".join(f"{o['op_type']} {o['share']:.0%}" for o in p["by_op_type"][:4])
            lines.append(f"| {name(p['model'])} | {p['provider']} | {_fmt(p['kernel_ms'])} | "
                         f"{p.get('int8_kernel_share', 0):.0%} | {p.get('qdq_share', 0):.0%} | {top} |")
    if report.get("skipped"):
        lines += ["", "## Skipped providers", ""] + [f"- {s['provider']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"
