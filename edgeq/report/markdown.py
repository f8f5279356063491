"""Render a quantize report (the JSON dict) as Markdown."""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _evaluation(ev: dict[str, Any]) -> list[str]:
    lines = ["", "## Fidelity and speed vs fp32", "", f"Evaluation samples: {ev.get('num_samples')}", ""]
    rows = []
    for name, m in ev.get("outputs", {}).items():
        rows.append([name, m.get("sqnr_db"), m.get("cosine"), m.get("max_abs_error"), m.get("top1_agreement", "")])
    lines += _table(["output", "SQNR dB", "cosine", "max abs error", "top-1 agreement"], rows)
    acc = ev.get("accuracy")
    if acc:
        lines += ["", f"Top-1 accuracy vs labels: fp32 {acc['fp32']:.4f}, int8 {acc['int8']:.4f} "
                      f"(delta {acc['int8'] - acc['fp32']:+.4f})"]
    lat = ev.get("latency_ms")
    if lat:
        lines += [""] + _table(
            ["threads", "fp32 ms (median)", "int8 ms (median)", "speed-up"],
            [[k, v["fp32"], v["int8"], v["fp32"] / v["int8"] if v["int8"] else ""] for k, v in lat.items()],
        )
    layers = ev.get("layers")
    if layers:
        worst = sorted(layers.items(), key=lambda kv: kv[1]["sqnr_db"])[:10]
        lines += ["", "Per-layer error (activations, error accumulated up to that layer; worst 10):", ""]
        lines += _table(["tensor", "SQNR dB", "cosine"], [[k, v["sqnr_db"], v["cosine"]] for k, v in worst])
    return lines


def _decoder_bits(d: dict) -> list[str]:
    """The per-layer bits search of a decoder (stages/decoder_bits.py): target, answer, candidates."""
    lines = ["", "## Per-layer bits (perplexity target)", "",
             f"- target: perplexity within {d['max_ppl_increase']:.2%} of fp32 on {d['tokens_scored']} calibration "
             f"tokens ({d['sequences']} sequences): {'met' if d['met'] else 'NOT met'}",
             f"- answer: {d['chosen']}: perplexity {d['ppl']:.5g} vs fp32 {d['fp32_ppl']:.5g} ({d['ppl_ratio']:.4f}x); "
             f"{len(d['eight_bit'])} layer(s) 8-bit, {len(d['fp32'])} float"]
    if d.get("decode_ms"):
        lines.append(f"- decode step: {d['decode_ms']['quantized']:.3g} ms vs fp32 {d['decode_ms']['fp32']:.3g} ms "
                     f"({d['decode_speedup']:.2f}x, 1 thread)")
    lines += [""] + _table(["candidate", "perplexity", "x fp32", "bytes"],
                           [[c["name"], f"{c['ppl']:.5g}", f"{c['ppl_ratio']:.4f}", f"{c['bytes']:,}"]
                            for c in d["candidates"]])
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    cfg = report["config"]
    lines = [
        "# edgeq quantize report",
        "",
        f"Model: `{report.get('source') or '(in memory)'}`  ",
        f"Mode: {cfg['mode']}, method {cfg['method']}, activations {cfg['activations']}, weights "
        f"{cfg['weights']} {cfg['granularity']}, format {cfg['format']}",
        "",
        f"- nodes: {s['nodes']}, quantized: {s['quantized']} ({s['int8_kernels']} int8 kernels), "
        f"left float: {s['left_float']}",
        f"- size: {s['size_before_bytes']:,} -> {s['size_after_bytes']:,} bytes"
        + (f" ({s['size_ratio']:.3f}x)" if s.get("size_ratio") else ""),
        f"- time: {s['seconds']} s",
    ]
    if report.get("evaluation"):
        lines += _evaluation(report["evaluation"])
    if report.get("decoder_bits"):
        lines += _decoder_bits(report["decoder_bits"])
    lines += ["", "## Quantized nodes", ""]
    rows = []
    for e in report["quantized"]:
        acts = "; ".join(f"{k}: s={v['scale']:.3g} zp={v['zero_point']}" for k, v in e.get("activations", {}).items())
        w = e.get("weights")
        wtxt = f"{w['granularity']} s∈[{w['scale_min']:.3g}, {w['scale_max']:.3g}]" if w else ""
        if "scheme" in e:  # compress mode: codebook weights, float compute
            wtxt = (f"{e['scheme']} {e['bits']}-bit, {e['groups']} codebook(s), {e['bits_per_weight']} bits a weight, "
                    f"{e['sqnr_db']} dB")
        elif "bits" in e and "role" not in e:  # weight-only: blocked weights, float compute
            wtxt = f"{e['bits']}-bit, blocks of {e['block_size']}, {e.get('rounding', 'nearest')}"
        rows.append([e["node"], e["op"], e.get("role", "weight-only"), acts, wtxt])
    lines += _table(["node", "op", "role", "activations", "weights"], rows)
    lines += ["", "## Nodes left in float", ""]
    lines += _table(["node", "op", "reason"], [[e["node"], e["op"], e["reason"]] for e in report["float"]])
    if report.get("prepare"):
        lines += ["", "## Prepare notes", ""] + [f"- {n}" for n in report["prepare"]]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    if report.get("qoperator"):
        lines += ["", "## Integer-only rewrite", "", "See the JSON report's `qoperator` section."]
    return "\n".join(lines) + "\n"
