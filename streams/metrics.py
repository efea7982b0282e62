"""Engagement aggregates per tumbling window of event time, and pipeline health.

Records are plain dicts, sent as JSON to ``<prefix>.metrics`` (schema in the README):

* ``type`` ``item`` / ``creator`` / ``tag``: views, likes, shares, unique users, like
  and share rates of one id in one window ``[window_start_ms, window_end_ms)`` of
  event time. A window is emitted once the wall clock passes its end plus a grace
  period. Events that arrive after their window was emitted are not dropped: they are
  emitted as a further record for the same window with ``revision`` 1, 2, ...
  (counts in revisions add up; ``unique_users`` is unique within one record).
* ``type`` ``health``: one per worker per window of wall-clock time (see
  :class:`HealthCounters`).

>>> from streams.events import Event
>>> windows = EngagementWindows(window_ms=10_000, grace_ms=0)
>>> windows.add([Event("e1", "u1", "i1", "view", 1_000, None, "c1", ("dance",)),
...              Event("e2", "u1", "i1", "like", 2_000, None, "c1", ("dance",))])
>>> [(r["type"], r["id"], r["views"], r["likes"], r["like_rate"]) for r in windows.close_due(now_ms=10_000)]
[('item', 'i1', 1, 1, 1.0), ('creator', 'c1', 1, 1, 1.0), ('tag', 'dance', 1, 1, 1.0)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from streams.events import Event

__all__ = ["EngagementWindows", "HealthCounters", "percentiles_ms"]

_KIND_COLUMN = {"view": 0, "like": 1, "share": 2}


@dataclass
class _Counter:
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    users: set[str] = field(default_factory=set)
    creator_id: str | None = None
    tags: tuple[str, ...] = ()


@dataclass
class _Window:
    start_ms: int
    revision: int
    items: dict[str, _Counter] = field(default_factory=dict)
    creators: dict[str, _Counter] = field(default_factory=dict)
    tags: dict[str, _Counter] = field(default_factory=dict)


class EngagementWindows:
    """Per-window counts of views, likes, shares and unique users per item, creator and tag."""

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError("window_ms must be > 0")
        self.window_ms = int(window_ms)
        self.grace_ms = int(grace_ms)
        self._open: dict[int, _Window] = {}
        self._revisions: dict[int, int] = {}  # window start -> records emitted so far
        self.late_events = 0

    def add(self, events: Iterable[Event]) -> None:
        """Count ``events`` into their windows."""
        for ev in events:
            start = ev.ts - ev.ts % self.window_ms
            window = self._open.get(start)
            if window is None:
                revision = self._revisions.get(start, 0)
                window = self._open[start] = _Window(start, revision)
            if window.revision:
                self.late_events += 1
            column = _KIND_COLUMN[ev.kind]
            item = window.items.get(ev.item_id)
            if item is None:
                item = window.items[ev.item_id] = _Counter(creator_id=ev.creator_id, tags=ev.tags)
            item.counts[column] += 1
            item.users.add(ev.user_id)
            if ev.creator_id is not None:
                creator = window.creators.get(ev.creator_id)
                if creator is None:
                    creator = window.creators[ev.creator_id] = _Counter()
                creator.counts[column] += 1
                creator.users.add(ev.user_id)
            for tag in ev.tags:
                counter = window.tags.get(tag)
                if counter is None:
                    counter = window.tags[tag] = _Counter()
                counter.counts[column] += 1
                counter.users.add(ev.user_id)

    def close_due(self, now_ms: int) -> list[dict[str, Any]]:
        """Records of every window whose end plus grace is at or before ``now_ms``."""
        due = [s for s in self._open if s + self.window_ms + self.grace_ms <= now_ms]
        return self._close(sorted(due))

    def close_all(self) -> list[dict[str, Any]]:
        """Records of every open window (at shutdown)."""
        return self._close(sorted(self._open))

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def _close(self, starts: Sequence[int]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for start in starts:
            window = self._open.pop(start)
            self._revisions[start] = window.revision + 1
            head = {"window_start_ms": start, "window_end_ms": start + self.window_ms, "revision": window.revision}
            for scope, table in (("item", window.items), ("creator", window.creators), ("tag", window.tags)):
                for key, counter in table.items():
                    record = {"type": scope, "id": key, **head, **_rates(counter)}
                    if scope == "item":
                        record["creator_id"] = counter.creator_id
                        record["tags"] = list(counter.tags)
                    records.append(record)
        # Remember revisions for a day of windows at most: bounded memory.
        if len(self._revisions) > 10_000:
            for start in sorted(self._revisions)[: len(self._revisions) - 10_000]:
                del self._revisions[start]
        return records


def _rates(counter: _Counter) -> dict[str, Any]:
    views, likes, shares = counter.counts
    return {
        "views": views,
        "likes": likes,
        "shares": shares,
        "unique_users": len(counter.users),
        "like_rate": likes / views if views else None,
        "share_rate": shares / views if views else None,
    }


def percentiles_ms(samples: Sequence[np.ndarray], qs: Sequence[float] = (50, 99)) -> list[float | None]:
    """Percentiles of concatenated latency samples, rounded to 0.1 ms (None without samples)."""
    if not samples:
        return [None for _ in qs]
    values = np.concatenate(samples)
    if values.size == 0:
        return [None for _ in qs]
    return [round(float(v), 1) for v in np.percentile(values, qs)]


@dataclass
class HealthCounters:
    """Pipeline health over one wall-clock window; :meth:`record` emits and resets it."""

    worker_id: str
    started_ms: int
    events_processed: int = 0
    events_dead_lettered: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    duplicates_skipped: int = 0
    users_refreshed: int = 0
    redis_errors: int = 0
    freshness_samples: list[np.ndarray] = field(default_factory=list)

    def dead_lettered(self, reason: str) -> None:
        self.events_dead_lettered += 1
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + 1

    def record(self, now_ms: int, **extra: Any) -> dict[str, Any]:
        p50, p99 = percentiles_ms(self.freshness_samples)
        elapsed_s = max((now_ms - self.started_ms) / 1000.0, 1e-3)
        record = {
            "type": "health",
            "worker_id": self.worker_id,
            "window_start_ms": self.started_ms,
            "window_end_ms": now_ms,
            "events_processed": self.events_processed,
            "events_dead_lettered": self.events_dead_lettered,
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "duplicates_skipped": self.duplicates_skipped,
            "events_per_s": round(self.events_processed / elapsed_s, 1),
            "users_refreshed": self.users_refreshed,
            "redis_errors": self.redis_errors,
            "freshness_p50_ms": p50,
            "freshness_p99_ms": p99,
            "freshness_samples": int(sum(s.size for s in self.freshness_samples)),
            **extra,
        }
        self.started_ms = now_ms
        self.events_processed = self.events_dead_lettered = self.duplicates_skipped = 0
        self.users_refreshed = self.redis_errors = 0
        self.dead_letter_reasons = {}
        self.freshness_samples = []
        return record
