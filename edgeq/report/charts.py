"""Charts as inline SVG strings: no JavaScript, no network, no plotting library.

* ``latency_bars``: horizontal bars (p50) with a p90 tick per row, rows grouped by a colour key.
* ``line_chart``: one line per series, e.g. throughput against batch size.
* ``share_bars``: one 100% stacked bar per row, e.g. each op type's share of kernel time.

Every function returns a complete ``<svg>`` element whose size is given in pixels; text is
escaped. Colours come from one palette so the same key gets the same colour across charts.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["PALETTE", "color_for", "latency_bars", "line_chart", "share_bars", "nice_ticks", "svg_document", "escape"]

PALETTE = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)
_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"'


def color_for(key: str, keys: Sequence[str]) -> str:
    """The palette colour of ``key`` by its position in ``keys`` (grey when not there)."""
    return PALETTE[list(keys).index(key) % len(PALETTE)] if key in keys else "#999999"


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high``."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(high / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def svg_document(width: int, height: int, body: list[str], title: str) -> str:
    """A complete ``<svg>`` of ``body``'s elements under a bold ``title``, in the charts' font."""
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" {_FONT}>')
    heading = f'<text x="8" y="20" font-size="15" font-weight="600" fill="#222">{escape(title)}</text>'
    return "\n".join([head, heading, *body, "</svg>"])


def _legend(keys: Sequence[str], x: int, y: int, colors: Sequence[str] | None = None,
            max_width: int = 700) -> tuple[list[str], int]:
    """Legend items wrapped into rows no wider than ``max_width``; returns (elements, extra height)."""
    out, cx, cy = [], x, y
    for i, key in enumerate(keys):
        color = colors[i] if colors else color_for(key, keys)
        item_w = 16 + 7 * len(str(key)) + 18
        if cx > x and cx + item_w > x + max_width:
            cx, cy = x, cy + 18
        out.append(f'<rect x="{cx}" y="{cy - 10}" width="12" height="12" rx="2" fill="{color}"/>')
        out.append(f'<text x="{cx + 16}" y="{cy}" font-size="12" fill="#333">{escape(key)}</text>')
        cx += item_w
    return out, cy - y


def latency_bars(
    rows: Sequence[tuple[str, str, float, float | None]],
    title: str,
    unit: str = "ms",
    width: int = 760,
) -> str:
    """Rows of ``(label, colour key, p50, p90)``: a bar to p50, a dark tick at p90."""
    keys = list(dict.fromkeys(key for _, key, _, _ in rows))
    label_w = min(320, 12 + 7 * max((len(label) for label, *_ in rows), default=10))
    left, right, top, bar_h, gap = label_w, 130, 54, 18, 8
    plot_w = width - left - right
    body, extra = _legend(keys, left, 40, max_width=plot_w)
    top += extra
    high = max([p90 or p50 for _, _, p50, p90 in rows] + [1e-9])
    ticks = nice_ticks(high)
    scale = plot_w / ticks[-1]
    height = top + len(rows) * (bar_h + gap) + 36
    for t in ticks:
        x = left + t * scale
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 30}" stroke="#e3e3e3"/>')
        body.append(f'<text x="{x:.1f}" y="{height - 16}" font-size="11" fill="#666" text-anchor="middle">{_fmt(t)}</text>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 2}" font-size="11" fill="#444" '
                f'text-anchor="middle">{escape(unit)} (bar: p50, tick: p90)</text>')
    for i, (label, key, p50, p90) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = max(1.0, p50 * scale)
        body.append(f'<text x="{left - 6}" y="{y + bar_h - 5}" font-size="12" fill="#222" '
                    f'text-anchor="end">{escape(label)}</text>')
        body.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="2" fill="{color_for(key, keys)}">'
                    f'<title>{escape(label)}: p50 {p50:.4g} {escape(unit)}'
                    f'{"" if p90 is None else f", p90 {p90:.4g} {escape(unit)}"}</title></rect>')
        end = w
        if p90 is not None:
            x90 = left + p90 * scale
            body.append(f'<line x1="{x90:.1f}" y1="{y - 2}" x2="{x90:.1f}" y2="{y + bar_h + 2}" '
                        f'stroke="#222" stroke-width="2"/>')
            end = max(end, p90 * scale)
        text = _fmt(p50) if p90 is None else f"{_fmt(p50)}  (p90 {_fmt(p90)})"
        body.append(f'<text x="{left + end + 6:.1f}" y="{y + bar_h - 5}" font-size="11" fill="#333">{escape(text)}</text>')
    body.append(f'<line x1="{left}" y1="{top - 4}" x2="{left}" y2="{height - 30}" stroke="#888"/>')
    return svg_document(width, height, body, title)


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 760,
    height: int = 340,
) -> str:
    """One line with dots per series of ``(x, y)`` points; x values are shown as categories
    on a log2-like even spacing when they are powers of two (batch sizes)."""
    keys = list(series)
    xs = sorted({x for points in series.values() for x, _ in points})
    left, right, top, bottom = 70, 24, 54, 50
    plot_w = width - left - right
    legend, extra = _legend(keys, left, 40, max_width=plot_w)
    top += extra
    height += extra
    plot_h = height - top - bottom
    high = max([y for points in series.values() for _, y in points] + [1e-9])
    ticks = nice_ticks(high)
    pos = {x: left + (plot_w * (i / (len(xs) - 1)) if len(xs) > 1 else plot_w / 2) for i, x in enumerate(xs)}

    def ypos(v: float) -> float:
        return top + plot_h - v / ticks[-1] * plot_h

    body = legend
    for t in ticks:
        y = ypos(t)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" fill="#666" text-anchor="end">{_fmt(t)}</text>')
    for x in xs:
        body.append(f'<text x="{pos[x]:.1f}" y="{top + plot_h + 16}" font-size="11" fill="#666" '
                    f'text-anchor="middle">{_fmt(x)}</text>')
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>')
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" font-size="12" fill="#444" '
                f'text-anchor="middle">{escape(x_label)}</text>')
    body.append(f'<text x="16" y="{top + plot_h / 2:.1f}" font-size="12" fill="#444" text-anchor="middle" '
                f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">{escape(y_label)}</text>')
    for key in keys:
        color = color_for(key, keys)
        points = sorted(series[key])
        path = " ".join(f"{pos[x]:.1f},{ypos(y):.1f}" for x, y in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
        for x, y in points:
            body.append(f'<circle cx="{pos[x]:.1f}" cy="{ypos(y):.1f}" r="4" fill="{color}">'
                        f'<title>{escape(key)}: {escape(x_label)} {_fmt(x)} -> {y:.4g}</title></circle>')
    return svg_document(width, height, body, title)


def share_bars(
    rows: Sequence[tuple[str, Mapping[str, float]]],
    title: str,
    top_n: int = 8,
    width: int = 760,
) -> str:
    """Rows of ``(label, {part: share})``: one 100% stacked bar per row; parts beyond the
    ``top_n`` largest overall are merged into "other"."""
    totals: dict[str, float] = {}
    for _, parts in rows:
        for part, share in parts.items():
            totals[part] = totals.get(part, 0.0) + share
    keep = [p for p, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:top_n]]
    keys = keep + (["other"] if len(totals) > len(keep) else [])
    colors = [PALETTE[i % len(PALETTE)] if k != "other" else "#c7c7c7" for i, k in enumerate(keys)]
    label_w = min(320, 12 + 7 * max((len(label) for label, _ in rows), default=10))
    left, right, top, bar_h, gap = label_w, 16, 64, 20, 10
    plot_w = width - left - right
    body, extra = _legend(keys, left, 40, colors, max_width=plot_w)
    top += extra - 10
    height = top + len(rows) * (bar_h + gap) + 28
    for i, (label, parts) in enumerate(rows):
        y = top + i * (bar_h + gap)
        total = sum(parts.values()) or 1.0
        merged = {k: parts.get(k, 0.0) for k in keep}
        if "other" in keys:
            merged["other"] = sum(v for k, v in parts.items() if k not in keep)
        body.append(f'<text x="{left - 6}" y="{y + bar_h - 6}" font-size="12" fill="#222" '
                    f'text-anchor="end">{escape(label)}</text>')
        x = float(left)
        for k in keys:
            w = merged.get(k, 0.0) / total * plot_w
            if w <= 0:
                continue
            color = colors[keys.index(k)]
            share = merged[k] / total
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}" '
                        f'stroke="#fff" stroke-width="1"><title>{escape(label)}: {escape(k)} {share:.1%}</title></rect>')
            if w > 34:
                body.append(f'<text x="{x + w / 2:.1f}" y="{y + bar_h - 6}" font-size="11" fill="#fff" '
                            f'text-anchor="middle">{share:.0%}</text>')
            x += w
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        xt = left + t * plot_w
        body.append(f'<text x="{xt:.1f}" y="{height - 8}" font-size="11" fill="#666" text-anchor="middle">{t:.0%}</text>')
    return svg_document(width, height, body, title)
