"""Self-contained HTML reports: one file, inline CSS and SVG charts, no scripts, no network.

``render_html(report, title)`` takes a JSON report (a dict):

* a compare report (``kind == "edgeq.compare"``, from ``edgeq.runtime.compare``): latency bars
  per model and provider (p50 bar, p90 tick) for each threads x batch setting, throughput
  against batch size, per-op-type time share when profiles are present, then speed and
  fidelity tables;
* any other report (the quantize report, say): its top-level scalars as a summary, lists of
  records as tables, nested dicts as nested sections, and a ``charts`` key may carry extra SVGs.

Everything is escaped; nothing refers to a URL.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from edgeq.report import charts

__all__ = ["render_html", "html_table"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1120px;color:#222;padding:0 16px;line-height:1.4}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px}th,td{border:1px solid #ddd;
padding:4px 8px;text-align:right;white-space:nowrap}th{background:#f4f6f8}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}.warn{color:#b3261e;font-weight:600}.ok{color:#1e7d32}
.chart{margin:8px 0 18px;overflow-x:auto}.note{font-size:13px;color:#555}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return format(value, spec)
    return str(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A table; the first ``left`` columns are left-aligned, cells are escaped."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>' for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = "".join(f'<td class="{"l" if i < left else ""}">{_esc(c)}</td>' for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _page(title: str, parts: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _name(path: str) -> str:
    return os.path.basename(str(path))


def _used(row: Mapping[str, Any]) -> str:
    used = (row.get("providers_used") or [row.get("provider", "?")])[0]
    return str(used).removesuffix("ExecutionProvider")


# -- compare reports ----------------------------------------------------------------------------
def _latency_section(report: Mapping[str, Any]) -> list[str]:
    runs = report.get("runs", [])
    groups: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["threads"], r["batch"]), []).append(r)
    parts = ["<h2>Latency</h2>"]
    for (threads, batch), rows in sorted(groups.items()):
        bars = [(f"{_name(r['model'])} · {r['provider']}", r["provider"], r["p50_ms"], r.get("p90_ms")) for r in rows]
        svg = charts.latency_bars(bars, f"Latency per run, {threads} thread(s), batch {batch}")
        parts.append(f'<div class="chart">{svg}</div>')
    return parts


def _throughput_section(report: Mapping[str, Any]) -> list[str]:
    series: dict[str, list[tuple[float, float]]] = {}
    for r in report.get("runs", []):
        series.setdefault(f"{_name(r['model'])} · {r['provider']} · {r['threads']}t", []).append(
            (r["batch"], r["throughput"]))
    if not series or all(len(v) < 2 for v in series.values()):
        return []
    svg = charts.line_chart(series, "Throughput against batch size", "batch size", "samples / s")
    return ["<h2>Throughput</h2>", f'<div class="chart">{svg}</div>']


def _profile_section(report: Mapping[str, Any]) -> list[str]:
    profiles = report.get("profiles") or []
    if not profiles:
        return []
    rows = [(f"{_name(p['model'])} · {p['provider']}", {o["op_type"]: o["share"] for o in p.get("by_op_type", [])})
            for p in profiles]
    svg = charts.share_bars(rows, "Share of kernel time by operator type")
    notes = [f"{_name(p['model'])} on {p['provider']}: {p['kernel_ms']:.3f} ms of kernels per run; "
             f"integer (int8) kernels {p.get('int8_kernel_share', 0):.0%} of it, Q/DQ {p.get('qdq_share', 0):.0%}; "
             f"nodes by provider {p.get('nodes_by_provider')}" for p in profiles]
    return ["<h2>Where the time goes</h2>", f'<div class="chart">{svg}</div>',
            '<ul class="note">' + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>"]


def _speed_table(report: Mapping[str, Any]) -> list[str]:
    from edgeq.runtime.compare import speedup_text

    header = ["model", "provider (used)", "threads", "batch", "p50 ms", "p90 ms", "p99 ms", "samples/s",
              "start ms", "peak RSS MB", "vs first"]
    rows = []
    for r in report.get("runs", []):
        rss = r.get("peak_rss_delta_bytes")
        fell = " FELL BACK" if r.get("fell_back") else ""
        rows.append([_name(r["model"]), f"{r['provider']} ({_used(r)}){fell}", r["threads"], r["batch"],
                     _num(r["p50_ms"]), _num(r.get("p90_ms")), _num(r.get("p99_ms")), _num(r["throughput"], ".1f"),
                     _num(r.get("session_start_ms"), ".1f"), "-" if rss is None else f"{rss / 2**20:.1f}",
                     speedup_text(r)])
    return ["<h2>Speed</h2>", html_table(header, rows, left=2)]


def _fidelity_table(report: Mapping[str, Any]) -> list[str]:
    ref = report.get("reference", {})
    header = ["model", "provider (used)", "output", "SQNR dB", "cosine", "max abs error", "top-1 agreement", "GPU MB added"]
    rows = []
    for f in report.get("fidelity", []):
        outputs = f.get("outputs") or {"(reference)": {}}
        for out, m in outputs.items():
            rows.append([_name(f["model"]), f"{f['provider']} ({_used(f)})", out, _num(m.get("sqnr_db"), ".1f"),
                         _num(m.get("cosine"), ".6f"), _num(m.get("max_abs_error"), ".3g"),
                         _num(m.get("top1_agreement"), ".3f"), _num(f.get("gpu_memory_mb"), ".0f")])
    feeds = report.get("feeds", {})
    note = (f'<p class="note">Reference: {_esc(_name(ref.get("model", "?")))} on {_esc(ref.get("provider", "?"))}; '
            f'feeds: {_esc(feeds.get("source", "?"))} ({_esc(feeds.get("count", "?"))}).</p>')
    return ["<h2>Fidelity against the reference</h2>", note, html_table(header, rows, left=3)]


def _compare_page(report: Mapping[str, Any], title: str) -> str:
    env = report.get("environment", {})
    meta = (f'<p class="meta">{len(report.get("models", []))} model(s) on {_esc(", ".join(report.get("providers", [])))}'
            f' · onnxruntime {_esc(env.get("onnxruntime", "?"))} · edgeq {_esc(env.get("edgeq", "?"))}'
            f' · {_esc(env.get("platform", ""))} · {_esc(env.get("cpus", "?"))} CPUs</p>')
    parts = [f"<h1>{_esc(title)}</h1>", meta]
    fell = [r for r in report.get("runs", []) if r.get("fell_back")]
    if fell:
        parts.append(f'<p class="warn">{len(fell)} configuration(s) fell back to another provider: '
                     "their figures are not the requested provider's.</p>")
    for s in report.get("skipped", []):
        parts.append(f'<p class="warn">Skipped {_esc(s["provider"])}: {_esc(s["reason"])}</p>')
    parts += _latency_section(report) + _throughput_section(report) + _profile_section(report)
    parts += _speed_table(report) + _fidelity_table(report)
    return _page(title, parts)


# -- any other report ---------------------------------------------------------------------------
def _safe_svg(svg: Any) -> bool:
    """Only plain SVG (as ``edgeq.report.charts`` makes) is embedded: no scripts, handlers or links."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(str(svg))
    except ET.ParseError:
        return False
    if not root.tag.endswith("svg"):
        return False
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1].lower()
        if tag in ("script", "foreignobject", "a", "image", "use"):
            return False
        if any(k.lower().startswith("on") or k.lower().endswith("href") for k in element.attrib):
            return False
    return True


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _generic(value: Any, depth: int) -> list[str]:
    parts: list[str] = []
    scalars = {k: v for k, v in value.items() if not isinstance(v, (Mapping, list))}
    if scalars:
        parts.append(html_table(["field", "value"], [[k, _num(v, ".4g")] for k, v in scalars.items()]))
    for key, item in value.items():
        tag = f"h{min(2 + depth, 4)}"
        if key == "charts" and isinstance(item, list):
            parts += [f'<div class="chart">{svg}</div>' for svg in item if _safe_svg(svg)]
        elif isinstance(item, Mapping):
            parts += [f"<{tag}>{_esc(key)}</{tag}>", *_generic(item, depth + 1)]
        elif _is_records(item):
            cols = list(dict.fromkeys(k for rec in item for k in rec))
            rows = [[_num(rec.get(c), ".4g") if not isinstance(rec.get(c), (list, dict)) else str(rec.get(c))
                     for c in cols] for rec in item]
            parts += [f"<{tag}>{_esc(key)}</{tag}>", html_table(cols, rows)]
        elif isinstance(item, list):
            parts += [f"<{tag}>{_esc(key)}</{tag}>",
                      "<ul>" + "".join(f"<li>{_esc(v)}</li>" for v in item) + "</ul>" if item else "<p>(none)</p>"]
    return parts


def render_html(report: Mapping[str, Any], title: str = "edgeq report") -> str:
    """Render a JSON report as one self-contained HTML page (see the module docstring)."""
    if report.get("kind") == "edgeq.compare":
        return _compare_page(report, title)
    return _page(title, [f"<h1>{_esc(title)}</h1>", *_generic(report, 0)])
