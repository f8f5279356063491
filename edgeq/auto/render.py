"""Markdown and HTML renderings of the sensitivity and auto reports (JSON stays the source).

Importing this module registers the quantize report's ``auto`` section with
``edgeq.report.sections``, so ``write_report`` renders it without importing auto mode.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from edgeq.report.sections import register_section

__all__ = ["sensitivity_markdown", "sensitivity_html", "auto_markdown", "auto_html", "write_auto_html", "metric_name"]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _metric(value: Any) -> str:
    """A metric value as the CLI prints it: 4 decimals (the top-1 guard's 0.995 is not "0.99")."""
    return f"{value:.4f}" if isinstance(value, float) else _fmt(value)


def metric_name(auto: Mapping[str, Any]) -> str:
    """What ``report["auto"]`` calls its metric: the default guard's label, or "metric"."""
    return auto.get("target", {}).get("metric") or "metric"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return out


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, parts: list[str]) -> str:
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>")


def _sens_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    return [[e["node"], e["group"], e["only_int8_sqnr_db"], e["all_but_sqnr_db"], e["gain_if_float_db"],
             max(e["outlier_ratio"].values(), default=None), e["outlier_dominated"]] for e in report["layers"]]


_SENS_HEAD = ["node", "group", "SQNR only it int8 (dB)", "SQNR all but it (dB)", "gain if float (dB)",
              "max outlier ratio", "outlier-dominated tensors"]


def sensitivity_markdown(report: Mapping[str, Any]) -> str:
    lines = [f"# Quantization sensitivity: {report.get('model') or 'model'}", ""]
    cal = report["calibration"]
    lines += [f"Calibration: one pass, {cal['num_samples']} samples, {cal['tensors']} tensors, method "
              f"{cal['method']}; evaluation on {report['eval_samples']} samples.",
              f"All quantizable nodes int8: min output SQNR {_fmt(report['all_int8']['min_sqnr_db'])} dB.", ""]
    lines += ["## Layers (most sensitive first)", ""] + _md_table(_SENS_HEAD, _sens_rows(report)) + [""]
    outliers = [t for t in report["tensors"] if t["outlier_dominated"]]
    lines += ["## Outlier-dominated ranges (max|x| / p99.99)", ""]
    lines += _md_table(["tensor", "min", "max", "ratio"], [[t["tensor"], t["min"], t["max"], t["outlier_ratio"]]
                                                         for t in outliers]) if outliers else ["none"]
    lines += [""] + [f"- {n}" for n in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def sensitivity_html(report: Mapping[str, Any]) -> str:
    from edgeq.auto.chart import sensitivity_bars

    rows = [(e["node"], _num(e["only_int8_sqnr_db"]), _num(e["all_but_sqnr_db"])) for e in report["layers"]]
    chart = sensitivity_bars(rows, "Output SQNR per layer")
    outliers = [[t["tensor"], t["min"], t["max"], t["outlier_ratio"]] for t in report["tensors"] if t["outlier_dominated"]]
    parts = [f"<p>All int8: min output SQNR {_fmt(report['all_int8']['min_sqnr_db'])} dB.</p>", chart,
             "<h2>Layers (most sensitive first)</h2>", _html_table(_SENS_HEAD, _sens_rows(report)),
             "<h2>Outlier-dominated ranges</h2>",
             _html_table(["tensor", "min", "max", "ratio"], outliers) if outliers else "<p>none</p>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in report.get("notes", [])]
    return _page(f"Sensitivity: {report.get('model') or 'model'}", parts)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return float(value)
    return float(value)


_AUTO_HEAD = ["configuration", "min SQNR (dB)", "latency (ms)", "meets target", "chosen"]


def _auto_rows(auto: Mapping[str, Any]) -> list[list[Any]]:
    return [[c["name"], c["min_sqnr_db"], c.get("latency_ms"), "yes" if c["meets_target"] else "no",
             "*" if c["name"] == auto.get("chosen") else ""] for c in auto["configurations"]]


def _layer_rows(auto: Mapping[str, Any]) -> list[list[Any]]:
    return [[e["node"], e["op"], e["precision"], e["why"]] for e in auto["layers"]]


_PRECISIONS = ("int8", "int8-dynamic", "int8-per-token", "int16", "fp16", "fp32")


def _precision_counts(auto: Mapping[str, Any]) -> str:
    """e.g. "24 int8, 1 int16, 3 fp32" (the ladder's order)."""
    counts = {p: sum(e["precision"] == p for e in auto["layers"]) for p in _PRECISIONS}
    return ", ".join(f"{n} {p}" for p, n in counts.items() if n) or "no quantizable layers"


def auto_markdown(report: Mapping[str, Any]) -> str:
    auto = report["auto"]
    lines = ["# edgeq auto", "", f"Verdict: {auto['verdict']}", "",
             f"Target: min output SQNR {auto['target']['min_sqnr']} dB"
             + (f", {metric_name(auto)} >= {auto['target']['min_score']}" if auto["target"].get("min_score") is not None else ""),
             ""]
    lines += [_gate_line(auto), ""]
    if auto.get("size"):
        lines += ["## Size target", "", _size_line(auto["size"]), ""]
        lines += _md_table(["weights stored as", "count"], sorted(auto["size"].get("widths", {}).items())) + [""]
    lines += ["## Configurations tried", ""] + _md_table(_AUTO_HEAD, _auto_rows(auto)) + [""]
    lines += ["## Repairs", ""] + _md_table(["repair", "kept", "min SQNR before", "after", "detail"],
                                            [[r["repair"], r["kept"], r.get("before_db"), r.get("after_db"),
                                              r.get("detail", "")] for r in auto["repairs"]]) + [""]
    lines += ["## Per-layer precision", "", f"Layers: {_precision_counts(auto)}.", ""]
    lines += _md_table(["node", "op", "precision", "why"], _layer_rows(auto))
    lines += [""] + [f"- {n}" for n in auto.get("notes", [])]
    return "\n".join(lines) + "\n"


def _size_line(size: Mapping[str, Any]) -> str:
    """``report["auto"]["size"]`` (``auto/size_fit.py``) in a sentence."""
    limit = "the smallest file that keeps the promise" if not size.get("limit_bytes") else \
        f"at most {size['limit_bytes'] / 1e6:.3f} MB"
    line = (f"--max-size {size.get('asked')}: {limit}; {size.get('bytes', 0) / 1e6:.3f} MB "
            f"({size.get('answer_bytes', 0) / 1e6:.3f} MB as searched), "
            + ("weights stored through codebooks." if size.get("stored") == "codebooks" else f"{size.get('stored')}."))
    check, ms, load = size.get("check"), size.get("ms"), size.get("load_ms")
    if check:
        line += (f" Checked on {check['samples']} samples: min output SQNR {_fmt(check['min_sqnr_db'])} dB "
                 f"(bound {_fmt(check['bound_db'])}, target {_fmt(check['target_db'])}).")
    if ms and load:
        line += (f" Latency {ms['stored']:.3f} ms (as searched {ms['searched']:.3f}, fp32 {ms['fp32']:.3f}); session "
                 f"start {load['stored']:.0f} ms (fp32 {load['fp32']:.0f}).")
    return line


def _gate_line(auto: Mapping[str, Any]) -> str:
    """What the final gate checked, on how many samples (``edgeq.auto.gate``)."""
    fid, gate = auto.get("fidelity", {}), auto.get("gate") or {}
    line = (f"Scored on {auto.get('eval_samples')} samples: min output SQNR {_fmt(fid.get('min_sqnr_db'))} dB "
            f"(bound {_fmt(fid.get('bound_db'))}, worst sample {_fmt(fid.get('worst_sample_db'))}, "
            f"5th percentile {_fmt(fid.get('p5_sample_db'))}).")
    if "samples" in gate:
        line += (f" Checked on all {gate['samples']} {gate['what']}: min output SQNR {_fmt(gate['min_sqnr_db'])} dB "
                 f"(bound {_fmt(gate['bound_db'])}, worst sample {_fmt(gate['worst_sample_db'])}, "
                 f"5th percentile {_fmt(gate['p5_sample_db'])}"
                 + (f", half the noise in {gate['noise_half_in']} of them" if gate.get("noise_half_in") else "") + ")"
                 + (f", {metric_name(auto)} {_metric(gate['metric'])}" if gate.get("metric") is not None
                    else "") + ".")
        if gate.get("fitted"):
            line += f" {gate['fitted'][0].upper()}{gate['fitted'][1:]}."
    elif gate.get("exact"):
        line += " The fp32 model is returned: exact."
    for failed in gate.get("failed", []):
        line += (f" {failed['configuration']!r} missed the target on all {failed['samples']} {gate['what']} "
                 f"(bound {_fmt(failed['bound_db'])} dB, worst sample {_fmt(failed['worst_sample_db'])} dB).")
    for again in gate.get("searched_again", []):
        line += (f" The search ran again aiming at {_fmt(again['aim_db'])} dB: {len(again['configurations'])} "
                 "configuration(s) met that aim.")
    return line


def auto_html(report: Mapping[str, Any]) -> str:
    from edgeq.auto.chart import tradeoff_scatter

    auto = report["auto"]
    points = [(c["name"], c["latency_ms"], _num(c["min_sqnr_db"]), c["meets_target"])
              for c in auto["configurations"] if c.get("latency_ms") is not None]
    chart = tradeoff_scatter(points, auto.get("chosen"), "Error vs latency", target=auto["target"]["min_sqnr"])
    size = [f"<h2>Size target</h2><p>{html.escape(_size_line(auto['size']))}</p>",
            _html_table(["weights stored as", "count"], sorted(auto["size"].get("widths", {}).items()))] \
        if auto.get("size") else []
    parts = [f"<p>Verdict: {html.escape(auto['verdict'])}</p>", f"<p>{html.escape(_gate_line(auto))}</p>", *size, chart,
             "<h2>Configurations tried</h2>",
             _html_table(_AUTO_HEAD, _auto_rows(auto)), "<h2>Per-layer precision</h2>",
             f"<p>Layers: {html.escape(_precision_counts(auto))}.</p>",
             _html_table(["node", "op", "precision", "why"], _layer_rows(auto))]
    parts += [f"<p>{html.escape(n)}</p>" for n in auto.get("notes", [])]
    return _page("edgeq auto", parts)


def write_auto_html(report: Mapping[str, Any], path: str, *, inputs: Sequence[str] = ()) -> str:
    """Write ``auto_html(report)`` to ``path`` atomically (never over an input)."""
    from edgeq.io import atomic_path

    with atomic_path(path, list(inputs)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(auto_html(report))
    return path


def _report_section(report: Mapping[str, Any]) -> str:
    """``auto_markdown`` as a section of the quantize report's Markdown: headings one level down."""
    return auto_markdown(report).replace("# edgeq auto", "## Auto mode", 1).replace("\n## ", "\n### ")


register_section("auto", markdown=_report_section, html=auto_html)
