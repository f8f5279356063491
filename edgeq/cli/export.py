"""``edgeq export``: a PyTorch model -> ONNX, checked against torch on onnxruntime."""

from __future__ import annotations

import json

import click

__all__ = ["export", "export_llm", "describe"]


def describe(result) -> list[tuple[str, str]]:
    """Rows (field, value) summarizing an ExportResult."""
    def io(names):
        return ", ".join(
            f"{n}[{','.join(f'{a}:{label}' for a, label in sorted(result.dynamic_axes.get(n, {}).items()))}]"
            if result.dynamic_axes.get(n) else n
            for n in names
        )

    rows = [
        ("model", result.path),
        ("exporter", result.exporter + (f" (fallback: {result.fallback_reason})" if result.fallback_reason else "")),
        ("opset", str(result.opset)),
        ("inputs", io(result.input_names)),
        ("outputs", io(result.output_names)),
        ("size", f"{result.size_bytes / 1e6:.2f} MB"),
        ("export time", f"{result.export_seconds:.1f} s"),
    ]
    if result.max_abs_error is None:
        rows.append(("check", "skipped (--no-check)"))
    else:
        rows.append(("max abs error", f"{result.max_abs_error:.3g}"))
        rows.append(("max rel error", f"{result.max_rel_error:.3g}"))
    return rows


@click.command("export")
@click.argument("spec")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=str), help="The ONNX file to write.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS[:DTYPE]",
              help="Random example input, e.g. input=1x3x224x224 or ids=1x128:int64 (repeatable, in input order).")
@click.option("--dynamic-batch", is_flag=True, help="Axis 0 of every input and output is dynamic, named 'batch'.")
@click.option("--dynamic", "dynamic", multiple=True, metavar="NAME:AXIS=LABEL",
              help="Make one axis dynamic, e.g. input_ids:1=sequence (repeatable).")
@click.option("--static", is_flag=True, help="Drop a zoo model's own dynamic axes (fixed shapes, e.g. for TensorRT).")
@click.option("--opset", type=click.IntRange(7, 23), default=None, help="ONNX opset (default: 18, the dynamo exporter's own).")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="auto: dynamo first, TorchScript if it fails (a zoo model with its own ONNX graph, vad: that graph).")
@click.option("--check/--no-check", default=True, show_default=True, help="Compare onnxruntime against torch.")
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-3, show_default=True)
@click.option("--atol", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(spec, out, input_shapes, dynamic_batch, dynamic, static, opset, exporter, check, rtol, atol, as_json) -> None:
    """Export SPEC to ONNX: a zoo name, package.module:factory, or a torch.export .pt2 file.

    The dynamo exporter runs first, TorchScript if it fails; the ONNX model then runs on
    onnxruntime against torch and must agree within --rtol/--atol.
    """
    from dataclasses import asdict

    from rich.text import Text

    from edgeq.cli.console import console
    from edgeq.exporter import export as export_model
    from edgeq.exporter import parse_dynamic, parse_input_shapes

    shapes = parse_input_shapes(input_shapes)
    axes = parse_dynamic(dynamic)
    with console(stderr=True).status(Text(f"exporting {spec} ...")):  # Text: a spec's brackets are no markup
        result = export_model(spec, out, input_shapes=shapes or None, dynamic_batch=dynamic_batch, dynamic=axes or None, static=static,
                              opset=opset, check=check, rtol=rtol, atol=atol, exporter=exporter)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
        return
    width = max(len(k) for k, _ in describe(result))
    for key, value in describe(result):
        click.echo(f"{key:<{width}}  {value}")


@click.command("export-llm")
@click.argument("folder", type=click.Path(file_okay=False, path_type=str))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=str), help="The ONNX file to write.")
@click.option("--opset", type=click.IntRange(14, 23), default=None, help="ONNX opset (default: 18).")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True)
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare onnxruntime's logits against torch's: a prefill and 3 decode steps.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export_llm(folder, out, opset, exporter, check, as_json) -> None:
    """Export the Hugging Face decoder in FOLDER (config.json, *.safetensors, tokenizer.json) to one
    ONNX graph for prefill and decode, its KV cache as inputs and outputs; the tokenizer and the
    end-of-text ids go into the model's metadata, so that edgeq generate, perplexity and quantize
    need nothing beside it."""
    from dataclasses import asdict

    from rich.text import Text

    from edgeq.cli.console import console
    from edgeq.exporter.llm import export_llm as export_decoder

    with console(stderr=True).status(Text(f"exporting {folder} ...")):
        result = export_decoder(folder, out, opset=opset, check=check, exporter=exporter)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2, default=str))
        return
    rows = describe(result.export)
    rows[1:1] = [("architecture", f"{result.architecture}: {result.layers} layers, {result.kv_heads} KV heads of "
                                  f"{result.head_dim}, vocabulary {result.vocab}, {result.max_length or '?'} positions"),
                 ("tokenizer", "tokenizer.json in the metadata" if result.tokenizer else "none (token ids only)")]
    if result.decode_max_abs_error is not None:
        rows.append(("decode check", f"prefill + 3 greedy steps, max abs logit error {result.decode_max_abs_error:.3g}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
