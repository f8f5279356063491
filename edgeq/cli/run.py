"""``edgeq run``: run a model on feeds from .npz files; print a summary or save the outputs.

With a folder of input files, ``--out`` is a folder: one ``<input file name>.npz`` of outputs
per input file. With one input file, ``--out`` is an .npz file.
"""

from __future__ import annotations

import importlib.util
import os

import click

from edgeq.cli.console import console as _console

__all__ = ["run", "summarize"]


def summarize(outputs: dict, first: int = 5) -> list[dict]:
    """One row per output: name, shape, dtype, min/max/mean and the first values."""
    import numpy as np

    rows = []
    for name, value in outputs.items():
        array = np.asarray(value)
        row = {"name": name, "shape": list(array.shape), "dtype": str(array.dtype)}
        if array.size and array.dtype.kind in "fiub":
            numeric = array.astype(np.float64)
            row.update(min=float(numeric.min()), max=float(numeric.max()), mean=float(numeric.mean()))
        flat = array.reshape(-1)[:first]
        row["first"] = [v.item() if hasattr(v, "item") else v for v in flat]
        rows.append(row)
    return rows


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _print_summary(rows: list[dict], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("output", "shape", "dtype", "min", "max", "mean", "first values"):
        table.add_column(col, justify="right" if col in ("min", "max", "mean") else "left")
    for row in rows:
        table.add_row(
            row["name"],
            "x".join(map(str, row["shape"])) or "scalar",
            row["dtype"],
            _fmt(row.get("min", "")),
            _fmt(row.get("max", "")),
            _fmt(row.get("mean", "")),
            ", ".join(_fmt(v) for v in row["first"]),
        )
    _console().print(table)


def _save(outputs: dict, out: str, inputs: list[str]) -> None:
    import numpy as np

    from edgeq.io import atomic_path

    with atomic_path(out, inputs) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **outputs)


def _reference_runner():
    runner = None
    if importlib.util.find_spec("edgeq.reference") is not None:
        import edgeq.reference

        runner = getattr(edgeq.reference, "run", None)
    if runner is None:
        from edgeq.errors import UsageError

        raise UsageError(
            "--reference needs edgeq's integer reference interpreter (edgeq.reference.run), which is "
            "not in this build: run without --reference to use onnxruntime"
        )
    return runner


@click.command("run")
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@click.option("--inputs", "inputs", required=True, type=click.Path(path_type=str),
              help="An .npz file (keys = input names) or a folder of them.")
@click.option("--providers", default="cpu", show_default=True,
              help="Execution providers in order, comma-separated (cpu, cuda, trt, ...).")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Intra-op threads (default: onnxruntime's).")
@click.option("--out", "out", type=click.Path(path_type=str), default=None,
              help="Save outputs: an .npz for one input file, a folder for a folder of inputs.")
@click.option("--reference", is_flag=True, help="Run with edgeq's integer-only numpy reference instead of onnxruntime.")
def run(model: str, inputs: str, providers: str, threads: int | None, out: str | None, reference: bool) -> None:
    """Run MODEL on the feeds in --inputs; print a summary of every output or save them."""
    from edgeq.runtime.feeds import iter_feeds
    from edgeq.runtime.session import Session

    session = Session(model, providers=providers, threads=threads)
    specs = session.input_specs
    ref_run = _reference_runner() if reference else None
    many = os.path.isdir(inputs)
    if out is not None and many and os.path.isfile(out):
        from edgeq.errors import UsageError

        raise UsageError(f"--inputs {inputs} is a folder, so --out must be a folder too, not the file {out}")
    for file, feed in iter_feeds(inputs, [s.name for s in specs]):
        feed = session.check(feed)
        outputs = ref_run(model, feed) if ref_run else session.run(feed, checked=True)
        if out is None:
            engine = "edgeq.reference" if ref_run else ",".join(session.providers)
            _print_summary(summarize(outputs), f"{os.path.basename(file)} on {engine}")
        else:
            target = os.path.join(out, os.path.splitext(os.path.basename(file))[0] + ".npz") if many else out
            _save(outputs, target, [model, file])
    if out is not None:
        click.echo(f"outputs saved to {out}")
