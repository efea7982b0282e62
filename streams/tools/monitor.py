"""``streamrec metrics``: tail the metrics topic as a live terminal table.

:class:`MetricsBoard` keeps the latest window of each record type and renders it with
rich; the demo reuses it.

>>> board = MetricsBoard()
>>> board.add({"type": "tag", "id": "dance", "window_start_ms": 0, "window_end_ms": 10, "revision": 0,
...            "views": 5, "likes": 2, "shares": 1, "unique_users": 3, "like_rate": 0.4, "share_rate": 0.2})
>>> board.top("tag", 1)[0]["views"]
5
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from streams.io.kafka import aiokafka_options, assign_all_partitions
from streams.settings import Settings

__all__ = ["MetricsBoard", "online_cells", "tail_metrics"]


class MetricsBoard:
    """The latest complete picture from the metrics stream."""

    def __init__(self) -> None:
        self.health: dict[str, dict[str, Any]] = {}
        self.totals: dict[str, float] = defaultdict(float)
        self._latest_window: dict[str, int] = {}
        self._windows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.records = 0

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        kind = record.get("type")
        if kind == "health":
            self.health[record["worker_id"]] = record
            self.totals["events_processed"] += record.get("events_processed", 0)
            self.totals["events_dead_lettered"] += record.get("events_dead_lettered", 0)
            return
        if kind not in ("item", "creator", "tag"):
            return
        start = record["window_start_ms"]
        if start > self._latest_window.get(kind, -1):
            self._latest_window[kind] = start
            self._windows[kind] = {}
        if start == self._latest_window[kind]:
            current = self._windows[kind].get(record["id"])
            if current is None:
                self._windows[kind][record["id"]] = dict(record)
            else:  # a later revision of the same window: counts add up
                for field in ("views", "likes", "shares", "unique_users"):
                    current[field] += record[field]

    def top(self, kind: str, n: int = 10, by: str = "views") -> list[dict[str, Any]]:
        return sorted(self._windows.get(kind, {}).values(), key=lambda r: (-r[by], r["id"]))[:n]

    def trending_by_tag(self, per_tag: int = 3, tags: int = 6) -> list[tuple[str, list[str]]]:
        """Top items of the latest window grouped by community tag."""
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in self._windows.get("item", {}).values():
            for tag in record.get("tags") or ():
                grouped[tag].append(record)
        ranked = sorted(grouped.items(), key=lambda kv: -sum(r["views"] for r in kv[1]))[:tags]
        return [(tag, [r["id"] for r in sorted(rs, key=lambda r: (-r["views"], r["id"]))[:per_tag]])
                for tag, rs in ranked]

    def renderable(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        health = Table(title="pipeline health (latest window per worker)", expand=True)
        for column in ("worker", "events/s", "processed", "dead-lettered", "lag", "fresh p50 ms", "fresh p99 ms",
                       "online hit@10", "hit@50", "list age p50 ms"):
            health.add_column(column, justify="right" if column != "worker" else "left")
        for worker, rec in sorted(self.health.items()):
            health.add_row(worker, f"{rec.get('events_per_s', 0):,.0f}", f"{rec.get('events_processed', 0):,}",
                           f"{rec.get('events_dead_lettered', 0):,}", _fmt(rec.get("consumer_lag")),
                           _fmt(rec.get("freshness_p50_ms")), _fmt(rec.get("freshness_p99_ms")),
                           *online_cells(rec))
        parts: list[Any] = [health]
        for kind in ("tag", "creator", "item"):
            rows = self.top(kind, 8)
            if not rows:
                continue
            table = Table(title=f"top {kind}s, window starting {_clock(rows[0]['window_start_ms'])}", expand=True)
            for column in (kind, "views", "likes", "shares", "users", "like rate", "share rate"):
                table.add_column(column, justify="left" if column == kind else "right")
            for r in rows:
                table.add_row(r["id"], str(r["views"]), str(r["likes"]), str(r["shares"]), str(r["unique_users"]),
                              _pct(r["like_rate"]), _pct(r["share_rate"]))
            parts.append(table)
        return Group(*parts)


def online_cells(record: dict[str, Any]) -> tuple[str, str, str]:
    """The online-quality cells of a health record: hit@10 and hit@50 (with the events checked), list age.

    >>> online_cells({"online_checked": 400, "online_hit_at_10": 0.1234, "online_hit_at_50": 0.3,
    ...               "online_list_age_ms_p50": 1520.0})
    ('12.3% of 400', '30.0%', '1,520.0')
    >>> online_cells({"online_checked": 0, "online_hit_at_10": None, "online_hit_at_50": None})
    ('-', '-', '-')
    """
    checked = record.get("online_checked") or 0
    hit_10 = _pct(record.get("online_hit_at_10"))
    return (f"{hit_10} of {checked:,}" if checked else "-", _pct(record.get("online_hit_at_50")),
            _fmt(record.get("online_list_age_ms_p50")))


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


async def tail_metrics(settings: Settings, *, as_json: bool = False, from_beginning: bool = False,
                       seconds: float | None = None) -> int:
    """Follow ``<prefix>.metrics`` (no consumer group: it never disturbs the workers)."""
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest")
    await consumer.start()
    try:
        if not await assign_all_partitions(consumer, settings, settings.metrics_topic, from_beginning=from_beginning):
            print(f"streamrec metrics: topic {settings.metrics_topic} does not exist yet (is a worker running?)",
                  file=sys.stderr)
            return 1
        board = MetricsBoard()
        deadline = None if seconds is None else time.monotonic() + seconds
        if as_json:
            while deadline is None or time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for m in messages:
                        sys.stdout.write(m.value.decode() + "\n")
                sys.stdout.flush()
            return 0
        from rich.live import Live

        with Live(board.renderable(), refresh_per_second=2) as live:
            while deadline is None or time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for m in messages:
                        board.add(orjson.loads(m.value))
                live.update(board.renderable())
        return 0
    except asyncio.CancelledError:
        return 0
    finally:
        await consumer.stop()
