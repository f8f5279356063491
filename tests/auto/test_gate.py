"""The final gate's choice of what to check after a miss."""

from __future__ import annotations

import types

from edgeq.auto.gate import _alternatives


def _config(name: str, sqnr: float, ms: float):
    score = types.SimpleNamespace(min_sqnr=sqnr)
    result = types.SimpleNamespace(model=None)
    return types.SimpleNamespace(name=name, score=score, latency_ms=ms, result=result, fp16=("x",), has_int8=lambda: False)


def test_after_a_miss_the_configurations_that_can_absorb_the_gap_come_first(monkeypatch):
    monkeypatch.setattr("edgeq.auto.latency.has_int8", lambda model: True)
    fast = _config("fast", 31.0, 5.0)  # failed at the gate
    close = _config("close", 31.2, 6.0)  # faster, but as little headroom as the one that failed
    safe = _config("safe", 33.5, 8.0)  # slower, more layers float: 33.5 - 2.0 >= 30.5
    safer = _config("safer", 35.0, 9.0)
    search = types.SimpleNamespace(fp32_ms=20.0, tried=[fast, close, safe, safer], meets=lambda c: c.score.min_sqnr >= 30.5)
    order = _alternatives(search, [fast], gap=2.0, target=30.5)
    assert [c.name for c in order] == ["safe", "safer", "close"]
    assert [c.name for c in _alternatives(search, [fast], gap=0.0, target=30.5)] == ["close", "safe", "safer"]
    slow = _config("slow", 40.0, 19.9)  # not 3% faster than fp32: never an alternative
    search.tried.append(slow)
    assert "slow" not in [c.name for c in _alternatives(search, [fast], gap=2.0, target=30.5)]
