from __future__ import annotations

import numpy as np
import pytest

from streams.events import Event
from streams.worker.metrics import EngagementWindows, HealthCounters, percentiles_ms


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


class _Reference:
    """A per-event dict-and-set implementation of the windows: EngagementWindows must give the same records."""

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        self.window_ms, self.grace_ms = window_ms, grace_ms
        self.open: dict[int, tuple[int, dict, dict, dict]] = {}
        self.revisions: dict[int, int] = {}
        self.late_events = 0

    def add(self, events) -> None:
        for e in events:
            start = e.ts - e.ts % self.window_ms
            if start not in self.open:
                self.open[start] = (self.revisions.get(start, 0), {}, {}, {})
            revision, items, creators, tags = self.open[start]
            self.late_events += bool(revision)
            column = ("view", "like", "share").index(e.kind)
            counters = [items.setdefault(e.item_id, [[0, 0, 0], set(), e.creator_id, e.tags])]
            if e.creator_id is not None:
                counters.append(creators.setdefault(e.creator_id, [[0, 0, 0], set()]))
            counters += [tags.setdefault(t, [[0, 0, 0], set()]) for t in e.tags]
            for c in counters:
                c[0][column] += 1
                c[1].add(e.user_id)

    def close_due(self, now_ms: int) -> list[dict]:
        records = []
        for start in sorted(s for s in self.open if s + self.window_ms + self.grace_ms <= now_ms):
            revision, *tables = self.open.pop(start)
            self.revisions[start] = revision + 1
            for scope, table in zip(("item", "creator", "tag"), tables):
                for key, c in table.items():
                    (v, likes, s), users = c[0], c[1]
                    record = {"type": scope, "id": key, "window_start_ms": start, "window_end_ms": start + self.window_ms,
                              "revision": revision, "views": v, "likes": likes, "shares": s, "unique_users": len(users),
                              "like_rate": likes / v if v else None, "share_rate": s / v if v else None}
                    if scope == "item":
                        record.update(creator_id=c[2], tags=list(c[3]))
                    records.append(record)
        return records


def test_records_identical_to_the_per_event_reference_including_late_events_and_odd_metadata():
    rng = np.random.default_rng(7)
    ours, ref = EngagementWindows(window_ms=1000, grace_ms=200), _Reference(1000, 200)
    tag_pool = [(), ("a",), ("a", "b"), ("b", "a", "c"), ("c", "c")]  # order matters; a repeated tag counts twice
    n, now = 0, 0
    for batch in range(40):
        events = []
        for _ in range(int(rng.integers(0, 300))):
            n += 1
            item = int(rng.integers(30))
            # mostly one creator/tags per item; sometimes the same item arrives with other metadata
            odd = rng.random() < 0.05
            creator = None if item % 7 == 0 else f"c{(item + odd) % 5}"
            tags = tag_pool[(item + 2 * odd) % len(tag_pool)]
            ts = now + int(rng.integers(-2500, 600))  # some events belong to windows already emitted
            events.append(Event(f"e{n}", f"u{int(rng.integers(40))}", f"i{item}",
                                ("view", "like", "share")[int(rng.choice(3, p=[0.8, 0.15, 0.05]))], max(ts, 0),
                                None, creator, tags))
        ours.add(events)
        ref.add(events)
        now += 400
        got, want = ours.close_due(now), ref.close_due(now)
        assert [list(r) for r in got] == [list(r) for r in want]  # same fields in the same order
        assert got == want
    assert ours.close_all() == ref.close_due(10**12)
    assert ours.late_events == ref.late_events > 0


def test_add_columns_equals_add_and_splits_batches_across_windows():
    events = [ev(1, "u1", "i1", "view", 900), ev(2, "u2", "i1", "like", 1100, tags=["a", "b"]),
              ev(3, "u1", "i2", "share", 950, creator=None, tags=())]
    via_events = EngagementWindows(window_ms=1000, grace_ms=0)
    via_events.add(events)
    columns = EngagementWindows(window_ms=1000, grace_ms=0)
    columns.add_columns(np.array([900, 1100, 950]), np.array([0, 1, 2], dtype=np.int8), ["u1", "u2", "u1"],
                        ["i1", "i1", "i2"], ["c1", "c1", None], [("a",), ["a", "b"], ()])  # a list of tags is fine too
    assert columns.open_windows == 2
    assert columns.close_all() == via_events.close_all()
    empty = EngagementWindows(window_ms=1000, grace_ms=0)
    empty.add([])
    empty.add_columns(np.array([], np.int64), np.array([], np.int8), [], [], [], [])
    assert empty.open_windows == 0 and empty.close_all() == []


def test_add_columns_rejects_bad_kinds_and_ragged_columns():
    w = EngagementWindows(window_ms=1000, grace_ms=0)
    with pytest.raises(ValueError):
        w.add_columns(np.array([1]), np.array([3], dtype=np.int8), ["u"], ["i"], [None], [()])
    with pytest.raises(ValueError):
        w.add_columns(np.array([1, 2]), np.array([0, 0], dtype=np.int8), ["u"], ["i"], [None], [()])
    assert w.open_windows == 0
