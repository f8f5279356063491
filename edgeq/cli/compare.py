"""``edgeq compare``: models x providers x threads x batch, speed and fidelity in one report."""

from __future__ import annotations

import json
import os

import click

from edgeq.cli.cluster_opts import device_options, opened

__all__ = ["compare", "write_reports"]


def write_reports(report: dict, out_dir: str, inputs: list[str], title: str) -> list[str]:
    """Write report.json, report.md and report.html into ``out_dir`` atomically."""
    from edgeq.io import atomic_path
    from edgeq.report.html import render_html
    from edgeq.runtime.compare import to_markdown

    os.makedirs(out_dir, exist_ok=True)
    texts = {
        "report.json": json.dumps(report, indent=2, default=str) + "\n",
        "report.md": to_markdown(report),
        "report.html": render_html(report, title),
    }
    written = []
    for name, text in texts.items():
        path = os.path.join(out_dir, name)
        with atomic_path(path, inputs) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        written.append(path)
    return written


@click.command("compare")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--providers", default="cpu", show_default=True,
              help="Providers, comma-separated (cpu, cuda, trt, ...); unavailable ones are skipped.")
@click.option("--inputs", type=click.Path(path_type=str), default=None,
              help="An .npz (keys = input names) or a folder of them; default: random inputs.")
@click.option("--batch", "batch", default=None, help="Batch sizes for timing, e.g. 1,8.")
@click.option("--threads", default="1", show_default=True, help="Intra-op thread counts, e.g. 1,2,4.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Timed runs (overrides --seconds).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Time per configuration (at least 10 runs).")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Rounds per configuration, models interleaved (default 3 with several models; edgeq bench --help).")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Per-operator time from onnxruntime's profiler.")
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of an input with symbolic dims (its first dim follows --batch).")
@click.option("--dim", "dim", multiple=True, metavar="NAME=SIZE", help="Size of a named symbolic dim.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default=None,
              help="Folder for report.json, report.md and report.html.")
@click.option("--title", default="edgeq compare", show_default=True, help="Title of the HTML report.")
@device_options
def compare(models, providers, inputs, batch, threads, warmup, iters, seconds, rounds, profile, input_shape, dim,
            out_dir, title, cluster, workers, device, timeout_s):
    """Compare MODELS on every provider: latency, throughput, memory, and each output against the
    first model on the first provider (SQNR, cosine, max abs error, top-1 agreement)."""
    from edgeq.cli.bench import parse_dims, parse_int_list, parse_shapes
    from edgeq.runtime.compare import compare as run_compare
    from edgeq.runtime.compare import to_markdown

    if inputs is None and len(models) > 1:
        click.echo("note: no --inputs: random inputs are fine for speed, but a quantized model's "
                   "fidelity on them is not representative; pass --inputs with real data", err=True)
    options = dict(
        providers=[p for p in providers.split(",") if p.strip()],
        threads=parse_int_list(threads, "--threads"),
        batches=parse_int_list(batch, "--batch") if batch else None,
        warmup=warmup,
        iters=iters,
        seconds=seconds,
        rounds=rounds,
        profile=profile,
        dims=parse_dims(dim),
        shapes=parse_shapes(input_shape),
    )
    if cluster is not None or device is not None:
        from edgeq.errors import UsageError
        from edgeq.runtime.device_jobs import run_on_device

        if cluster is None or device is None:
            raise UsageError("--device KIND and --cluster ADDRESS go together: timings are taken on the device's node")
        with opened(cluster, workers) as executor:
            done = run_on_device(executor, "compare", list(models), options, inputs=inputs, device=device,
                                 timeout_s=timeout_s)
        report = {**done["report"], "device": done["device_node"]}
        click.echo(f"ran on {report['device']['node']} ({report['device']['cpu']})", err=True)
    else:
        report = run_compare(list(models), inputs=inputs, progress=True, **options).to_dict()
    click.echo(to_markdown(report))
    if out_dir:
        inputs_list = list(models) + ([inputs] if inputs else [])
        for path in write_reports(report, out_dir, inputs_list, title):
            click.echo(f"wrote {path}")
