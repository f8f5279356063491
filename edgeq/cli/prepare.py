"""``edgeq prepare IN.onnx -o OUT.onnx [--opset N] [--calib DATA]``: make a graph quantizable.

Prints the quantizability findings of the input, runs :func:`edgeq.prepare.prepare_model`,
writes the result atomically (never over the input) and prints the notes.
"""

from __future__ import annotations

import itertools

import click

__all__ = ["prepare"]

_CALIB_FEEDS = 8  # shape fallback reads only the first few feeds


@click.command("prepare")
@click.argument("model", type=click.Path())  # a folder gets edgeq's one-line error
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the prepared model (required unless --check-only).")
@click.option("--opset", type=click.IntRange(7, 30), default=None,
              help="Target opset (default: max(model's, 13)); never lower than the model's.")
@click.option("--calib", type=click.Path(), default=None,
              help="Feeds: an .npz file (keys = input names), a folder of them, or module:function; "
                   "run when shapes stay unknown.")
@click.option("--check-only", is_flag=True, help="Only list what blocks or limits quantization.")
@click.option("--external-data/--no-external-data", default=None,
              help="Weights in OUT.onnx.data beside the model, or inside it (default: beside it only "
                   "above protobuf's 2 GB).")
def prepare(model: str, out: str | None, opset: int | None, calib: str | None, check_only: bool,
            external_data: bool | None) -> None:
    """Make an ONNX graph quantizable (constants, opset, BN, shapes)."""
    from edgeq.errors import UsageError
    from edgeq.io import check_output_path, load_model, save_model
    from edgeq.prepare import prepare_model
    from edgeq.prepare.quantizability import check
    from edgeq.stages.check import check_input

    if out is None and not check_only:
        raise UsageError("edgeq prepare needs -o OUT.onnx for the prepared model (or --check-only)")
    if out is not None:
        check_output_path(out, [model, calib])
    ir_model = load_model(model)
    check_input(ir_model, model)  # an invalid model is refused, never written out prepared
    findings = check(ir_model)
    for finding in findings:
        click.echo(f"check: {finding}")
    if check_only:
        return
    data = None
    if calib is not None:
        from edgeq.calibrate import load_data

        data = list(itertools.islice(iter(load_data(calib, ir_model)), _CALIB_FEEDS))
    ir_model, notes = prepare_model(ir_model, target_opset=opset, data=data)
    for note in notes:
        click.echo(f"prepare: {note}")
    save_model(ir_model, out, inputs=[model, calib], external_data=external_data)
    click.echo(f"wrote {out}")
