"""``Search.build_each``: variants built here while the one before is scored on another thread.
The same configurations as ``Search.build`` one by one (scores and bytes), in order, and nothing
built once the time budget is spent."""

from __future__ import annotations

import types

import onnx_ir as ir

from edgeq.auto.calib import calibrate_once
from edgeq.auto.state import Search
from edgeq.auto.workbench import Workbench, prepare_float
from edgeq.config import QuantConfig

from .nets import outlier_feeds, outlier_net

BAR = types.SimpleNamespace(add_task=lambda *a, **k: 0, update=lambda *a, **k: None, advance=lambda *a, **k: None)


def _graph(data):
    return data if isinstance(data, bytes) else data.graph


def _search(budget=None):
    config = QuantConfig()
    feeds = outlier_feeds(12)
    model, _ = prepare_float(ir.from_proto(outlier_net()), config, feeds)
    cal = calibrate_once(model, feeds, config, progress=False)
    bench = Workbench.create(model, config, feeds)
    return Search(bench, feeds, 30.0, None, BAR, budget), model, cal


def test_the_same_configurations_as_one_build_after_another():
    search, model, cal = _search()
    units = [u.name for u in search.bench.units()]
    assert len(units) == 3
    trials = [(f"only {u}", tuple(n for n in units if n != u)) for u in units] + [("all", ())]
    one_by_one = [search.build(name, model, cal, {}, "minmax", exclude, record=False) for name, exclude in trials]
    overlapped = list(search.build_each(iter(trials), model, cal, {}, "minmax"))
    assert [c.name for c in overlapped] == [name for name, _ in trials]
    assert [c.exclude for c in overlapped] == [c.exclude for c in one_by_one]
    assert [c.score.sqnr for c in overlapped] == [c.score.sqnr for c in one_by_one]
    assert [_graph(c.data) for c in overlapped] == [_graph(c.data) for c in one_by_one]
    assert len({round(c.score.min_sqnr, 3) for c in overlapped}) == 4  # four different variants
    assert not search.tried  # record=False, as the ranking builds


def test_nothing_is_built_once_the_budget_is_spent():
    search, model, cal = _search(budget=0.0)
    trials = [("only conv", ()), ("other", ())]
    assert list(search.build_each(iter(trials), model, cal, {}, "minmax", step="ranking")) == []
    assert search.cut == ["ranking"]
