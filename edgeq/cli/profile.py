"""``edgeq profile``: where a model's time goes on a provider, per op type and per node."""

from __future__ import annotations

import json

import click

from edgeq.cli.console import console as _console

__all__ = ["profile"]


def _print(result, top: int) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _console()  # no markup: node names and paths print as they are
    console.print(Text.assemble(
        (str(result.model), "bold"),
        f" on {', '.join(result.providers)}: {result.runs} runs, "
        f"{result.run_ms:.3f} ms per run, {result.kernel_ms:.3f} ms in kernels; "
        f"Quantize/DequantizeLinear: {result.qdq_share:.1%} of kernel time",
    ))
    console.print("nodes by provider: " + ", ".join(f"{p}: {n}" for p, n in result.nodes_by_provider.items()))
    ops = Table(title="time per op type", title_justify="left")
    for col in ("op type", "nodes", "ms/run", "share"):
        ops.add_column(col, justify="left" if col == "op type" else "right")
    for op in result.by_op_type:
        ops.add_row(op.op_type, str(op.nodes), f"{op.ms_per_run:.4f}", f"{op.share:.1%}")
    console.print(ops)
    nodes = Table(title=f"top {min(top, len(result.by_node))} nodes", title_justify="left")
    for col in ("node", "op type", "provider", "ms/run", "share"):
        nodes.add_column(col, justify="right" if col in ("ms/run", "share") else "left")
    for node in result.by_node[:top]:
        nodes.add_row(node.node, node.op_type, node.provider.removesuffix("ExecutionProvider"),
                      f"{node.ms_per_run:.4f}", f"{node.share:.1%}")
    console.print(nodes)
    if result.trace_path:
        console.print(f"Chrome trace saved to {result.trace_path} (open in https://ui.perfetto.dev)")


@click.command("profile")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--provider", "--providers", "providers", default="cpu", show_default=True,
              help="Provider (or comma-separated chain) to profile on.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Intra-op threads.")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Profiled runs.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Runs left out first.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Batch size (default 1 or the data's).")
@click.option("--inputs", type=click.Path(path_type=str), default=None, help="Use the first feed of this .npz or folder.")
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of an input with symbolic dims.")
@click.option("--dim", "dim", multiple=True, metavar="NAME=SIZE", help="Size of a named symbolic dim.")
@click.option("--trace", "trace", type=click.Path(path_type=str), default=None,
              help="Where to save the Chrome trace (default: MODEL's name + .profile.json beside it).")
@click.option("--json", "json_out", type=click.Path(path_type=str), default=None, help="Write the tables as JSON.")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True, help="Nodes to list.")
def profile(model, providers, threads, runs, warmup, batch, inputs, input_shape, dim, trace, json_out, top):
    """Profile MODEL with onnxruntime's profiler: time per op type and node, share in Q/DQ."""
    from edgeq.cli.bench import parse_dims, parse_shapes
    from edgeq.io import atomic_path
    from edgeq.runtime.profile import profile as run_profile

    result = run_profile(
        model,
        providers=providers,
        threads=threads,
        runs=runs,
        warmup=warmup,
        batch=batch,
        inputs=inputs,
        dims=parse_dims(dim),
        shapes=parse_shapes(input_shape),
        trace_out=trace,
    )
    _print(result, top)
    if json_out:
        with atomic_path(json_out, [model]) as tmp:
            with open(tmp, "w") as f:
                json.dump(result.to_dict(), f, indent=2)
        click.echo(f"profile written to {json_out}")
