"""The worker's side of the item exchange: publish deltas, follow the log, write snapshots.

:class:`ItemSync` drives an :class:`~streams.worker.exchange.ItemExchange` (the bookkeeping)
over an :class:`ItemLog`: :class:`KafkaItemLog` in the worker (the topics
``<app_id>-item-updates`` and ``<app_id>-item-state``), :class:`MemoryItemLog` in unit
tests, where several workers share one in-memory log.

At start a worker restores the item snapshots, reads the log from their fences to its
end, and only then reports ready; from then on it follows the log live. Every
``STREAMREC_ITEM_EXCHANGE_INTERVAL_S`` it publishes what it learned; every
``STREAMREC_ITEM_SNAPSHOT_INTERVAL_S`` it snapshots the changed items of the
partitions it owns (those of its events partitions), a slice between two batches at a
time, each partition's fence last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import nullcontext
from typing import Any, Awaitable, Callable, ContextManager, Protocol, Sequence

from streams.io.kafka import BatchSender, aiokafka_options, assign_all_partitions
from streams.settings import Settings
from streams.worker.exchange import Fence, ItemExchange, encode_fence, fence_key

__all__ = ["ItemLog", "KafkaItemLog", "MemoryItemLog", "ItemSync"]

logger = logging.getLogger(__name__)

#: ``on_records([(partition, offset, value), ...])``: records of the item-updates log, in log order.
OnRecords = Callable[[list[tuple[int, int, bytes]]], None]
_FETCH_BYTES = 32 * 1024 * 1024
#: How long a fetch of the item log waits for records at the broker. Records come every exchange
#: interval (0.25 s); polling faster only costs CPU (an idle worker's fetch loops are most of its load).
_FOLLOW_MAX_WAIT_MS = 100


class ItemLog(Protocol):
    """Where item deltas and item snapshots live."""

    async def read_state(self) -> dict[bytes, bytes]:
        """The latest value of every key of the item-state topic (snapshots and fences)."""
        ...

    async def write_state(self, partition: int, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Append snapshot records to ``partition`` of the item-state topic; returns once they are durable."""
        ...

    async def publish(self, partition: int, values: Sequence[bytes]) -> Awaitable[Any]:
        """Queue item-update records for ``partition``; the returned awaitable completes on delivery."""
        ...

    async def follow(self, start: dict[int, int], on_records: OnRecords, caught_up: asyncio.Event) -> None:
        """Read every partition from ``start`` on, for ever; set ``caught_up`` once at the end of the log."""
        ...


class KafkaItemLog:
    """:class:`ItemLog` on Kafka: plain aiokafka clients, no consumer group (every worker reads every partition)."""

    def __init__(self, settings: Settings, sender: BatchSender) -> None:
        self.settings = settings
        self.sender = sender

    def _consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            **aiokafka_options(self.settings), enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=_FETCH_BYTES, fetch_max_bytes=_FETCH_BYTES,
            fetch_max_wait_ms=_FOLLOW_MAX_WAIT_MS,
        )  # fmt: skip

    async def read_state(self) -> dict[bytes, bytes]:
        consumer = self._consumer()
        await consumer.start()
        try:
            tps = await assign_all_partitions(consumer, self.settings, self.settings.item_state_topic,
                                              from_beginning=True)
            if not tps:
                return {}
            ends = await consumer.end_offsets(tps)
            latest: dict[bytes, bytes] = {}
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000, max_records=50_000)).items():
                    for record in records:
                        if record.key is None:
                            continue
                        if record.value is None:
                            latest.pop(record.key, None)  # a tombstone
                        else:
                            latest[record.key] = record.value
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            return latest
        finally:
            await consumer.stop()

    async def write_state(self, partition: int, records: Sequence[tuple[bytes, bytes]]) -> None:
        topic = self.settings.item_state_topic
        futures = await self.sender.send(topic, partition, [(key, value, None) for key, value in records[:-1]])
        # The fence alone in the last record batch: brokers that report a partition's end as "base offset of
        # its last batch + 1" (Tansu 0.6) then report it right, and the restore reads every record.
        key, value = records[-1]
        futures += await self.sender.send(topic, partition, [(key, value, None)])
        await asyncio.gather(*futures)

    async def publish(self, partition: int, values: Sequence[bytes]) -> Awaitable[Any]:
        futures = await self.sender.send(self.settings.item_updates_topic, partition,
                                         [(None, value, None) for value in values])
        return asyncio.gather(*futures)

    async def follow(self, start: dict[int, int], on_records: OnRecords, caught_up: asyncio.Event) -> None:
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        consumer = self._consumer()
        await consumer.start()
        try:
            topic = self.settings.item_updates_topic
            tps = [TopicPartition(topic, p) for p in sorted(start)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start[tp.partition])
            ends = await consumer.end_offsets(tps)
            behind = {tp for tp in tps if start[tp.partition] < ends[tp]}
            if not behind:
                caught_up.set()
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
                except KafkaError as exc:  # a broker restart: aiokafka reconnects; keep following
                    logger.warning("reading %s failed (%r); retrying", topic, exc)
                    await asyncio.sleep(0.5)
                    continue
                if batches:
                    on_records([(tp.partition, r.offset, r.value) for tp, records in batches.items() for r in records])
                if behind:
                    behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
                    if not behind:
                        caught_up.set()
        finally:
            await consumer.stop()


class MemoryItemLog:
    """An in-memory :class:`ItemLog`; several workers of a unit test may share one."""

    def __init__(self, partitions: int) -> None:
        self.updates: list[list[bytes]] = [[] for _ in range(partitions)]
        self.state: dict[bytes, bytes] = {}
        self._appended = asyncio.Condition()

    async def read_state(self) -> dict[bytes, bytes]:
        return dict(self.state)

    async def write_state(self, partition: int, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.state.update(records)

    async def publish(self, partition: int, values: Sequence[bytes]) -> Awaitable[Any]:
        self.updates[partition].extend(values)
        async with self._appended:
            self._appended.notify_all()
        return asyncio.sleep(0)

    async def follow(self, start: dict[int, int], on_records: OnRecords, caught_up: asyncio.Event) -> None:
        positions = dict(start)
        while True:
            for partition, log in enumerate(self.updates):
                first = positions.get(partition, 0)
                if first < len(log):
                    on_records([(partition, offset, log[offset]) for offset in range(first, len(log))])
                    positions[partition] = len(log)
            caught_up.set()
            async with self._appended:
                await self._appended.wait()


class ItemSync:
    """Publishes, follows and snapshots the item side of one worker's model (see the module docstring)."""

    def __init__(self, settings: Settings, exchange: ItemExchange, log: ItemLog,
                 cpu: Callable[[str], ContextManager[None]] = lambda stage: nullcontext()) -> None:
        self.settings = settings
        self.exchange = exchange
        self.log = log
        self.cpu = cpu  # counts the CPU time of a stage (HealthCounters.cpu)
        self.owned: set[int] = set()  # item partitions whose snapshots this worker writes
        self.ready = asyncio.Event()  # restored and caught up with the log
        self._caught_up = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._unsent: list[tuple[int, bytes]] = []  # records whose delivery failed: sent again
        self._snapshot: dict[int, list[int]] | None = None  # partition -> numbers of the items still to write
        self._fences: dict[int, Fence] = {}
        self._written: dict[int, list[tuple[bytes, bytes]]] = {}
        self.last_publish = time.monotonic()
        self.last_snapshot = time.monotonic()
        self.restored_items = 0

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    # --- start and stop -----------------------------------------------------------------------
    async def start(self) -> None:
        """Restore the snapshots, read the log to its end (the worker is not ready before), then follow it."""
        records = await self.log.read_state()
        start = self.exchange.restore(records)
        self.restored_items = self.exchange.model.n_items
        exchange, now, cpu = self.exchange, self._now_ms, self.cpu

        def on_records(records: list[tuple[int, int, bytes]]) -> None:
            with cpu("item_apply"):
                exchange.apply_many(records, now())

        self._follower = asyncio.create_task(self._follow(start, on_records))
        caught_up = asyncio.create_task(self._caught_up.wait())
        await asyncio.wait({caught_up, self._follower}, return_when=asyncio.FIRST_COMPLETED)
        if self._follower.done():
            caught_up.cancel()
            self._follower.result()  # raises what stopped it
        exchange.restore_done()
        self.ready.set()
        logger.info("item model: %d items restored, log read to its end (%d records applied)",
                    self.restored_items, exchange.records_applied)

    async def _follow(self, start: dict[int, int], on_records: OnRecords) -> None:
        await self.log.follow(start, on_records, self._caught_up)

    async def stop(self) -> None:
        """Publish what is left and wait for its delivery; stop following."""
        await self.publish(force=True)
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)

    # --- publishing -----------------------------------------------------------------------------
    async def publish(self, force: bool = False) -> int:
        """Send what was learned since the last time, if the exchange interval has passed; returns records sent."""
        if not force and time.monotonic() - self.last_publish < self.settings.item_exchange_interval_s:
            return 0
        self.last_publish = time.monotonic()
        with self.cpu("item_take"):
            outgoing = [(p, value) for p, _, value in self.exchange.take_records(self._now_ms())]
        if self._unsent:
            outgoing, self._unsent = self._unsent + outgoing, []
        by_partition: dict[int, list[bytes]] = {}
        for partition, value in outgoing:
            by_partition.setdefault(partition, []).append(value)
        for partition, values in by_partition.items():
            delivered = await self.log.publish(partition, values)
            task = asyncio.create_task(self._delivered(delivered, partition, values))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return len(outgoing)

    async def _delivered(self, delivery: Awaitable[Any], partition: int, values: list[bytes]) -> None:
        try:
            await delivery
        except Exception as exc:  # the broker did not take them: they go out again with the next records
            logger.warning("item updates to partition %d not delivered (%r); sending them again", partition, exc)
            self._unsent.extend((partition, value) for value in values)

    # --- ownership and snapshots --------------------------------------------------------------
    def assigned(self, partitions: set[int]) -> None:
        """This worker now owns events ``partitions``, and the item partitions of the same numbers: their
        items are all snapshotted at the next snapshot."""
        fresh = {p for p in partitions if p < self.settings.item_partitions} - self.owned
        self.owned |= fresh
        marked = self.exchange.mark_dirty(fresh)
        if fresh:
            logger.info("item partitions %s: %d items to snapshot", sorted(fresh), marked)

    def revoked(self, partitions: set[int]) -> None:
        """``partitions`` moved to another worker: their snapshots are its to write."""
        self.owned -= partitions
        if self._snapshot is not None:
            for partition in partitions:
                self._snapshot.pop(partition, None)
                self._written.pop(partition, None)

    async def snapshot_step(self, budget: int | None) -> None:
        """Write up to ``budget`` items of the running snapshot (``None``: all); start one when it is due."""
        if self._snapshot is None:
            if not self.ready.is_set() or not self.owned:
                return
            if time.monotonic() - self.last_snapshot < self.settings.item_snapshot_interval_s and budget is not None:
                return
            self.last_snapshot = time.monotonic()
            self._snapshot, self._fences = self.exchange.start_snapshot(sorted(self.owned))
            self._written = {}
        left = budget
        for partition, items in list(self._snapshot.items()):
            take = items[:] if left is None else items[:left]
            del items[: len(take)]
            if take:
                with self.cpu("item_snapshot"):
                    self._written.setdefault(partition, []).extend(self.exchange.snapshot(partition, take))
            if left is not None:
                left -= len(take)
            if not items:
                records = self._written.pop(partition, [])
                fence = encode_fence(self._fences[partition])
                await self.log.write_state(partition, [*records, (fence_key(partition), fence)])
                del self._snapshot[partition]
            if left is not None and left <= 0:
                break
        if not self._snapshot:
            self._snapshot = None
