"""``edgeq quantize`` and ``edgeq export-and-quantize``: thin calls of ``edgeq.quantize``.

Every option is one QuantConfig field; ``--config FILE`` (TOML/JSON) sets them all and the
flags given on the command line override it.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import click

__all__ = ["quantize", "export_and_quantize", "quant_options", "build_config"]


def quant_options(func):
    """The options shared by both commands (each maps to a QuantConfig field)."""
    from edgeq.config import MODES

    options = [
        click.option("--calib", "calib", default=None, help="Calibration data: .npz file, folder of .npz/.npy, or module:function."),
        click.option("--mode", type=click.Choice(list(MODES)), default=None, help="; ".join(f"{m.name}: {m.help}" for m in MODES.values()) + "."),
        click.option("--auto", "auto", is_flag=True, default=None, help="Same as --mode auto: meet --min-sqnr (default 30 dB) or --metric/--min-score, never slower than fp32."),
        click.option("--provider", default=None, help="Auto mode: the execution provider whose speed counts (default cpu)."),
        click.option("--threads", type=click.IntRange(1), default=None, help="Auto mode: the thread count you deploy with, for its latency measurements (default: timed at 1 thread, and an int8 answer slower than fp32 at 2 threads kept only where it is faster over 1 and 2 together)."),
        click.option("--time-budget", "time_budget_s", type=click.FloatRange(min=1.0), default=None, help="Auto mode: stop searching after about this many seconds and keep the best found."),
        click.option("--metric", default=None, help="With --auto: module:function(reference_outputs, outputs) -> score."),
        click.option("--min-score", type=float, default=None, help="With --auto and --metric: the score to reach."),
        click.option("--min-top1", "min_top1", type=click.FloatRange(0.0, 1.0), default=None, help="With --auto and no --metric: outputs holding class scores (a Gemm/MatMul head or a Softmax) keep their top-1 class on at least this share of samples, estimated from margins (default 0.995; 0: off)."),
        click.option("--min-iou", "min_iou", type=click.FloatRange(0.0, 1.0), default=None, help="With --auto, no --metric and no class-score output: outputs holding sigmoid scores (detection, segmentation, speech probability) keep the set above each threshold 0.25-0.5 to at least this IoU, estimated from margins (default 0.95; 0: off)."),
        click.option("--method", type=click.Choice(["minmax", "percentile", "entropy", "mse", "tail"]), default=None, help="Range method for activations (default minmax; tail: min/max extrapolated to unseen data)."),
        click.option("--percentile", type=float, default=None, help="Percentile for --method percentile (default 99.99)."),
        click.option("--granularity", default=None, help="Weights: per-channel (default) or per-tensor; weight-only mode: per-block:N (default per-block:32)."),
        click.option("--weights", "weights", default=None, metavar="int8|int4|kmeans:N|uniform:N|pot", help="Weight type (default int8); int4 is weight-only (--mode weight-only, the default with it), or with --mode static W4A8 (4-bit Conv/MatMul/Gemm weights, int8 activations and kernels); kmeans:N, uniform:N (N 2-8 bits) and pot (4-bit powers of two) store every weight through codebooks in N bits (--mode compress, the default with them: the smallest files, fp32 compute); pot with --mode static: int8 levels 0 and +-2^e, for shift kernels."),
        click.option("--weight-op", "weight_op", type=click.Choice(["matmulnbits", "dequantize"]), default=None, help="Weight-only mode: onnxruntime's MatMulNBits (default) or the standard blocked DequantizeLinear (opset 21, any runtime)."),
        click.option("--max-size", "max_size", default=None, metavar="MB|Nx|min", help="Compress mode (the default with it): a file of at most this many megabytes (2.5) or this many times smaller than the input (8x); per layer the codebook width (2-8 bits of --weights' scheme, k-means by default) that keeps the outputs closest, measured on --calib's samples where given. With --mode auto: auto's answer with its weights stored in fewer bits to fit (int8 layers through integer codebooks, so the int8 kernels still run), its fidelity promise checked again (exit 1, nothing written, where the size breaks it); --max-size min: the smallest such file that keeps the promise."),
        click.option("--max-ppl-increase", "max_ppl_increase", callback=lambda ctx, param, value: _fraction(value), default=None, metavar="PCT", help="With --weights int4 on a decoder (edgeq export-llm): per layer 4 bits, 8 bits or float, the smallest model whose perplexity on the --calib token sequences is within this of fp32's (e.g. 5% or 0.05)."),
        click.option("--accuracy-level", "accuracy_level", type=click.IntRange(0, 4), default=None, help="Weight-only mode, MatMulNBits: 0 float compute (exact), 4 int8 compute (faster on some CPUs; moves the outputs); default: both measured here, 4 kept where 10% faster and within 30 dB."),
        click.option("--activations", type=click.Choice(["uint8", "int8", "int16"]), default=None, help="Activation type (default uint8, asymmetric; int16: symmetric, with int8 weights)."),
        click.option("--symmetric", is_flag=True, default=None, help="Symmetric activation ranges."),
        click.option("--dynamic-granularity", "dynamic_granularity", type=click.Choice(["per-tensor", "per-token"]), default=None, help="MatMul/Gemm activations quantized at run time (--mode dynamic, and static mode's MatMuls between float ops): one scale per tensor (default) or per row/token."),
        click.option("--recurrent", type=click.Choice(["int8", "float"]), default=None, help="LSTM: int8 weights through onnxruntime's DynamicQuantizeLSTM (default int8, --format qdq), or float."),
        click.option("--reduce-range/--no-reduce-range", "reduce_range", default=None, help="Weights of u8s8 kernels (Conv, MatMul, Gemm, LSTM) within 7 bits, for x86 CPUs without VNNI, whose onnxruntime saturates products of 8-bit weights (default, where this CPU does: static/dynamic modes keep whichever of 7 and 8 bits scores better on the calibration samples, auto mode the same on its uniform int8 build)."),
        click.option("--float-weights", "float_weights", type=click.Choice(["fp16", "fp32"]), default=None, help="Weights of layers left float: stored fp16 and cast to fp32 when the session loads (default fp16: a smaller file, the same fp32 kernels), or kept fp32."),
        click.option("--channel-scales/--no-channel-scales", "channel_scales", default=None, help="A Conv whose int8 output only float ops read (SiLU, hard-swish ...) gets a finer step for each narrow output channel, undone by a float Mul (default on)."),
        click.option("--token-rows", "token_rows", type=click.Choice(["full", "narrow"]), default=None, help="Per-token MatMuls on a CPU that saturates 8-bit products: full rows (255 levels; 8-bit weights whose same-sign pairs along K stay within 128, or 7 bits where the kernel's pairing is not the measured one) or narrow rows (181 levels, 8-bit weights whose pairs stay within 181). Default: full; auto mode builds both and keeps the better."),
        click.option("--outlier-channels/--no-outlier-channels", "outlier_channels", default=None, help="MatMuls quantized at run time (per token, or per tensor between float ops), with --calib: input channels whose calibrated range is far above the median channel's (a transformer LayerNorm's few large channels) multiplied in float beside the int8 kernel, so they do not set every row's or the tensor's scale (default on)."),
        click.option("--exclude", multiple=True, help="Keep a node (by name) or an op type float; repeatable."),
        click.option("--int16-node", "int16_nodes", multiple=True, help="Give this node int16 activations (int8 weights); repeatable."),
        click.option("--fp16-node", "fp16_nodes", multiple=True, help="Compute this node in fp16 (Casts at region boundaries); repeatable."),
        click.option("--precision", "precision", multiple=True, metavar="NODE=PREC", help="Per-layer precision, PREC one of fp32, fp16, int16, int8-per-token, int8-dynamic (MatMul/Gemm: activations quantized at run time, per row or per tensor; int8 is the default); repeatable. --exclude, --int16-node and --fp16-node are its shorthands."),
        click.option("--ranges", "ranges", type=click.Path(dir_okay=False), default=None, help="Reuse a ranges table (JSON) and skip calibration."),
        click.option("--save-ranges", type=click.Path(dir_okay=False), default=None, help="Write the ranges table used (JSON)."),
        click.option("--trt-cache", type=click.Path(dir_okay=False), default=None, help="Also write a TensorRT calibration cache."),
        click.option("--eval", "eval_data", default=None, help="Evaluation data: adds fidelity and latency vs fp32 to the report."),
        click.option("--report", "report", type=click.Path(dir_okay=False), default=None, help="Write the JSON report here (a .md is written beside)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="TOML/JSON file of options (flags override it)."),
        click.option("--format", "fmt", type=click.Choice(["qdq", "qoperator"]), default=None, help="qdq (default) or qoperator (integer-only operators)."),
        click.option("--integer-only", is_flag=True, default=None, help="With qoperator: aim for no float islands."),
        click.option("--strict", is_flag=True, default=None, help="With qoperator: fail on any float island."),
        click.option("--max-samples", type=click.IntRange(1), default=None, help="Use at most N calibration samples."),
        click.option("--min-sqnr", type=float, default=None, help="Fail if an output's SQNR (with --eval) is below this; with --auto: the fidelity target."),
        click.option("--external-data/--no-external-data", "external_data", default=None, help="Weights in OUT.data beside the model, or inside it (default: beside it only above protobuf's 2 GB)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars; only the summary."),
    ]
    for option in reversed(options):
        func = option(func)
    from edgeq.cli.cluster_opts import cluster_options

    return cluster_options(func)


def build_config(config_file: str | None, *, has_data: bool = True, has_ranges: bool = False, **flags: Any):
    """QuantConfig from the config file, overridden by the flags that were given.

    Where neither sets ``mode``, ``edgeq.config.default_mode`` picks it, as for ``edgeq.quantize``.
    ``--precision`` entries are added to the file's ``precision`` map (replacing the same names)."""
    from edgeq.config import NodePrecision, QuantConfig, default_mode, load_config_file

    data = load_config_file(config_file) if config_file else {}
    data = {k.replace("-", "_"): v for k, v in data.items()}
    for key, value in flags.items():
        if value is None or value == ():
            continue
        if key == "precision" and isinstance(data.get(key), dict):
            value = NodePrecision(data[key]).with_(value)
        data[key] = value
    if data.get("mode") is None:
        data["mode"] = default_mode(has_data=has_data, has_ranges=has_ranges, format=data.get("format", "qdq"),
                                    weights=data.get("weights", "int8"), max_size=data.get("max_size"))
    return QuantConfig.from_dict(data)


def _config_from(kw: dict[str, Any], calib: Any = None):
    from edgeq.config import parse_precision

    has_data = calib is not None or kw["calib"] is not None
    return build_config(
        kw["config_file"], has_data=has_data, has_ranges=kw["ranges"] is not None, mode=_mode(kw), method=kw["method"], percentile=kw["percentile"],
        granularity=kw["granularity"], activations=kw["activations"], symmetric=kw["symmetric"],
        exclude=tuple(kw["exclude"]), int16_nodes=tuple(kw["int16_nodes"]), fp16_nodes=tuple(kw["fp16_nodes"]),
        precision=tuple(parse_precision(p) for p in kw["precision"]),
        format=kw["fmt"], integer_only=kw["integer_only"],
        strict=kw["strict"], max_samples=kw["max_samples"], min_sqnr=kw["min_sqnr"],
        metric=kw["metric"], min_score=kw["min_score"], min_top1=kw["min_top1"], min_iou=kw["min_iou"], provider=kw["provider"], threads=kw["threads"],
        time_budget_s=kw["time_budget_s"], recurrent=kw["recurrent"], dynamic_granularity=kw["dynamic_granularity"],
        channel_scales=kw["channel_scales"], outlier_channels=kw["outlier_channels"], float_weights=kw["float_weights"], reduce_range=kw["reduce_range"],
        token_rows=kw["token_rows"], weights=kw["weights"], weight_op=kw["weight_op"], accuracy_level=kw["accuracy_level"],
        max_ppl_increase=kw["max_ppl_increase"], max_size=kw["max_size"],
    )


def _fraction(value: str | None) -> float | None:
    """'5%' or '0.05' -> 0.05 (a usage error otherwise)."""
    if value is None:
        return None
    text = value.strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a percentage: write 5% or 0.05") from None
    return number


def _mode(kw: dict[str, Any]) -> str | None:
    from edgeq.errors import UsageError

    if kw["auto"]:
        if kw["mode"] not in (None, "auto"):
            raise UsageError(f"--auto and --mode {kw['mode']} disagree: give one of them")
        return "auto"
    return kw["mode"]


SMALL_GATE = 32  # fewer evaluation samples than this make a weak check: the CLI says so


def _fmt_db(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "inf" if value is None or math.isinf(value) else f"{value:.1f}"


def print_summary(report: dict[str, Any], out: str) -> None:
    s = report["summary"]
    ratio = f"{s['size_ratio']:.2f}x" if s.get("size_ratio") else "n/a"
    click.echo(f"wrote {out}: {s['quantized']} nodes quantized ({s['int8_kernels']} int8 kernels), "
               f"{s['left_float']} left float, weights {s['size_before_bytes']:,} -> "
               f"{s['size_after_bytes']:,} bytes ({ratio}), {s['seconds']:.1f} s")
    reasons: dict[str, int] = {}
    for entry in report["float"]:
        reasons[f"{entry['op']}: {entry['reason']}"] = reasons.get(f"{entry['op']}: {entry['reason']}", 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
        click.echo(f"  float x{n}  {reason}")
    ev = report.get("evaluation")
    low = "fp16" if report.get("config", {}).get("mode") == "fp16" else "int8"
    if ev:
        for name, m in ev["outputs"].items():
            if "sqnr_db" not in m:
                click.echo(f"  {name}: " + (f"exact match {m['exact_match']:.4f}" if "exact_match" in m else
                                            f"shape differs from fp32 on all {m.get('shape_mismatch')} samples"))
                continue
            extra = f", top-1 agreement {m['top1_agreement']:.4f}" if "top1_agreement" in m else ""
            if m.get("shape_mismatch"):
                extra += f" (on the samples of the same shape: {m['shape_mismatch']} differ)"
            click.echo(f"  {name}: SQNR {_fmt_db(m.get('sqnr_db'))} dB, cosine {m.get('cosine', 0):.5f}{extra}")
        if ev.get("accuracy"):
            a = ev["accuracy"]
            click.echo(f"  top-1 vs labels: fp32 {a['fp32']:.4f}, {low} {a['int8']:.4f}")
        for threads, lat in ev.get("latency_ms", {}).items():
            click.echo(f"  latency {threads} thread(s): fp32 {lat['fp32']:.3f} ms, {low} {lat['int8']:.3f} ms "
                       f"({lat['fp32'] / lat['int8']:.2f}x)")


def _run_quantize(model: Any, out: str, kw: dict[str, Any], *, inputs: list[str], eval_data: Any = None,
                  labels: Any = None, calib: Any = None):
    from edgeq.cli.cluster_opts import opened
    from edgeq.quantizer import quantize

    check_quantize_outputs(out, kw, inputs)
    config = _config_from(kw, calib)
    with opened(kw["cluster"], kw["workers"]):
        result = quantize(model, config, calib if calib is not None else kw["calib"],
                          eval_data=eval_data if eval_data is not None else kw["eval_data"],
                          labels=labels, ranges=kw["ranges"], progress=not kw["quiet"])
    result.save(out, report=kw["report"], external_data=kw["external_data"])
    if (kw["save_ranges"] or kw["trt_cache"]) and result.ranges is None:
        click.echo("note: no ranges table in dynamic mode: --save-ranges/--trt-cache not written", err=True)
    if kw["save_ranges"] and result.ranges is not None:
        result.ranges.save(kw["save_ranges"])
    if kw["trt_cache"] and result.ranges is not None:
        from edgeq.calibrate import write_trt_cache

        write_trt_cache(result.ranges, kw["trt_cache"])
    print_summary(result.report, out)
    if (result.report.get("compress") or {}).get("size_target"):
        click.echo(f"  {result.report['notes'][0]}")  # stages/compress.py: the size search's note first
    auto = result.report.get("auto")
    if config.mode == "auto" and not auto:  # auto fell back to static (a model too big for it)
        for note in result.report.get("notes", []):
            if "instead" in note:
                click.echo(f"note: {note}", err=True)
    if auto:
        from edgeq.auto.render import metric_name

        click.echo(f"  auto: {auto['verdict']}")
        gate = auto.get("gate")
        if gate and "samples" in gate:
            click.echo(f"  checked on all {gate['samples']} {gate['what']}: min output SQNR {_fmt_db(gate['min_sqnr_db'])} dB "
                       f"(bound {_fmt_db(gate['bound_db'])} dB), worst sample {_fmt_db(gate['worst_sample_db'])} dB, "
                       f"5th percentile {_fmt_db(gate['p5_sample_db'])} dB"
                       + (f", half the noise in {gate['noise_half_in']} of them" if gate.get("noise_half_in") else "")
                       + (f", {metric_name(auto)} {gate['metric']:.4f}"
                          if gate.get("metric") is not None else ""))
            if gate["what"] != "evaluation samples" or gate["samples"] < SMALL_GATE:
                click.echo(f"note: that check used {gate['samples']} {gate['what']}: data from another source can score "
                           "much lower (docs/benchmarks.md, Generalization); pass --eval DATA with samples the "
                           "calibration did not come from to check the promise on them", err=True)
        for note in auto.get("notes", []):
            if note.startswith("data: "):
                click.echo(f"note: {note[6:]}", err=True)
        for failed in (gate or {}).get("failed", []):
            click.echo(f"note: {failed['configuration']!r} missed the target on all {failed['samples']} "
                       f"{gate['what']} (bound {_fmt_db(failed['bound_db'])} dB): not returned", err=True)
        for again in (gate or {}).get("searched_again", []):
            click.echo(f"note: the search ran again aiming at {_fmt_db(again['aim_db'])} dB (the gap from the scoring "
                       f"samples to the gate, over the target): {len(again['configurations'])} configuration(s) met "
                       "that aim", err=True)
        if auto.get("chosen") == "fp32":
            prepared = "the answer is edgeq's prepared float graph" in auto.get("verdict", "")
            stored = (auto.get("size") or {}).get("stored") == "codebooks"  # auto/size_fit.py
            what = (f"{'a faster' if prepared else 'the'} fp32 model" if not stored
                    else "the fp32 model with its weights stored in codebooks for --max-size (fp32 kernels)")
            click.echo(f"note: {out} is {what} (auto mode found no int8 configuration that is both faithful and faster "
                       "here); --mode static forces uniform int8", err=True)
    return result


def check_quantize_outputs(out: str, kw: dict[str, Any], inputs: list[str]) -> None:
    """Before any work: no output (the model, its ``.data``, the report and its Markdown/HTML
    siblings, the ranges, the TensorRT cache) is an input or another output."""
    from edgeq.io import check_outputs
    from edgeq.report.quant_report import report_files

    outputs = [out, out + ".data" if kw["external_data"] else None, kw["save_ranges"], kw["trt_cache"]]
    if kw["report"]:
        outputs += report_files(kw["report"])
    check_outputs(outputs, inputs)


@click.command("quantize")
@click.argument("model", type=click.Path())  # a folder gets edgeq's one-line error
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the quantized model.")
@quant_options
def quantize(model: str, out: str, **kw: Any) -> None:
    """Quantize an ONNX model: with --calib DATA, auto mode (int8 where it is faithful and fast,
    measured per layer); --mode static for uniform int8, --mode dynamic without data."""
    _run_quantize(model, out, kw, inputs=[model, *_input_paths(kw)])


def _input_paths(kw: dict[str, Any]) -> list[str]:
    """The files and folders given as inputs besides the model (none is ever written over)."""
    return [p for p in (kw["calib"], kw["eval_data"], kw["ranges"], kw["config_file"]) if p and os.path.exists(p)]


@click.command("export-and-quantize")
@click.argument("spec")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the int8 model.")
@click.option("--fp32-out", type=click.Path(dir_okay=False), default=None, help="Also keep the exported fp32 model here.")
@quant_options
def export_and_quantize(spec: str, out: str, fp32_out: str | None, **kw: Any) -> None:
    """Export a PyTorch model (a zoo name or module:factory), then quantize it."""
    import tempfile

    from edgeq.config import MODES, default_mode
    from edgeq.exporter import export
    from edgeq.io import check_output_path

    check_output_path(out, _input_paths(kw))
    calib, eval_data, labels = kw["calib"], kw["eval_data"], None
    zoo_spec = _zoo_spec(spec)
    if zoo_spec is not None:
        if calib is None and kw["ranges"] is None and MODES[_mode(kw) or default_mode(has_data=True)].data == "required":
            calib = list(zoo_spec.calibration_data(64))
        if eval_data is None:
            eval_data = list(zoo_spec.eval_data(200))
            labels = zoo_spec.eval_labels(200)
    with tempfile.TemporaryDirectory(prefix="edgeq-export-") as tmp:
        fp32_path = fp32_out or os.path.join(tmp, "model.fp32.onnx")
        if fp32_out:
            check_output_path(fp32_out, [out, *_input_paths(kw)])
        result = export(spec, fp32_path)
        click.echo(f"exported {spec} -> {fp32_out or 'fp32 model'} ({getattr(result, 'exporter', 'torch.onnx')})")
        _run_quantize(fp32_path, out, kw, inputs=[fp32_path, *_input_paths(kw)], eval_data=eval_data, labels=labels, calib=calib)
        before, after = os.path.getsize(fp32_path), os.path.getsize(out)
        click.echo(f"  file size: fp32 {before / 1024:,.0f} KB -> int8 {after / 1024:,.0f} KB ({after / before:.2f}x)")


@functools.cache
def _zoo_spec(name: str):
    from edgeq import zoo

    try:
        return zoo.get(name)
    except Exception:  # not a zoo name: a module:factory spec
        return None
