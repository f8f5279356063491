"""Per-layer quantization sensitivity: which layers break the output, and which ranges are outliers.

    report = sensitivity("model.onnx", calib, eval_data=feeds)
    report.layers[0]          # the most sensitive layer: SQNR with only it int8, with all but it
    report.write("sens.json") # + sens.md and sens.html (with an SVG chart)

Affordable by construction: ONE calibration pass (every activation histogrammed once, see
``calib``), then each variant is ``build_variant`` with ``exclude=`` and the reused ranges,
scored on a few evaluation feeds. For N quantizable nodes that is 2N + 1 quick builds.

* "only it": every other quantizable node is kept float (``exclude``). A light op (Add, Concat)
  alone has no int8 neighbours, so the selector keeps it float: its "only" figure is n/a.
* "all but it": it alone is kept float; the gain over all-int8 says what keeping it float buys.
* outliers: ``max|x| / p99.99(|x|)`` from the histogram; at or above ``outlier_ratio`` the range
  is outlier-dominated (minmax spends most int8 levels on a handful of values).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from edgeq.config import QuantConfig
from edgeq.graph import all_nodes

__all__ = ["sensitivity", "SensitivityReport", "OUTLIER_RATIO", "eval_feeds"]

OUTLIER_RATIO = 3.0


def _db(value: float) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, 3) if isinstance(value, float) else value


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    """JSON-ready findings; ``layers`` sorted most sensitive first."""

    model: str | None
    config: dict[str, Any]
    calibration: dict[str, Any]
    eval_samples: int
    all_int8: dict[str, Any]
    layers: list[dict[str, Any]]
    tensors: list[dict[str, Any]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"format": "edgeq-sensitivity-report", "version": 1, **dataclasses.asdict(self)}

    def layer(self, name: str) -> dict[str, Any]:
        return next(entry for entry in self.layers if entry["node"] == name)

    def to_markdown(self) -> str:
        from edgeq.auto.render import sensitivity_markdown

        return sensitivity_markdown(self.to_dict())

    def to_html(self) -> str:
        from edgeq.auto.render import sensitivity_html

        return sensitivity_html(self.to_dict())

    def write(self, path: str | os.PathLike, *, inputs: tuple[str, ...] = ()) -> list[str]:
        """``path`` (JSON) plus ``.md`` and ``.html`` beside it, each atomic, never over an input."""
        from edgeq.io import atomic_path
        from edgeq.report.quant_report import json_safe

        path = os.fspath(path)
        stem = path[:-5] if path.endswith(".json") else path
        written = []
        for target, text in ((path, json.dumps(json_safe(self.to_dict()), indent=1)),
                             (stem + ".md", self.to_markdown()), (stem + ".html", self.to_html())):
            with atomic_path(target, inputs) as tmp:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
            written.append(target)
        return written


def holdout(eval_data: Any, source: Any, model: Any, limit: int) -> tuple[Any, list[dict], str]:
    """(calibration source, scoring feeds, note), drawn as auto draws them (``samples.draw``):
    at most ``limit`` feeds spread over the evaluation data, or, without it, over the quarter of
    the calibration samples held out of range calibration (every fourth by input energy). A
    configuration scored on the very samples that set its ranges never clips there, and looks
    better than it will on new data (textdet with 12 images: 35 dB in-sample, 22 dB held out)."""
    from edgeq.auto.samples import draw

    drawn = draw(eval_data, source, model, limit)
    return drawn.calib, drawn.feeds[:limit], drawn.note


def eval_feeds(eval_data: Any, source: Any, model: Any, limit: int) -> tuple[list[dict], str]:
    """Up to ``limit`` evaluation feeds (from the calibration data when none are given)."""
    from edgeq.calibrate import load_data

    note = ""
    if eval_data is None:
        eval_source, note = source, "no eval data given: fidelity measured on calibration samples"
    else:
        eval_source = load_data(eval_data, model)
    feeds = []
    for _, feed in eval_source.items():
        if len(feeds) >= limit:
            break
        feeds.append(dict(feed))
    if not feeds:
        from edgeq.errors import DataError

        raise DataError("evaluation data yielded no feeds: give at least one sample")
    return feeds, note


def sensitivity(
    model: Any,
    data: Any,
    *,
    config: QuantConfig | None = None,
    eval_data: Any = None,
    progress: bool = True,
    max_eval: int = 16,
    outlier_ratio: float = OUTLIER_RATIO,
) -> SensitivityReport:
    """Measure every quantizable node's effect on the outputs (see the module docstring)."""
    from edgeq import cluster
    from edgeq.auto.calib import calibrate_once
    from edgeq.auto.remote import score_variant, shared_for
    from edgeq.auto.workbench import Workbench, prepare_float, reusable_source
    from edgeq.calibrate.collect import progress_bar
    from edgeq.io import as_model

    config = (config or QuantConfig()).replace(mode="static", min_sqnr=None)
    source_path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    from edgeq.modelinfo import refuse_quantized

    loaded, _ = as_model(model)
    refuse_quantized(loaded, source_path)
    source = reusable_source(data, loaded)
    float_model, _ = prepare_float(loaded, config, source)
    source, feeds, note = holdout(eval_data, source, float_model, max_eval)  # as auto scores
    cal = calibrate_once(float_model, source, config, progress=progress)
    table = cal.table(config.method)
    bench = Workbench.create(float_model, config, feeds)
    units = bench.units()
    names = [u.name for u in units]
    full = bench.score(bench.build(table).model)
    layers = []
    executor = cluster.current()
    nodes, alone, excludes = [], [], []  # per unit: its node, whether it can be int8 alone; variants in order
    for unit in units:
        only_plan, copy = bench.plan([n for n in names if n != unit.name])
        node = next(n for n in all_nodes(copy.graph) if n.name == unit.name)
        nodes.append(node)
        alone.append(only_plan.role(node) != "float")
        if alone[-1]:
            excludes.append(tuple(n for n in names if n != unit.name))
        excludes.append((unit.name,))
    with progress_bar(progress) as bar:
        task = bar.add_task("sensitivity" + (f" ({executor.width} workers)" if executor.distributed else ""),
                            total=len(excludes))
        scores = iter(executor.map(score_variant, excludes, shared=shared_for(executor, bench, float_model, table),
                                   label="sensitivity variant", on_result=lambda *_: bar.advance(task)))
        for unit, node, int8_alone in zip(units, nodes, alone):
            only = next(scores) if int8_alone else None
            all_but = next(scores)
            tensors = [v.name for v in [*node.inputs[:1], *node.outputs] if v is not None and v.name in cal]
            ratios = {t: round(cal.outlier_ratio(t), 3) for t in tensors}
            entry = {
                "node": unit.name, "op": unit.op, "group": unit.label, "folded": list(unit.folded),
                "only_int8_sqnr_db": None if only is None else _db(only.min_sqnr),
                "all_but_sqnr_db": _db(all_but.min_sqnr),
                "gain_if_float_db": _db(all_but.min_sqnr - full.min_sqnr) if math.isfinite(full.min_sqnr) else None,
                "only_int8_outputs": None if only is None else {k: _db(v) for k, v in only.sqnr.items()},
                "outlier_ratio": ratios,
                "outlier_dominated": sorted(t for t, r in ratios.items() if r >= outlier_ratio),
            }
            if only is None:
                entry["note"] = f"{unit.op} alone has no int8 neighbours: the selector keeps it float"
            layers.append(entry)
    layers.sort(key=_sensitivity_key)
    tensors = []
    for name in cal.observers:
        ratio = cal.outlier_ratio(name)
        obs = cal.observers[name]
        tensors.append({"tensor": name, "min": obs.min, "max": obs.max, "outlier_ratio": round(ratio, 3),
                        "outlier_dominated": ratio >= outlier_ratio})
    tensors.sort(key=lambda t: -t["outlier_ratio"])
    notes = [n for n in [note] if n]
    notes.append("precisions measured: int8 vs fp32 (the quantizer has no int16 activations or fp16 mode yet)")
    return SensitivityReport(
        model=source_path, config=config.to_dict(),
        calibration={"method": config.method, "num_samples": cal.num_samples, "tensors": len(cal.observers),
                     "passes": 1},
        eval_samples=len(feeds), all_int8=full.to_dict(), layers=layers, tensors=tensors, notes=notes,
    )


def _sensitivity_key(entry: dict[str, Any]) -> tuple[float, float]:
    def num(v: Any) -> float:
        if v is None:
            return math.inf
        if isinstance(v, str):
            return math.inf if v == "inf" else -math.inf
        return float(v)

    gain = entry["gain_if_float_db"]
    return (num(entry["only_int8_sqnr_db"]), -num(gain) if gain is not None else 0.0)
