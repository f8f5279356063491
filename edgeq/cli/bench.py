"""``edgeq bench``: latency, throughput, session start, memory and size of one or more models."""

from __future__ import annotations

import json
import os

import click

from edgeq.cli.cluster_opts import device_options, opened
from edgeq.cli.console import console as _console
from edgeq.errors import UsageError

__all__ = ["bench", "parse_int_list", "parse_shapes", "parse_dims", "render_table"]


def parse_int_list(text: str, option: str, minimum: int = 1) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated integers such as 1,2,4, not {text!r}") from None
    if not values or any(v < minimum for v in values):
        kind = "positive integers" if minimum > 0 else "integers >= 0 (0: onnxruntime's default)"
        raise UsageError(f"{option} takes {kind} such as 1,2,4, not {text!r}")
    return values


def parse_shapes(items: tuple[str, ...]) -> dict[str, list[int]]:
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            shape = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            shape = []
        if not sep or not name or not shape or any(d < 0 for d in shape):
            raise UsageError(f"--input-shape takes NAME=1x3x224x224, not {item!r}")
        shapes[name] = shape
    return shapes


def parse_dims(items: tuple[str, ...]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value.isdigit():
            raise UsageError(f"--dim takes a symbolic dim's NAME=SIZE such as seq=128, not {item!r}")
        dims[name] = int(value)
    return dims


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _provider(r) -> str:
    used = r.providers_used[0].removesuffix("ExecutionProvider") if r.providers_used else r.provider
    return f"{r.provider} FELL BACK to {used}" if r.fell_back else used


def render_table(results) -> object:
    from rich.table import Table

    from edgeq.runtime.compare import speedup_text

    several = any(r.speedup is not None for r in results)
    rounds = max((r.rounds for r in results), default=1)
    title = "edgeq bench (latency in ms" + (f"; medians of {rounds} rounds, models interleaved" if rounds > 1 else "") + ")"
    table = Table(title=title, title_justify="left")
    for col in ("model", "provider", "threads", "batch", "p50", "p90", "p99", "mean", "samples/s",
                "start ms", "peak MB", "size MB", "iters"):
        table.add_column(col, justify="left" if col in ("model", "provider") else "right")
    if several:
        table.add_column("vs first", justify="right")
    for r in results:
        row = [
            os.path.basename(r.model),
            _provider(r),
            str(r.threads),
            str(r.batch),
            f"{r.p50_ms:.3f}",
            f"{r.p90_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.mean_ms:.3f}",
            f"{r.throughput:.1f}",
            f"{r.session_start_ms:.1f}",
            _mb(r.peak_rss_delta_bytes),
            _mb(r.file_bytes),
            str(r.iters),
        ]
        if several:
            row.append(speedup_text({"speedup": r.speedup, "speedup_range": r.speedup_range}))
        table.add_row(*row)
    return table


@click.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--providers", default="cpu", show_default=True, help="Providers to compare, comma-separated.")
@click.option("--threads", default="1", show_default=True,
              help="Intra-op thread counts, e.g. 1,2,4 (0: onnxruntime's default, all cores).")
@click.option("--batch", "batch", default=None,
              help="Batch sizes, e.g. 1,8 (default: 1, or the --inputs data's own batch).")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs first.")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Timed runs (overrides --seconds).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Time per configuration (at least 10 runs).")
@click.option("--inputs", type=click.Path(path_type=str), default=None,
              help="Use the first feed of this .npz or folder instead of random inputs.")
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of an input with symbolic dims (its first dim follows --batch).")
@click.option("--dim", "dim", multiple=True, metavar="NAME=SIZE", help="Size of a named symbolic dim, e.g. seq=128.")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Rounds per configuration, models interleaved and their order rotated each round; the figures "
                   "are medians over the rounds (default 3 with several models, 1 with one; the time is split).")
@click.option("--json", "json_out", type=click.Path(path_type=str), default=None, help="Write all results as JSON.")
@click.option("--in-process", is_flag=True, help="Measure in this process instead of one fresh process each.")
@click.option("--prompt-tokens", type=click.IntRange(1), default=64, show_default=True,
              help="Decoder models (a KV cache in and out): prompt length for time to first token and prefill.")
@click.option("--new-tokens", type=click.IntRange(2), default=64, show_default=True,
              help="Decoder models: tokens generated for decode tokens/s.")
@device_options
def bench(models, providers, threads, batch, warmup, iters, seconds, inputs, input_shape, dim, rounds, json_out,
          in_process, prompt_tokens, new_tokens, cluster, workers, device, timeout_s):
    """Benchmark MODELS for every provider x threads x batch; the first model is the baseline.
    Decoder language models get time to first token, prefill and decode tokens/s and peak memory."""
    from edgeq.io import atomic_path
    from edgeq.runtime.bench import bench as run_bench
    from edgeq.runtime.bench import bench_report

    decoders = [_is_decoder_file(m) for m in models]
    if any(decoders) and (cluster is not None or device is not None):
        raise UsageError("decoder language models are benchmarked on this machine only: drop --cluster/--device")
    if any(decoders):
        if not all(decoders):
            raise UsageError("bench decoder language models (a KV cache in and out) apart from other models: "
                             "they are measured in tokens/s")
        _bench_decoders(list(models), parse_int_list(threads, "--threads"), prompt_tokens, new_tokens, json_out,
                        isolate=not in_process)
        return

    options = dict(
        providers=[p for p in providers.split(",") if p.strip()],
        threads=parse_int_list(threads, "--threads", minimum=0),
        batches=parse_int_list(batch, "--batch") if batch else None,
        warmup=warmup,
        iters=iters,
        seconds=seconds,
        dims=parse_dims(dim),
        shapes=parse_shapes(input_shape),
        isolate=not in_process,
        rounds=rounds,
    )
    node = None
    if cluster is not None or device is not None:
        if cluster is None or device is None:
            raise UsageError("--device KIND and --cluster ADDRESS go together: timings are taken on the device's node")
        from edgeq.runtime.bench import BenchResult
        from edgeq.runtime.device_jobs import run_on_device

        with opened(cluster, workers) as executor:
            click.echo(f"benchmarking on a node with device:{device} of the cluster at {cluster} (at most {timeout_s:g} s)",
                       err=True)
            done = run_on_device(executor, "bench", list(models), options, inputs=inputs, device=device,
                                 timeout_s=timeout_s)
        results = [BenchResult.from_dict(r) for r in done["results"]]
        node = done["device_node"]
        click.echo(f"ran on {node['node']} ({node['cpu']}, {node['cpus']} CPUs)", err=True)
    else:
        results = run_bench(list(models), inputs=inputs, progress=True, **options)
    _console().print(render_table(results))
    for warning in dict.fromkeys(w for r in results for w in r.warnings):  # once per model
        click.echo(f"warning: {warning}", err=True)
    if json_out:
        with atomic_path(json_out, models) as tmp:
            with open(tmp, "w") as f:
                json.dump({**bench_report(results), **({"device": node} if node else {})}, f, indent=2)
        click.echo(f"results written to {json_out}")


def _is_decoder_file(path: str) -> bool:
    import onnx

    from edgeq.files import check_model_file
    from edgeq.runtime.decoder_bench import is_decoder

    try:
        proto = onnx.load(check_model_file(path), load_external_data=False)
    except Exception:  # missing, not a file, not ONNX ...: the regular bench says why, in its words
        return False
    return is_decoder([i.name for i in proto.graph.input])


def _bench_decoders(models: list[str], threads: list[int], prompt_tokens: int, new_tokens: int,
                    json_out: str | None, *, isolate: bool) -> None:
    from rich.table import Table

    from edgeq.io import atomic_path
    from edgeq.runtime.decoder_bench import measure_decoder, measure_decoder_isolated

    measure = measure_decoder_isolated if isolate else measure_decoder
    rows = [measure(m, threads=t, prompt_tokens=prompt_tokens, new_tokens=new_tokens) for t in threads for m in models]
    table = Table(title=f"decoder: prompt {prompt_tokens} tokens, {new_tokens} new (KV cache), median of 3",
                  title_justify="left")
    for col in ("model", "threads", "session start s", "first token ms", "prefill tok/s", "decode tok/s",
                "vs first", "peak MB", "file MB"):
        table.add_column(col, justify="left" if col == "model" else "right")
    base = {r["threads"]: r for r in rows if r["model"] == models[0]}
    for r in rows:
        ratio = r["decode_tokens_per_s"] / base[r["threads"]]["decode_tokens_per_s"]
        table.add_row(os.path.basename(r["model"]), str(r["threads"]), f"{r['session_s']:.2f}", f"{r['ttft_ms']:.1f}",
                      f"{r['prefill_tokens_per_s']:.0f}", f"{r['decode_tokens_per_s']:.1f}", f"{ratio:.2f}x",
                      _mb(r["peak_rss_bytes"]), _mb(r["file_bytes"]))
    _console().print(table)
    if json_out:
        with atomic_path(json_out, models) as tmp:
            with open(tmp, "w") as f:
                json.dump({"format": "edgeq-decoder-bench", "results": rows}, f, indent=2)
        click.echo(f"results written to {json_out}")
