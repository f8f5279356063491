"""``edgeq sensitivity``: a thin call of ``edgeq.auto.sensitivity``; prints the most sensitive layers."""

from __future__ import annotations

import os
from typing import Any

import click

from edgeq.cli.cluster_opts import cluster_options, opened

__all__ = ["sensitivity"]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return value if isinstance(value, str) else f"{value:.1f}"


@click.command("sensitivity")
@click.argument("model", type=click.Path())  # a folder gets edgeq's one-line error
@click.option("--calib", required=True, help="Calibration data: .npz file, folder of .npz/.npy, or module:function.")
@click.option("--eval", "eval_data", default=None, help="Evaluation data (default: the first calibration samples).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON report here (.md and .html with a chart beside it).")
@click.option("--method", type=click.Choice(["minmax", "percentile", "entropy", "mse", "tail"]), default="minmax",
              help="Range method for the activations (default minmax).")
@click.option("--max-eval", type=click.IntRange(1), default=16, help="Evaluation samples to use (default 16).")
@click.option("--max-samples", type=click.IntRange(1), default=None, help="Use at most N calibration samples.")
@click.option("--top", type=click.IntRange(1), default=10, help="Layers to print (default 10).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@cluster_options
def sensitivity(model: str, calib: str, eval_data: str | None, report: str | None, method: str, max_eval: int,
                max_samples: int | None, top: int, quiet: bool, cluster: str | None, workers: int | None) -> None:
    """Per-layer quantization sensitivity: output SQNR with only each layer int8, and with all but it."""
    from edgeq.auto.analysis import sensitivity as run
    from edgeq.config import QuantConfig
    from edgeq.io import check_output_path

    inputs = [p for p in (model, calib, eval_data) if p and os.path.exists(p)]
    if report:
        check_output_path(report, inputs)
    config = QuantConfig(method=method, max_samples=max_samples)
    with opened(cluster, workers):
        result = run(model, calib, config=config, eval_data=eval_data, progress=not quiet, max_eval=max_eval)
    click.echo(f"all int8: min output SQNR {_fmt(result.all_int8['min_sqnr_db'])} dB "
               f"({len(result.layers)} quantizable layers, {result.eval_samples} eval samples)")
    click.echo(f"{'layer':32} {'group':16} {'only int8':>10} {'all but':>10} {'outlier':>8}")
    for e in result.layers[:top]:
        ratio = max(e["outlier_ratio"].values(), default=1.0)
        click.echo(f"{e['node'][:32]:32} {e['group'][:16]:16} {_fmt(e['only_int8_sqnr_db']):>10} "
                   f"{_fmt(e['all_but_sqnr_db']):>10} {ratio:8.2f}")
    if report:
        for path in result.write(report, inputs=tuple(inputs)):
            click.echo(f"wrote {path}")
