"""The size-vs-fidelity chart: every variant a dot, each model's best trade-offs joined by a line.

    svg = frontier_chart({"digits_resnet": [("int8", 3.34, 32.0), ("kmeans:4", 5.69, 13.1), ...]},
                         "File size vs fidelity", "x smaller than fp32", "output SQNR, dB")

1. x: how many times smaller than the fp32 file (linear axis from 1); y: a fidelity figure where
   higher is better (SQNR dB, capped at ``cap`` for "exact", floored at 0).
2. Each model's Pareto frontier (no other variant of it both smaller and more faithful) is a
   line; the dots off it are the variants it beats. Hovering a dot names it (an SVG ``<title>``).
3. ``target``: a dashed horizontal line (a fidelity goal).
Same look as ``report.charts`` (palette, ticks, fonts), no plotting library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from edgeq.report.charts import color_for, escape, nice_ticks, svg_document

__all__ = ["frontier_chart", "frontier"]


def frontier(points: Sequence[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(2) The points no other point beats on both x (larger is better) and y, by x ascending."""
    best: list[tuple[str, float, float]] = []
    for name, x, y in sorted(points, key=lambda p: (-p[1], -p[2])):
        if not best or y > best[-1][2]:
            best.append((name, x, y))
    return best[::-1]


def frontier_chart(series: Mapping[str, Sequence[tuple[str, float, float]]], title: str, x_label: str,
                   y_label: str, *, cap: float = 60.0, target: float | None = None, width: int = 760,
                   height: int = 420) -> str:
    """``series``: model -> ``(variant, x times smaller, fidelity)`` points; see the module doc."""
    keys = list(series)
    clip = {k: [(n, float(x), max(0.0, min(cap, y if math.isfinite(y) else cap))) for n, x, y in pts]
            for k, pts in series.items()}
    left, right, top, bottom = 64, 170, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    x_hi = nice_ticks(max([x for pts in clip.values() for _, x, _ in pts] + [2.0]))[-1]
    y_ticks = nice_ticks(max([y for pts in clip.values() for _, _, y in pts] + [10.0]))
    x_ticks = [t for t in nice_ticks(x_hi) if t >= 1] or [1.0]
    x_lo = 1.0

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / max(x_hi - x_lo, 1e-9) * plot_w, top + plot_h - y / y_ticks[-1] * plot_h)

    body = []
    for t in x_ticks:
        x, _ = xy(t, 0)
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>'
                    f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="11" fill="#666" text-anchor="middle">{t:g}x</text>')
    for t in y_ticks:
        _, y = xy(x_lo, t)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" fill="#666" text-anchor="end">{t:g}</text>')
    if target is not None and 0 < target <= y_ticks[-1]:  # (3)
        _, y = xy(x_lo, target)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e15759" '
                    f'stroke-dasharray="4 3"/><text x="{left + plot_w + 4}" y="{y + 4:.1f}" font-size="11" '
                    f'fill="#e15759">{target:g}</text>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" font-size="12" fill="#444" '
                f'text-anchor="middle">{escape(x_label)}</text>')
    body.append(f'<text x="16" y="{top + plot_h / 2:.1f}" font-size="12" fill="#444" text-anchor="middle" '
                f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">{escape(y_label)} (capped {cap:g})</text>')
    for i, key in enumerate(keys):
        color = color_for(key, keys)
        line = frontier(clip[key])
        path = " ".join("{:.1f},{:.1f}".format(*xy(x, y)) for _, x, y in line)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for name, x, y in clip[key]:
            px, py = xy(x, y)
            body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{color}"><title>{escape(key)} {escape(name)}: '
                        f'{x:.2f}x smaller, {y:.1f}</title></circle>')
        body.append(f'<rect x="{left + plot_w + 12}" y="{top + 6 + 18 * i}" width="10" height="10" fill="{color}"/>'
                    f'<text x="{left + plot_w + 26}" y="{top + 15 + 18 * i}" font-size="11" fill="#333">{escape(key)}</text>')
    return svg_document(width, height, body, title)
