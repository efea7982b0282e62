from __future__ import annotations

import numpy as np

from streams.events import Event
from streams.metrics import EngagementWindows, HealthCounters, percentiles_ms


def ev(n: int, user: str, item: str, kind: str, ts: int, creator: str = "c1", tags=("a",)) -> Event:
    return Event(f"e{n}", user, item, kind, ts, None, creator, tuple(tags))


def test_windows_close_after_grace_and_count_exactly():
    w = EngagementWindows(window_ms=1000, grace_ms=500)
    w.add([ev(1, "u1", "i1", "view", 100), ev(2, "u2", "i1", "view", 200), ev(3, "u2", "i1", "like", 300),
           ev(4, "u3", "i2", "share", 1100, tags=("a", "b"))])
    assert w.close_due(1499) == []
    first = w.close_due(1500)
    item = next(r for r in first if r["type"] == "item")
    assert (item["id"], item["views"], item["likes"], item["unique_users"], item["like_rate"]) == ("i1", 2, 1, 2, 0.5)
    assert {r["type"] for r in first} == {"item", "creator", "tag"}
    second = w.close_due(2500)
    tags = {r["id"]: r["shares"] for r in second if r["type"] == "tag"}
    assert tags == {"a": 1, "b": 1}
    assert next(r for r in second if r["type"] == "item")["share_rate"] is None  # a share without a view


def test_late_events_become_revisions_not_drops():
    w = EngagementWindows(window_ms=1000, grace_ms=0)
    w.add([ev(1, "u1", "i1", "view", 100)])
    assert w.close_due(1000)[0]["revision"] == 0
    w.add([ev(2, "u2", "i1", "view", 200)])
    late = w.close_due(1001)
    assert late[0]["revision"] == 1 and late[0]["views"] == 1 and w.late_events == 1


def test_health_record_resets_and_reports_percentiles():
    h = HealthCounters("w1", started_ms=0)
    h.events_processed = 10
    h.dead_lettered("not_json")
    h.freshness_samples.append(np.arange(1, 101))
    rec = h.record(1000, consumer_lag=3)
    assert rec["events_per_s"] == 10.0 and rec["dead_letter_reasons"] == {"not_json": 1}
    assert rec["freshness_p50_ms"] == 50.5 and rec["consumer_lag"] == 3
    again = h.record(2000)
    assert again["events_processed"] == 0 and again["freshness_p50_ms"] is None
    assert percentiles_ms([]) == [None, None]
