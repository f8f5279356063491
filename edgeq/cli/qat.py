"""``edgeq qat``: quantization-aware training of a zoo model or an ONNX file (``edgeq.qat.zoo_recipe``)."""

from __future__ import annotations

import json

import click

__all__ = ["qat"]


def _row(label: str, s: dict) -> str:
    parts = [f"SQNR {s['sqnr_db']:.1f} dB" if s["sqnr_db"] != float("inf") else "exact"]
    if "top1" in s:
        parts.append(f"top-1 {s['top1']:.4f}")
    if "argmax_agreement" in s:
        parts.append(f"argmax agreement {s['argmax_agreement']:.4f}")
    return f"{label:6} " + ", ".join(parts)


@click.command("qat")
@click.argument("name")
@click.option("--calib", default=None, help="ONNX model: its training inputs (.npz folder or file, module:function).")
@click.option("--eval", "eval_data", default=None,
              help="ONNX model: inputs to judge on (default: a fifth of --calib spread over it by loudness, held out).")
@click.option("--loss", type=click.Choice(["mse", "kl"]), default="mse", show_default=True,
              help="ONNX model: distillation loss (kl where the outputs are class logits).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="The QDQ ONNX file to write.")
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--weights", type=click.Choice(["int8", "int4"]), default="int8", show_default=True,
              help="int4: 4-bit weights per channel (int4 DequantizeLinear, opset 21).")
@click.option("--activations", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True)
@click.option("--per-token", is_flag=True,
              help="MatMuls quantized at run time get a scale per row of their input (transformers).")
@click.option("--scales", type=click.Choice(["learned", "observed"]), default="learned", show_default=True,
              help="learned: LSQ scales trained with the weights; observed: running min/max, frozen late.")
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none", show_default=True,
              help="Mixed-precision training (torch.autocast; fp16 with a GradScaler).")
@click.option("--samples", type=click.IntRange(32), default=1024, show_default=True,
              help="Zoo model: training inputs.")
@click.option("--eval-samples", type=click.IntRange(1), default=200, show_default=True,
              help="Zoo model: inputs to judge on.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate of float parameters (biases, LayerNorm, layers left float). "
                   "[default: 1e-5 with 8-bit weights, 1e-4 with 4-bit]")
@click.option("--step-lr", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True,
              help="Learning rate of quantized weights, in quantization steps per training step.")
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True,
              help="Training batch. On a GPU take a larger one (256): at 32 the CPU launching kernels bounds a step.")
@click.option("--device", default="cpu", show_default=True,
              help="Where training runs: cpu, cuda or cuda:N (bf16 autocast pays there: docs/qat.md).")
@click.option("--freeze-bn-after", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of the steps after which folded BatchNorms stop updating their statistics.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write the summary as JSON here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def qat(name: str, calib: str | None, eval_data: str | None, loss: str, out: str, epochs: int, weights: str,
        activations: str, per_token: bool, scales: str, amp: str, samples: int,
        eval_samples: int, lr: float | None, step_lr: float, batch: int, device: str, freeze_bn_after: float,
        report: str | None, quiet: bool) -> None:
    """Fine-tune NAME with fake quantization, distilled from its fp32 outputs, and write edgeq's
    QDQ model with the trained weights and scales, checked against torch.

    NAME is a zoo model (it knows its data) or an ONNX file, trained on --calib's inputs."""
    import importlib.util
    import os

    from edgeq.errors import UsageError
    from edgeq.io import atomic_path, check_output_path

    if importlib.util.find_spec("torch") is None:
        raise UsageError("quantization-aware training needs torch, which is not installed: pip install 'edgeq[torch]'")
    import re

    import torch

    from edgeq.qat.config import QATConfig
    from edgeq.qat.zoo_recipe import qat_file, qat_zoo

    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise UsageError(f"--device {device}: choose cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this torch sees no CUDA device (a CPU build, or no GPU): use --device cpu")
    if device.startswith("cuda") and int(device.partition(":")[2] or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")

    is_file = os.path.exists(name) or name.endswith(".onnx")
    inputs = [p for p in (name, calib, eval_data) if p and os.path.exists(p)]
    check_output_path(out, inputs)
    if report:
        check_output_path(report, [out, *inputs])
    if is_file and calib is None:
        raise UsageError(f"{name} is an ONNX model: give its training inputs with --calib DIR")
    if not is_file and (calib or eval_data):
        raise UsageError(f"{name} is a zoo model, which brings its own data: --calib and --eval are for ONNX files")
    config = QATConfig(weight_bits=4 if weights == "int4" else 8, activations=activations, scales=scales,
                       per_token=per_token)
    options = dict(epochs=epochs, config=config, amp=None if amp == "none" else amp, lr=lr, step_lr=step_lr,
                   batch=batch, freeze_bn_after=freeze_bn_after, progress=not quiet, device=device)
    if is_file:
        summary = qat_file(name, out, calib, eval_data, loss=loss, **options)
    else:
        summary = qat_zoo(name, out, samples=samples, eval_samples=eval_samples, **options)
    click.echo(f"{name}: {summary['samples']} training inputs, {epochs} epoch(s), "
               f"{summary['train_seconds']:.1f} s training on {device}{' with ' + summary['amp'] if summary['amp'] else ''}; "
               f"judged on {summary['eval_samples']} held-out inputs against fp32")
    click.echo(_row("fp32", summary["fp32"]))
    click.echo(_row("PTQ", summary["ptq"]))
    click.echo(_row("QAT", summary["qat"]))
    scores = ", ".join(f"{x:.1f}" for x in summary["validation_sqnr_db"])
    click.echo(f"validation SQNR (held-out training inputs, {summary['validated_on']}) before training and per "
               f"epoch: {scores} dB; "
               f"kept {'the untrained model' if summary['best_epoch'] == 0 else 'epoch ' + str(summary['best_epoch'])}")
    gain = summary.get("gain_check")
    if gain and not gain["kept"]:
        click.echo(f"epoch {gain['epoch']} gained {gain['mean_db']:+.2f} dB a held-out input on average (standard error "
                   f"{gain['standard_error_db']:.2f} dB): not a clear gain (one-sided t-test at 5%), so the untrained "
                   "model (edgeq's PTQ) is kept; more training data would tell")
    check = summary["export_check"]
    click.echo(f"export check: onnxruntime within one step of torch on {check['within_one_step']:.2%} of the "
               f"worst of {check['tensors']} tensors compared ({check['worst_tensor']}; {check['samples']} inputs)"
               + ("" if check["fused"] else "; on the file's exact arithmetic: this CPU's kernels saturate products "
                  "of 8-bit weights, which torch does not simulate"))
    click.echo(f"wrote {summary['path']}")
    if report:
        with atomic_path(report, [out]) as tmp, open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
        click.echo(f"wrote {report}")
