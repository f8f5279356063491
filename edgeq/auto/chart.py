"""SVG charts for the auto reports: per-layer sensitivity bars and the error/latency scatter.

Same look as ``edgeq.report.charts`` (its palette and tick rules), no plotting library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgeq.report.charts import PALETTE, escape, nice_ticks, svg_document

__all__ = ["sensitivity_bars", "tradeoff_scatter"]

_CAP = 80.0  # dB shown for "exact" (infinite SQNR)


def _db(value: float | None) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0.0
    return max(0.0, min(_CAP, value))


def sensitivity_bars(rows: Sequence[tuple[str, float | None, float | None]], title: str,
                     target: float | None = None, width: int = 760) -> str:
    """Rows of ``(layer, SQNR with only it int8, SQNR with all but it int8)``, dB; lower is worse."""
    label_w = min(300, 12 + 7 * max((len(r[0]) for r in rows), default=10))
    left, right, top, bar_h, gap = label_w, 40, 58, 9, 7
    plot_w = width - left - right
    height = top + len(rows) * (2 * bar_h + gap) + 40
    ticks = nice_ticks(max([_db(a) for _, a, _ in rows] + [_db(b) for _, _, b in rows] + [10.0]))
    scale = plot_w / ticks[-1]
    body = [
        f'<rect x="{left}" y="30" width="12" height="10" fill="{PALETTE[0]}"/>'
        f'<text x="{left + 16}" y="40" font-size="12">only this layer int8</text>',
        f'<rect x="{left + 170}" y="30" width="12" height="10" fill="{PALETTE[1]}"/>'
        f'<text x="{left + 186}" y="40" font-size="12">all but this layer int8</text>',
    ]
    for t in ticks:
        x = left + t * scale
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 30}" stroke="#e3e3e3"/>')
        body.append(f'<text x="{x:.1f}" y="{height - 16}" font-size="11" fill="#666" text-anchor="middle">{t:g}</text>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 2}" font-size="11" fill="#444" '
                f'text-anchor="middle">output SQNR, dB (capped at {_CAP:g}; longer is better)</text>')
    if target is not None and 0 < target <= ticks[-1]:
        x = left + target * scale
        body.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 30}" stroke="#e15759" '
                    f'stroke-dasharray="4 3"><title>target {target:g} dB</title></line>')
    for i, (label, only, all_but) in enumerate(rows):
        y = top + i * (2 * bar_h + gap)
        body.append(f'<text x="{left - 6}" y="{y + 2 * bar_h - 3}" font-size="11" fill="#222" '
                    f'text-anchor="end">{escape(label)}</text>')
        for k, (value, color) in enumerate(((only, PALETTE[0]), (all_but, PALETTE[1]))):
            w = max(1.0, _db(value) * scale)
            text = "n/a" if value is None else "exact" if math.isinf(value) and value > 0 else f"{value:.1f} dB"
            body.append(f'<rect x="{left}" y="{y + k * bar_h}" width="{w:.1f}" height="{bar_h - 1}" fill="{color}">'
                        f'<title>{escape(label)}: {text}</title></rect>')
    return svg_document(width, height, body, title)


def tradeoff_scatter(points: Sequence[tuple[str, float, float, bool]], chosen: str | None, title: str,
                     target: float | None = None, width: int = 760, height: int = 380) -> str:
    """Points ``(configuration, latency ms, min output SQNR dB, meets target)``; ``chosen`` ringed."""
    left, right, top, bottom = 70, 220, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    xt = nice_ticks(max([p[1] for p in points] + [1e-3]))
    yt = nice_ticks(max([_db(p[2]) for p in points] + [10.0]))

    def xy(ms: float, db: float) -> tuple[float, float]:
        return left + ms / xt[-1] * plot_w, top + plot_h - _db(db) / yt[-1] * plot_h

    body = []
    for t in xt:
        x, _ = xy(t, 0)
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>'
                    f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="11" fill="#666" text-anchor="middle">{t:g}</text>')
    for t in yt:
        _, y = xy(0, t)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" fill="#666" text-anchor="end">{t:g}</text>')
    if target is not None and 0 < target <= yt[-1]:
        _, y = xy(0, target)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e15759" '
                    f'stroke-dasharray="4 3"/><text x="{left + plot_w + 4}" y="{y + 4:.1f}" font-size="11" '
                    f'fill="#e15759">target {target:g} dB</text>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" font-size="12" fill="#444" '
                f'text-anchor="middle">latency, ms (median)</text>')
    body.append(f'<text x="16" y="{top + plot_h / 2:.1f}" font-size="12" fill="#444" text-anchor="middle" '
                f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">min output SQNR, dB (capped {_CAP:g})</text>')
    for i, (name, ms, db, ok) in enumerate(points):
        x, y = xy(ms, db)
        color = PALETTE[2] if ok else PALETTE[3]
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>{escape(name)}: '
                    f'{ms:.3f} ms, {db:.1f} dB{"" if ok else " (misses target)"}</title></circle>')
        if name == chosen:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="10" fill="none" stroke="#222" stroke-width="2"/>')
        body.append(f'<text x="{left + plot_w + 12}" y="{top + 14 + 16 * i}" font-size="11" fill="{color}">'
                    f'{"* " if name == chosen else ""}{escape(name)}</text>')
    return svg_document(width, height, body, title)
