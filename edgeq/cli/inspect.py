"""``edgeq inspect``: opsets, inputs/outputs, operator histogram, parameters, MACs and int8 share."""

from __future__ import annotations

import importlib.util
import json

import click

from edgeq.cli.console import console as _console

__all__ = ["inspect", "quantizability_findings"]


def quantizability_findings(path: str) -> list[dict] | None:
    """Findings of edgeq.prepare.quantizability.check, or None when that module is not built yet."""
    try:
        available = importlib.util.find_spec("edgeq.prepare.quantizability") is not None
    except ImportError:
        available = False
    if not available:
        return None
    from edgeq.io import load_model
    from edgeq.prepare.quantizability import check

    return [
        {"severity": str(f.severity), "where": str(f.where), "message": str(f.message)}
        for f in check(load_model(path))
    ]


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n:.4g}P"


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def _shape(shape) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _print(info, findings) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _console()  # no markup: names, shapes and paths print as they are
    console.print(Text.assemble((info.path or "model", "bold"), f"  ir {info.ir_version}  producer {info.producer or '-'}"))
    console.print("opsets: " + ", ".join(f"{d} {v}" for d, v in info.opsets.items()))
    if info.file_bytes is not None:
        files = len(info.external_data)
        console.print(f"file size: {_size(info.file_bytes)}"
                      + (f" (with {files} external data file{'s' if files > 1 else ''})" if files else ""))
    io = Table(title="inputs and outputs", title_justify="left")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, rows in (("input", info.inputs), ("output", info.outputs)):
        for row in rows:
            io.add_row(kind, row["name"], str(row["dtype"]), _shape(row["shape"]))
    console.print(io)

    ops = Table(title="operators", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    ops.add_column("MACs", justify="right")
    for op, count in info.op_histogram.items():
        macs = info.macs_by_op.get(op)
        ops.add_row(op, str(count), _human(macs) if macs is not None else "")
    console.print(ops)

    console.print(f"parameters: {_human(info.params)} ({info.param_bytes / 2**20:.2f} MB)")
    params = Table()
    for col in ("dtype", "count", "bytes"):
        params.add_column(col, justify="left" if col == "dtype" else "right")
    for dtype, entry in sorted(info.params_by_dtype.items(), key=lambda kv: -kv[1]["bytes"]):
        params.add_row(dtype, f"{entry['count']:,}", f"{entry['bytes']:,}")
    console.print(params)

    share = info.int8_share
    dims = ", ".join(f"{k}={v}" for k, v in info.fixed_dims.items())
    console.print(
        f"MACs: {_human(info.macs)} per inference{f' ({dims})' if dims else ''}; int8: {_human(info.int8_macs)}"
        + (f" ({share:.1%})" if share is not None else "")
    )
    if info.unknown_macs_nodes:
        console.print(f"MACs unknown (no shapes) for {len(info.unknown_macs_nodes)} node(s): "
                      + ", ".join(info.unknown_macs_nodes[:5]))
    if findings is None:
        return
    if findings == "unavailable":
        console.print("quantizability check: unavailable (edgeq.prepare.quantizability is not in this build)")
        return
    table = Table(title=f"quantizability: {len(findings)} finding(s)", title_justify="left")
    for col in ("severity", "where", "message"):
        table.add_column(col)
    for f in findings:
        table.add_row(f["severity"], f["where"], f["message"])
    console.print(table)


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--quantizability", is_flag=True, help="Also list what would block or limit quantization.")
@click.option("--dim", "dim", multiple=True, metavar="NAME=SIZE",
              help="Size of a symbolic input dim for the MAC count (default 1), e.g. seq=128.")
def inspect(model: str, as_json: bool, quantizability: bool, dim: tuple[str, ...]) -> None:
    """Describe MODEL: opsets, inputs/outputs, operators, parameters, MACs and their int8 share."""
    from edgeq.cli.bench import parse_dims
    from edgeq.modelinfo import describe

    info = describe(model, dims=parse_dims(dim))
    findings = None
    if quantizability:
        findings = quantizability_findings(model)
        if findings is None:
            findings = "unavailable"
    problem = _invalid(model)
    if as_json:
        data = info.to_dict()
        if quantizability:
            data["quantizability"] = None if findings == "unavailable" else findings
        data["invalid"] = problem
        click.echo(json.dumps(data, indent=2))
    else:
        _print(info, findings)
    if problem:  # described as it is, but never silently: quantize and prepare refuse it
        click.echo(f"warning: {problem}", err=True)


def _invalid(path: str) -> str | None:
    """The entry check's one line if ``path`` is not a model quantize would take, else None."""
    from edgeq.errors import EdgeqError
    from edgeq.io import load_model
    from edgeq.stages.check import check_input

    try:
        check_input(load_model(path), path)
    except EdgeqError as e:
        return str(e).splitlines()[0]
    return None
