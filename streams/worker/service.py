"""The glue between Faust and the learner: one object per worker, fed in bulk by the consumer.

The consumer hands every fetched list of event records to :meth:`RecommenderService.offer`
(see :class:`streams.worker.app._Consumer`); :meth:`RecommenderService.run` takes whatever has
arrived (up to ``batch_max_events``) and handles it as one batch: decode and learn
(:class:`~streams.worker.learner.Learner`), dead letters out, the lists of every affected user
refreshed in Redis (retrying with backoff while Redis is down, never crashing). Batches
grow by themselves under load (more arrives while one is processed) and stay small, so
fresh, when traffic is light.

Every ``checkpoint_interval_s`` the state of the users changed since the last checkpoint is
written to the changelogs (a slice between two batches at a time, :mod:`streams.worker.checkpoint`);
only once that write is acknowledged are the events' offsets acknowledged to Faust for its
next commit. A crash therefore replays events whose state was not written, never the
other way round.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np
import orjson
import redis

from streams.events import kafka_partition
from streams.io.redis import RecsWriter
from streams.settings import Settings
from streams.state.store import StateStore
from streams.worker.checkpoint import CHECKPOINT_SLICE, Acker, Checkpointer
from streams.worker.intake import Intake
from streams.worker.item_log import ItemLog, ItemSync, MemoryItemLog
from streams.worker.learner import BatchOutcome, DeadLetter, Learner, MessageLike
from streams.worker.metrics import percentiles_ms

__all__ = ["RecommenderService", "Sender"]

logger = logging.getLogger(__name__)

_TRENDING_INTERVAL_S = 1.0

#: ``async send(records)``: (key, value, headers) records to one topic.
Sender = Callable[[Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]]], Awaitable[Any]]


class RecommenderService:
    """Processes batches and timer ticks for one worker."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        writer: RecsWriter,
        send_dead_letters: Sender,
        send_metrics: Sender,
        highwater: Callable[[Any], int | None] | None = None,
        ack: Acker | None = None,
        read_fences: Callable[[set[int]], Awaitable[dict[int, int]]] | None = None,
        item_log: ItemLog | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.learner = Learner(settings, store)
        #: The item side of the model, shared with the other workers through ``item_log`` (a private
        #: in-memory log if None: a worker alone, as in unit tests).
        self.items = ItemSync(settings, self.learner.exchange,
                              item_log if item_log is not None else MemoryItemLog(settings.item_partitions),
                              self.learner.health.cpu)
        self.owned: set[int] = set()  # events partitions assigned to this worker
        self.writer = writer
        self.send_dead_letters = send_dead_letters
        self.send_metrics = send_metrics
        self.highwater = highwater
        self.ack = ack
        self.read_fences = read_fences
        self._fences_ready = asyncio.Event()  # set once the fences of the assigned partitions are known
        self.worker_id = settings.effective_worker_id
        #: Checkpoints, and the fences they wrote: events partition -> last offset whose effects are durable.
        self.checkpointer = Checkpointer(settings, self.learner, store, self.emit, worker_id=self.worker_id, ack=ack)
        self.started_ms = _now_ms()
        self.ready_ms: int | None = None
        self.first_batch_ms: int | None = None  # when the first batch of events was taken (benchmarks)
        self.intake = Intake(max_events=2 * settings.batch_max_events)
        self.seconds_per_event = 50e-6  # measured: sizes batches to the budget (batch_events)
        self._offered_ms: float | None = None  # when the running batch's oldest records were offered
        self.pending_users: set[str] = set()
        self.pending_tags: set[str] = set()
        self.pending_ts: list[np.ndarray] = []
        self.positions: dict[Any, int] = {}  # topic-partition -> next offset to read
        self.redis_retry_at = 0.0
        self.redis_backoff_s = 0.0
        self.trending_written = -_TRENDING_INTERVAL_S  # the first refresh writes them
        self._popular_stale = False  # own events since the popular list was last written
        self.last_health_ms = self.started_ms
        self.last_health: dict[str, Any] | None = None  # the last health record emitted (read by /metrics)
        self._taken: list[tuple[Any, list[Any]]] = []  # taken from the intake, waiting for the batch lock
        self._closed = False  # shut down: the last checkpoint is written
        self._batch_lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()

    # --- intake ----------------------------------------------------------------------------
    async def offer(self, tp: Any, records: list[Any]) -> None:
        """The consumer's bulk handler: queue one partition's fetched records.

        Records at or below the partition's fence were applied before (by this worker
        before a crash, or by the partition's previous owner): they are acknowledged,
        not applied again (see :mod:`streams.worker.fences`).
        """
        await self._fences_ready.wait()
        fence = self.checkpointer.fences.get(tp.partition)
        if fence is not None and records[0].offset <= fence:
            fresh = [r for r in records if r.offset > fence]
            skipped = len(records) - len(fresh)
            self.learner.health.replayed_skipped += skipped
            if self.ack is not None:
                self.ack(tp, records[0].offset, records[skipped - 1].offset)
            records = fresh
        if records:
            await self.intake.put(tp, records)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        """Read the fences of newly assigned events partitions; until then :meth:`offer` waits
        (from start-up, and from every revocation on). The worker now owns those partitions'
        users, their items' snapshots and, with partition 0, the popular lists."""
        partitions = {tp.partition for tp in assigned}
        self.owned = partitions
        self.items.assigned(partitions)
        self._popular_stale = self.learner.exchange.collect_changed = self.writes_popular_lists
        fences = self.checkpointer.fences
        missing = {p for p in partitions if p not in fences}
        try:
            if missing and self.read_fences is not None:
                fences.update(await self.read_fences(missing))
        finally:
            self._fences_ready.set()

    @property
    def writes_popular_lists(self) -> bool:
        """One worker writes the popular and trending lists (they are the whole group's): partition 0's owner."""
        return 0 in self.owned

    async def run(self) -> None:
        """Restore the item model, then process what arrives, batch after batch, until cancelled."""
        settings = self.settings
        await self.items.start()
        while True:
            self._taken = await self.intake.take(self.batch_events(), settings.batch_within_s)
            if self.first_batch_ms is None:
                self.first_batch_ms = _now_ms()
            async with self._batch_lock:
                # A rebalance (or the shutdown) may have run while this waited for the lock:
                # what it took away is no longer in ``_taken``.
                chunks, self._taken = self._taken, []
                if chunks and not self._closed:
                    messages = [record for _, records in chunks for record in records]
                    self._offered_ms = self.intake.taken_offered_ms
                    self.learner.health.latency("queue", (time.time() * 1000.0 - self._offered_ms) / 1000.0)
                    await self._timed_handle(messages, [(tp, rs[0].offset, rs[-1].offset) for tp, rs in chunks])
                    self._offered_ms = None

    def batch_events(self) -> int:
        """How many events the next batch may take: the batch budget over the measured cost per event."""
        budget = self.settings.batch_budget_ms / 1000.0
        return max(1, min(self.settings.batch_max_events, int(budget / self.seconds_per_event)))

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """A rebalance takes ``revoked`` away: drop their queued records, make the rest durable,
        and forget those partitions' users (their next owner changes them; if they come back,
        they are read again from the changelog) and their lists still waiting for Redis."""
        self._fences_ready.clear()  # records offered from now on wait for the next assignment's fences
        async with self._batch_lock:
            dropped = self.intake.drop(revoked)
            kept = [chunk for chunk in self._taken if chunk[0] not in revoked]
            taken = sum(len(records) for tp, records in self._taken if tp in revoked)
            self._taken = kept
            if dropped or taken:
                logger.info("rebalance: ~%d queued events and %d taken messages of revoked partitions left to "
                            "their next owner", dropped, taken)
            await self.checkpoint()
            partitions = {tp.partition for tp in revoked if tp.topic == self.settings.events_topic}
            forgotten = self.learner.forget_partitions(partitions)
            n = self.settings.partitions
            self.pending_users = {u for u in self.pending_users if kafka_partition(u.encode(), n) not in partitions}
            self.owned -= partitions
            self.items.revoked(partitions)
            self.learner.exchange.collect_changed = self.writes_popular_lists
            for tp in revoked:
                self.positions.pop(tp, None)
                self.checkpointer.fences.pop(tp.partition, None)
            if forgotten:
                logger.info("rebalance: forgot %d users of partitions %s", forgotten, sorted(partitions))

    # --- batches -------------------------------------------------------------------------
    async def handle(self, messages: Sequence[MessageLike], ranges: Sequence[tuple[Any, int, int]] = ()) -> BatchOutcome:
        """Process one batch; never raises for bad input, never drops a message.

        ``ranges`` are the (topic-partition, first offset, last offset) the batch covers:
        acknowledged at the next checkpoint.
        """
        async with self._batch_lock:
            return await self._timed_handle(messages, ranges)

    async def _timed_handle(self, messages: Sequence[MessageLike], ranges: Sequence[tuple[Any, int, int]]) -> BatchOutcome:
        started, cpu_started = time.perf_counter(), time.thread_time()
        outcome = None
        try:
            outcome = await self._handle(messages, ranges)
            return outcome
        finally:
            self.learner.health.batch_done(len(messages), time.perf_counter() - started)
            # Sized by CPU time, not wall time: a worker sharing its core with others keeps batches as
            # large (as efficient) as one alone; smoothed: one slow batch does not halve the next.
            cpu = time.thread_time() - cpu_started
            events = 0 if outcome is None else len(outcome.events) + len(outcome.dead_letters) + outcome.duplicates
            if events:
                self.seconds_per_event += 0.2 * (cpu / events - self.seconds_per_event)

    async def _handle(self, messages: Sequence[MessageLike], ranges: Sequence[tuple[Any, int, int]]) -> BatchOutcome:
        started = time.perf_counter()
        try:
            outcome = self.learner.process(messages)
            health = self.learner.health
            health.latency("learn", time.perf_counter() - started)
            if self._offered_ms is not None and outcome.ts_ms is not None:  # event time to the worker's hands
                health.broker_ms.append(self._offered_ms - outcome.ts_ms)
        except Exception as exc:  # a bug of ours must not drop the batch: dead-letter it whole (nothing counted)
            logger.exception("batch of %d messages failed; dead-lettering it", len(messages))
            outcome = BatchOutcome(dead_letters=[DeadLetter(m, "internal_error", repr(exc)) for m in messages])
            for _ in messages:
                self.learner.health.dead_lettered("internal_error")
        if outcome.dead_letters:
            await self.send_dead_letters([(d.key, d.copy_value(), d.headers()) for d in outcome.dead_letters])
        for tp, _, last in ranges:
            self.positions[tp] = last + 1
        self.checkpointer.processed(ranges, outcome.dirty_users)
        if outcome.events:
            self.pending_users.update(outcome.dirty_users)
            if self.writes_popular_lists:
                self._popular_stale = True
                self.pending_tags.update(tag for event in outcome.events for tag in event.tags)
            assert outcome.ts_ms is not None  # set by learning, which every applied event went through
            self.pending_ts.append(outcome.ts_ms)
            await self.refresh()
        await self.items.publish()
        await self.checkpointer.step()
        await self.items.snapshot_step(CHECKPOINT_SLICE)
        return outcome

    async def checkpoint(self) -> None:
        """Checkpoint everything changed so far, now (shutdown, rebalance)."""
        await self.checkpointer.now()

    async def refresh(self) -> bool:
        """Write the lists of all pending users to Redis; False (and retry later) if Redis is down."""
        async with self._refresh_lock:
            # Popular and trending lists are the whole group's and change slowly: one worker rewrites them,
            # once a second, when its events or the other workers' changed some counts.
            exchange = self.learner.exchange
            trending_due = (
                self.writes_popular_lists
                and time.monotonic() - self.trending_written >= _TRENDING_INTERVAL_S
                and bool(self.pending_tags or self._popular_stale or exchange.changed)
            )
            if not self.pending_users and not trending_due:
                return True
            if time.monotonic() < self.redis_retry_at:
                return False
            users, stamps = self.pending_users, self.pending_ts
            tags = (self.pending_tags | exchange.take_changed_tags()) if trending_due else set()
            self.pending_users, self.pending_ts = set(), []
            if trending_due:
                self.pending_tags = set()
                self._popular_stale = False
            learner = self.learner
            started = time.perf_counter()
            known, items, scores = learner.recommendation_lists(sorted(users))
            ranked = time.perf_counter()
            try:
                await self.writer.write_lists(
                    known, items, scores,
                    popular=learner.popular() if trending_due else None,
                    model_version=learner.model_version,
                    updated_ms=_now_ms(),
                    popular_by_tag=learner.popular_by_tag(tags) if trending_due else None,
                )  # fmt: skip
            except (redis.RedisError, OSError) as exc:
                self.pending_users |= users  # written by a later refresh, with the factors of then
                self.pending_tags |= tags
                self._popular_stale |= trending_due
                self.pending_ts[:0] = stamps
                learner.health.redis_errors += 1
                self.redis_backoff_s = min(max(self.redis_backoff_s * 2, 0.1), 5.0)
                self.redis_retry_at = time.monotonic() + self.redis_backoff_s
                logger.warning("Redis write failed (%s); %d users pending, retry in %.1f s",
                               exc, len(self.pending_users), self.redis_backoff_s)
                return False
            written_ms = _now_ms()
            learner.lists_written(known, items, written_ms)
            learner.health.latency("topn", ranked - started)
            learner.health.latency("redis", time.perf_counter() - ranked)
            if trending_due:
                self.trending_written = time.monotonic()
            health = learner.health
            health.users_refreshed += len(known)
            health.freshness_samples.extend(written_ms - ts for ts in stamps)
            self.redis_backoff_s = 0.0
            return True

    # --- timer ---------------------------------------------------------------------------
    async def tick(self, recovered: bool = True) -> None:
        """Once a second: readiness, Redis retries, checkpoints (with the windows' counts), health, heartbeat.

        ``recovered``: the worker's tables are recovered from their changelogs (it reports
        ready only then, so that "ready" means "serving from its full state").
        """
        now = _now_ms()
        if self.ready_ms is None and recovered and self.items.ready.is_set():
            _settle_garbage_collector()
            if self.learner.health.gc not in gc.callbacks:
                gc.callbacks.append(self.learner.health.gc)
            self.ready_ms = now
            logger.info("streamrec worker %s ready in %.2f s", self.worker_id, (now - self.started_ms) / 1000)
        await self.refresh()
        await self.items.publish()
        if self.checkpointer.due:
            async with self._batch_lock:
                await self.checkpointer.step()
        async with self._batch_lock:
            await self.items.snapshot_step(CHECKPOINT_SLICE)
        if now - self.last_health_ms >= self.settings.metrics_window_s * 1000:
            await self.emit_health(now)
        try:
            await self.writer.heartbeat(self.worker_id, self.status(now))
        except (redis.RedisError, OSError):
            pass  # counted by refresh(); the heartbeat is best effort

    async def emit(self, records: Sequence[Mapping[str, Any]]) -> None:
        if records:
            dumps, worker_id = orjson.dumps, self.worker_id
            await self.send_metrics(
                [(f"{r['type']}:{r.get('id', worker_id)}".encode(), dumps(r), None) for r in records]
            )

    async def emit_health(self, now: int) -> None:
        learner = self.learner
        exchange = learner.exchange
        staleness = exchange.take_staleness()
        stale_p50, stale_p99 = percentiles_ms([np.asarray(staleness, np.float64)] if staleness else [])
        record = learner.health.record(
            now,
            late_events=learner.windows.late_events,
            consumer_lag=self.consumer_lag(),
            pending_users=len(self.pending_users),
            model_users=learner.model.n_users,
            model_items=learner.model.n_items,
            events_total=learner.events_total,
            item_staleness_p50_ms=stale_p50,
            item_staleness_p99_ms=stale_p99,
            item_staleness_max_ms=max(staleness) if staleness else None,
            item_updates_applied=len(staleness),
            item_records_sent_total=exchange.records_sent,
            item_bytes_sent_total=exchange.bytes_sent,
            item_rows_applied_total=exchange.rows_applied,
            item_bytes_applied_total=exchange.bytes_applied,
            items_quarantined=exchange.quarantined_items + exchange.corrupt_records,
            item_rows_unknown_total=exchange.unnumbered_changes,
            covisit_pairs_sent_total=exchange.pairs_sent,
            covisit_pairs_applied_total=exchange.pairs_applied,
            covisit_pairs_dropped_total=exchange.pairs_dropped,
            writes_popular_lists=self.writes_popular_lists,
            ready=self.ready_ms is not None,
        )
        self.last_health_ms = now
        self.last_health = record
        logger.info(
            "%s events (%s/s) in %s batches of %s messages (p50 %s ms, p99 %s ms); %s lists written, "
            "freshness p50 %s ms p99 %s ms; lag %s; %s dead-lettered",
            record["events_processed"], record["events_per_s"], record["batches"], record["batch_messages_mean"],
            record["batch_p50_ms"], record["batch_p99_ms"], record["users_refreshed"], record["freshness_p50_ms"],
            record["freshness_p99_ms"], record["consumer_lag"], record["events_dead_lettered"],
        )  # fmt: skip
        await self.emit([record])

    async def shutdown(self) -> None:
        """Last refresh, last checkpoint, a final health record; no batch is processed after them
        (what is still queued was never acknowledged: the partitions' next owner reads it)."""
        async with self._batch_lock:
            await self.refresh()
            await self.checkpoint()
            self._closed = True
            await self.items.stop()
        await self.emit_health(_now_ms())
        if self.learner.health.gc in gc.callbacks:
            gc.callbacks.remove(self.learner.health.gc)

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
            "first_batch_ms": self.first_batch_ms,
            "heartbeat_ms": now,
            "events_total": self.learner.events_total,
            "pending_users": len(self.pending_users),
            "partitions": sorted(self.owned),
            "model_items": self.learner.model.n_items,
        }


def _now_ms() -> int:
    return int(time.time() * 1000)


def _settle_garbage_collector() -> None:
    """Keep Python's cyclic GC from pausing the worker for 50-100 ms every few seconds.

    Its full collections scan every container object, and a worker holds hundreds of
    thousands of them (histories, tables, Faust's own); with the default thresholds
    they ran every few seconds and showed as freshness outliers. What exists at
    readiness (code, Faust's machinery, recovered tables) is frozen out of the scans,
    and young-generation collections run every 50,000 allocations instead of 700.
    Our state holds no reference cycles, so nothing collectable piles up.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
