"""The gate's search again (auto/retarget.py), the fp32 profile that orders float layers back to
int8 (auto/unit_time.py), and that order (search._back_order)."""

from __future__ import annotations

import types

import numpy as np
import onnx_ir as ir
import pytest

from edgeq.auto.retarget import paying_prefixes, retarget
from edgeq.auto.search import PER_TOKEN, _back_order
from edgeq.auto.state import SQNR_MARGIN_DB, Config
from edgeq.auto.unit_time import _graph_node, unit_times

from .nets import outlier_feeds, outlier_net


class _Bar:
    def update(self, *args, **kwargs) -> None:
        pass


def _config(name: str, sqnr: float, exclude: tuple[str, ...] = ()) -> Config:
    return Config(name, exclude, types.SimpleNamespace(min_sqnr=sqnr), types.SimpleNamespace(model=name), None, {},
                  "minmax", data=name.encode())


def _search(tried: list) -> types.SimpleNamespace:
    search = types.SimpleNamespace(tried=tried, min_sqnr=30.5, timing=({"x": None}, "cpu", 1), prepared_ms=10.0,
                                   bar=_Bar(), task=0, over_budget=lambda step="": False)
    search.meets = lambda c: c.score.min_sqnr >= search.min_sqnr
    return search


def test_search_again_aims_above_the_gap_and_times_only_what_meets_it(monkeypatch):
    timed: list[dict] = []

    def measure_in_groups(models, feed, *, anchor, provider, threads):
        timed.append(dict(models))  # fp32 at 5 ms here: each configuration put on the first timing's scale
        return {name: (5.0 if name == "fp32" else 2.0 + int(name)) for name in models}

    monkeypatch.setattr("edgeq.auto.latency.measure_in_groups", measure_in_groups)
    monkeypatch.setattr("edgeq.auto.latency.has_int8", lambda model: model != "float")
    old = _config("old", 40.0)
    search = _search([old])
    aims = []

    def again() -> None:  # what the fallback would build, at the aim it is given
        aims.append(search.min_sqnr)
        search.tried += [_config("short", 33.0), _config("a", 34.0, ("n1",)), _config("float", 36.0),
                         _config("a again", 34.5, ("n1",)), _config("b", 35.0, ("n1", "n2"))]

    added = retarget(search, 3.0, 30.0, b"fp32", again)
    assert aims == [30.0 + 3.0 + SQNR_MARGIN_DB] and search.min_sqnr == 30.5  # aimed, then restored
    # below the aim, without int8, or the same configuration twice: not offered; the older ones untouched
    assert [c.name for c in added] == ["a", "b"]
    assert set(timed[0]) == {"fp32", "0", "1"} and timed[0]["fp32"] == b"fp32"
    assert [c.latency_ms for c in added] == [pytest.approx(4.0), pytest.approx(6.0)]  # (2 + i) / 5 * 10 ms
    assert old.latency_ms is None


def test_search_again_restores_the_aim_when_it_fails_and_skips_without_a_gap():
    search = _search([])

    def broken() -> None:
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError):
        retarget(search, 2.0, 30.0, b"", broken)
    assert search.min_sqnr == 30.5
    called = []
    assert retarget(search, 0.0, 30.0, b"", lambda: called.append(1)) == []  # nothing to aim above
    assert retarget(search, 2.0, None, b"", lambda: called.append(1)) == []  # no SQNR target (a metric's miss)
    search.timing = None
    assert retarget(search, 2.0, 30.0, b"", lambda: called.append(1)) == []  # nothing timed where auto times
    assert not called


def test_float_layers_go_back_most_time_saved_per_noise_first():
    ranked = ["heavy_noisy", "light_noisy", "heavy_quiet", "light_quiet", "free"]  # most sensitive first
    noise = {"heavy_noisy": 1e-3, "light_noisy": 1e-3, "heavy_quiet": 1e-4, "light_quiet": 1e-4, "free": 0.0}
    search = types.SimpleNamespace(unit_ms=dict)
    exclude = tuple(ranked)
    assert _back_order(search, ranked, noise, exclude) == list(reversed(ranked))  # no profile: least sensitive first
    ms = {"heavy_noisy": 10.0, "light_noisy": 0.1, "heavy_quiet": 10.0, "light_quiet": 0.1}
    search.unit_ms = lambda: ms
    # 'free' adds no measured noise; then 1e5, 1e4, 1e3, 1e2 ms per unit of noise
    assert _back_order(search, ranked, noise, exclude) == ["free", "heavy_quiet", "heavy_noisy", "light_quiet",
                                                           "light_noisy"]
    assert _back_order(search, ranked, noise, ("light_noisy", "heavy_noisy")) == ["heavy_noisy", "light_noisy"]


def test_renamed_nodes_map_back_to_the_graph():
    nodes = {"Conv_3": None, "Mul_29": None}
    producers = {"411": "Conv_3"}
    assert _graph_node("Conv_3", nodes, producers) == "Conv_3"
    assert _graph_node("411_nchwc", nodes, producers) == "Conv_3"  # NCHWc: named after the output value
    assert _graph_node("Mul_29/QuickGeluFusion/", nodes, producers) == "Mul_29"  # a fusion: its first node
    assert _graph_node("ReorderOutput", nodes, producers) is None


def test_the_fp32_profile_times_every_unit():
    """onnxruntime fuses each Conv with its Relu and may name the result after either: a unit's
    time is its node's and its folded Relu's."""
    from edgeq.auto.state import Search
    from edgeq.auto.workbench import Workbench
    from edgeq.config import QuantConfig

    model = ir.serde.deserialize_model(outlier_net())
    feed = outlier_feeds(1)[0]
    nodes = unit_times(model, feed, "cpu", 1)
    assert nodes and set(nodes) <= {n.name for n in model.graph}
    assert all(np.isfinite(v) and v >= 0 for v in nodes.values())
    bench = Workbench.create(model, QuantConfig(), [feed], None)
    search = Search(bench, None, 30.0, None, types.SimpleNamespace(add_task=lambda *a, **k: 0))
    search.timing = (feed, "cpu", 1)
    ms = search.unit_ms()
    convs = [n.name for n in model.graph if n.op_type == "Conv"]
    assert set(ms) == {u.name for u in bench.units()} >= set(convs)
    assert all(ms[name] > 0.0 for name in convs), ms


def test_searching_again_skips_the_prefixes_that_never_paid():
    def timed(ms, prefix=""):
        return types.SimpleNamespace(latency_ms=ms, prefix=prefix)

    search = types.SimpleNamespace(fp32_ms=50.0, tried=[timed(100.0, "int16"), timed(40.0, PER_TOKEN), timed(45.0),
                                                        timed(None, "int16"), timed(30.0)])
    assert paying_prefixes(search, (PER_TOKEN, "int16")) == (PER_TOKEN,)  # every int16 prefix slower than fp32
    search.tried.append(timed(49.0, "int16"))
    assert paying_prefixes(search, (PER_TOKEN, "int16")) == (PER_TOKEN, "int16")
    assert paying_prefixes(search, ("fp16", "int16")) == ("fp16", "int16")  # no fp16 prefix timed: kept
    del search.fp32_ms
    assert paying_prefixes(search, ("int16",)) == ("int16",)  # nothing timed yet


def test_the_report_says_the_search_ran_again():
    from edgeq.auto.render import _gate_line

    auto = {"gate": {"what": "calibration samples", "samples": 32, "min_sqnr_db": 33.3, "bound_db": 32.1,
                     "worst_sample_db": 29.2, "p5_sample_db": 30.9, "failed": [
                         {"configuration": "int8, 4 float", "samples": 32, "bound_db": 29.4, "worst_sample_db": 24.0}],
                     "searched_again": [{"aim_db": 32.7, "configurations": [{"configuration": "a"}, {"configuration": "b"}]},
                                        {"aim_db": 34.6, "configurations": []}]}}
    line = _gate_line(auto)
    assert "'int8, 4 float' missed the target on all 32 calibration samples (bound 29.40 dB" in line
    assert "The search ran again aiming at 32.70 dB: 2 configuration(s) met that aim." in line
    assert "aiming at 34.60 dB: 0 configuration(s)" in line
