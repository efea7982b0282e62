"""The glue between Faust and the pipeline: one object per worker, called by the thin agents.

It turns Faust events into :class:`~streams.pipeline.RawMessage`, routes dead letters,
writes checkpoints, refreshes the cached lists of affected users in Redis (retrying
with backoff while Redis is down, never crashing), and emits the metrics records.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np
import orjson
import redis

from streams.cache import RecsWriter
from streams.pipeline import BatchOutcome, DeadLetter, Pipeline, RawMessage
from streams.settings import Settings
from streams.state import StateStore

__all__ = ["RecommenderService", "Sender"]

logger = logging.getLogger(__name__)

#: ``async send(key, value, headers)`` to a topic.
Sender = Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None], Awaitable[Any]]


class RecommenderService:
    """Processes batches and timer ticks for one worker."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        writer: RecsWriter,
        send_dead_letter: Sender,
        send_metric: Sender,
        highwater: Callable[[Any], int | None] | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = Pipeline(settings, store)
        self.writer = writer
        self.send_dead_letter = send_dead_letter
        self.send_metric = send_metric
        self.highwater = highwater
        self.worker_id = settings.effective_worker_id
        self.started_ms = _now_ms()
        self.ready_ms: int | None = None
        self.items_restored = False
        self.pending_users: set[str] = set()
        self.pending_tags: set[str] = set()
        self.pending_ts: list[np.ndarray] = []
        self.positions: dict[Any, int] = {}  # topic-partition -> next offset to read
        self.redis_retry_at = 0.0
        self.redis_backoff_s = 0.0
        self.last_health_ms = self.started_ms

    # --- batches -------------------------------------------------------------------------
    async def handle(self, messages: Sequence[RawMessage], partitions: Sequence[Any] = ()) -> BatchOutcome:
        """Process one batch; never raises for bad input, never drops a message."""
        if not self.items_restored:
            restored = self.pipeline.restore_all_items()
            self.items_restored = True
            if restored:
                logger.info("restored %d items from the item-state changelog", restored)
        try:
            outcome = self.pipeline.process(messages)
            self.pipeline.checkpoint(outcome)
        except Exception as exc:  # a bug of ours must not drop the batch: dead-letter it whole
            logger.exception("batch of %d messages failed; dead-lettering it", len(messages))
            outcome = BatchOutcome(dead_letters=[DeadLetter(m, "internal_error", repr(exc)) for m in messages])
            for _ in messages:
                self.pipeline.health.dead_lettered("internal_error")
        for dead in outcome.dead_letters:
            m = dead.message
            await self.send_dead_letter(m.key, m.value, dead.headers())
        for tp, message in zip(partitions, messages):
            self.positions[tp] = message.offset + 1
        if outcome.events:
            self.pending_users.update(outcome.dirty_users)
            self.pending_tags.update(tag for event in outcome.events for tag in event.tags)
            self.pending_ts.append(np.fromiter((e.ts for e in outcome.events), np.int64, len(outcome.events)))
            await self.refresh()
        return outcome

    async def refresh(self) -> bool:
        """Write the lists of all pending users to Redis; False (and retry later) if Redis is down."""
        if not self.pending_users:
            return True
        if time.monotonic() < self.redis_retry_at:
            return False
        users = sorted(self.pending_users)
        lists = self.pipeline.recommendations(users)
        try:
            await self.writer.write(
                lists,
                popular=self.pipeline.popular(),
                model_version=self.pipeline.model_version,
                updated_ms=_now_ms(),
                popular_by_tag=self.pipeline.popular_by_tag(self.pending_tags),
            )
        except (redis.RedisError, OSError) as exc:
            self.pipeline.health.redis_errors += 1
            self.redis_backoff_s = min(max(self.redis_backoff_s * 2, 0.1), 5.0)
            self.redis_retry_at = time.monotonic() + self.redis_backoff_s
            logger.warning("Redis write failed (%s); %d users pending, retry in %.1f s",
                           exc, len(self.pending_users), self.redis_backoff_s)
            return False
        written_ms = _now_ms()
        health = self.pipeline.health
        health.users_refreshed += len(lists)
        health.freshness_samples.extend(written_ms - ts for ts in self.pending_ts)
        self.pending_users.clear()
        self.pending_tags.clear()
        self.pending_ts.clear()
        self.redis_backoff_s = 0.0
        return True

    # --- timer ---------------------------------------------------------------------------
    async def tick(self) -> None:
        """Once a second: readiness, closed windows, health, heartbeat, Redis retries."""
        now = _now_ms()
        if self.ready_ms is None:
            self.ready_ms = now
            logger.info("streamrec worker %s ready in %.2f s", self.worker_id, (now - self.started_ms) / 1000)
        await self.refresh()
        await self.emit(self.pipeline.windows.close_due(now))
        if now - self.last_health_ms >= self.settings.metrics_window_s * 1000:
            await self.emit_health(now)
        try:
            await self.writer.heartbeat(self.worker_id, self.status(now))
        except (redis.RedisError, OSError):
            pass  # counted by refresh(); the heartbeat is best effort

    async def emit(self, records: Sequence[Mapping[str, Any]]) -> None:
        for record in records:
            key = f"{record['type']}:{record.get('id', self.worker_id)}".encode()
            await self.send_metric(key, orjson.dumps(record), None)

    async def emit_health(self, now: int) -> None:
        pipeline = self.pipeline
        record = pipeline.health.record(
            now,
            late_events=pipeline.windows.late_events,
            consumer_lag=self.consumer_lag(),
            pending_users=len(self.pending_users),
            model_users=pipeline.model.n_users,
            model_items=pipeline.model.n_items,
            events_total=pipeline.events_total,
            ready=self.ready_ms is not None,
        )
        self.last_health_ms = now
        await self.emit([record])

    async def shutdown(self) -> None:
        """Flush what is open: last refresh, every open window, a final health record."""
        await self.refresh()
        await self.emit(self.pipeline.windows.close_all())
        await self.emit_health(_now_ms())

    def consumer_lag(self) -> int | None:
        """Messages behind the partitions' high watermarks, if the consumer knows them."""
        if self.highwater is None or not self.positions:
            return None
        lag = 0
        for tp, position in self.positions.items():
            high = self.highwater(tp)
            if high is None:
                return None
            lag += max(high - position, 0)
        return lag

    def status(self, now: int) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "ready": self.ready_ms is not None,
            "started_ms": self.started_ms,
            "ready_ms": self.ready_ms,
            "heartbeat_ms": now,
            "events_total": self.pipeline.events_total,
            "pending_users": len(self.pending_users),
        }


def _now_ms() -> int:
    return int(time.time() * 1000)
