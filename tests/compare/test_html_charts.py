"""Inline-SVG charts and the HTML renderer: well-formed, proportional, escaped, self-contained."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from edgeq.report import charts
from edgeq.report.html import render_html
from edgeq.runtime.compare import to_markdown

SVG = "{http://www.w3.org/2000/svg}"


def _rects(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [r for r in root.iter(f"{SVG}rect") if float(r.get("height")) > 12]  # bars, not legend swatches


def test_latency_bars_are_proportional_with_p90_ticks():
    svg = charts.latency_bars([("a · cpu", "cpu", 2.0, 3.0), ("b <&> · cuda", "cuda", 1.0, 1.5)], "lat")
    bars = _rects(svg)
    assert len(bars) == 2
    w0, w1 = (float(b.get("width")) for b in bars)
    assert abs(w0 / w1 - 2.0) < 0.01
    assert bars[0].get("fill") != bars[1].get("fill")  # colour per provider
    root = ET.fromstring(svg)
    ticks = [line for line in root.iter(f"{SVG}line") if line.get("stroke-width") == "2"]
    assert len(ticks) == 2 and float(ticks[0].get("x1")) > float(bars[0].get("x")) + w0
    assert "b &lt;&amp;&gt; · cuda" in svg


def test_line_chart_orders_points_and_scales_y():
    svg = charts.line_chart({"m · cpu": [(8, 400.0), (1, 100.0)], "m · cuda": [(1, 50.0), (8, 800.0)]},
                            "thr", "batch size", "samples / s")
    root = ET.fromstring(svg)
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == 2
    pts = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    assert pts[0][0] < pts[1][0] and pts[0][1] > pts[1][1]  # x ascending; larger y is higher up
    assert charts.nice_ticks(800.0)[-1] >= 800.0


def test_share_bars_fill_the_width_and_merge_small_parts():
    parts = {f"Op{i}": 1.0 / (i + 1) for i in range(12)}
    svg = charts.share_bars([("m · cpu", parts)], "ops", top_n=4)
    bars = _rects(svg)
    assert len(bars) == 5  # 4 largest + other
    assert abs(sum(float(b.get("width")) for b in bars) - (760 - float(bars[0].get("x")) - 16)) < 1.0
    assert ">other<" in svg


def test_render_compare_report_is_self_contained():
    run = {"model": "/x/m.onnx", "provider": "cpu", "providers_used": ["CPUExecutionProvider"], "threads": 1,
           "batch": 1, "p50_ms": 1.0, "p90_ms": 1.2, "p99_ms": 1.5, "throughput": 1000.0,
           "session_start_ms": 5.0, "peak_rss_delta_bytes": 2**20, "speedup": None, "fell_back": False}
    run8 = dict(run, batch=8, throughput=4000.0, speedup=1.3947, speedup_range=[1.3, 1.45])  # rounds' spread
    gpu = dict(run, provider="cuda", providers_used=["CPUExecutionProvider"], fell_back=True)
    report = {
        "kind": "edgeq.compare", "models": ["/x/m.onnx"], "providers": ["cpu", "cuda"],
        "reference": {"model": "/x/m.onnx", "provider": "cpu"}, "runs": [run, run8, gpu],
        "fidelity": [{"model": "/x/m.onnx", "provider": "cpu", "providers_used": ["CPUExecutionProvider"],
                      "outputs": {}},
                     {"model": "/x/m.onnx", "provider": "cuda", "providers_used": ["CPUExecutionProvider"],
                      "outputs": {"y": {"sqnr_db": float("inf"), "cosine": 1.0, "max_abs_error": 0.0}}}],
        "profiles": [{"model": "/x/m.onnx", "provider": "cpu", "kernel_ms": 0.9, "qdq_share": 0.0,
                      "nodes_by_provider": {"CPUExecutionProvider": 3},
                      "by_op_type": [{"op_type": "Conv", "share": 0.8}, {"op_type": "Relu", "share": 0.2}]}],
        "skipped": [{"provider": "trt", "reason": "not available <here>"}], "feeds": {"source": "random", "count": 4},
        "environment": {"onnxruntime": "1.x", "edgeq": "0.1.0"},
    }
    page = render_html(report, "Compare")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert not re.search(r"(src|href)=", page)  # nothing loaded from anywhere
    assert page.count("<svg") == 4  # 2 latency groups, throughput, op share
    assert "FELL BACK" in page and "not available &lt;here&gt;" in page
    assert "1.39x (1.30-1.45)" in page and "1.39x (1.30-1.45)" in to_markdown(report)
    assert "<td class=\"\">inf</td>" in page


def test_render_generic_report_tables():
    report = {"model": "m.onnx", "size_ratio": 3.9, "kept_float": [{"node": "n1", "reason": "a < b"}],
              "notes": ["x"], "fp16": {"nodes_fp16": 3}}
    page = render_html(report, "Quantize")
    assert "<h2>kept_float</h2>" in page and "a &lt; b" in page and "<h2>fp16</h2>" in page
    assert "3.9" in page


def test_generic_report_embeds_only_plain_svg_charts():
    good = charts.line_chart({"a": [(1, 1.0), (8, 4.0)]}, "ok chart", "batch", "y")
    bad = '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    handler = '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>'
    page = render_html({"charts": [good, bad, handler, "<b>x</b>"]}, "r")
    assert page.count("<svg") == 1 and "ok chart" in page and "alert" not in page


def test_frontier_chart_joins_each_models_best_trade_offs():
    from edgeq.report.frontier import frontier, frontier_chart

    points = [("int8", 3.3, 32.0), ("kmeans:4", 5.7, 13.1), ("uniform:4", 5.7, 10.8), ("kmeans:2", 8.4, 1.7),
              ("pot", 4.0, 9.0)]
    assert [p[0] for p in frontier(points)] == ["int8", "kmeans:4", "kmeans:2"]  # pot and uniform:4 are beaten
    svg = frontier_chart({"a <b>": points, "c": [("int8", 2.0, float("inf"))]}, "size", "x smaller", "SQNR dB",
                         target=30.0)
    root = ET.fromstring(svg)
    assert len(list(root.iter(f"{SVG}polyline"))) == 2 and len(list(root.iter(f"{SVG}circle"))) == 6
    line = next(root.iter(f"{SVG}polyline")).get("points").split()
    xs = [float(p.split(",")[0]) for p in line]
    assert len(line) == 3 and xs == sorted(xs)
    assert "a &lt;b&gt;" in svg and "capped 60" in svg  # escaped; "exact" drawn at the cap
