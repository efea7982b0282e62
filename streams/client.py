"""Clients for the two sides of streamrec: producing events and reading recommendations.

Producing (events are validated before they are sent; an invalid one raises
:class:`~streams.events.InvalidEvent` and nothing is sent)::

    async with EventProducer(Settings.from_env()) as producer:
        await producer.send({"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "view", "ts": 1700000000000})

    with SyncEventProducer(Settings.from_env()) as producer:
        producer.send({...})

Reading (one Redis round trip; unknown users get the list trending in the communities
they chose, else the popular list; on a Redis Cluster, one MGET per node owning some of
the keys, sent in one pipeline)::

    reader = RecsReader(Settings.from_env())
    recs = reader.get("u1", n=10, tags=["dance"])
    recs.items, recs.source  # "personal", "popular_tag", "popular", "none" or "unavailable"
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import orjson
import redis
import redis.asyncio.cluster
import redis.cluster
from aiokafka import AIOKafkaProducer

from streams.events import (
    BATCH_HEADER,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    Event,
    encode_event,
    join_batch,
    kafka_partition,
)
from streams.io.kafka import aiokafka_options, ensure_topics
from streams.io.redis import REDIS_ERRORS, async_redis, sync_redis
from streams.settings import Settings

__all__ = ["EventProducer", "SyncEventProducer", "RecsReader", "AsyncRecsReader", "Recommendations", "RecSource"]

logger = logging.getLogger(__name__)

EventLike = Event | Mapping[str, Any]
RecSource = Literal["personal", "popular_tag", "popular", "none", "unavailable"]


class EventProducer:
    """Async producer of validated events to ``<prefix>.events``.

    Events of the same partition (Kafka's default partitioner on ``user_id``) are packed
    into batch messages of up to ``batch_events`` events (see the event contract in
    :mod:`streams.events`), sent when full or ``linger_ms`` after their first event:
    the worker's cost is mostly per message, so this multiplies its throughput.
    ``batch_events=1`` sends one event per message, key = ``user_id``.

    Delivery is checked: :meth:`flush` (and so :meth:`send_many` and :meth:`stop`) raises
    the broker's error if any message sent since the last flush was not delivered.
    """

    def __init__(
        self, settings: Settings, *, linger_ms: int = 5, batch_events: int = 200, create_topics: bool = True
    ) -> None:
        if not 1 <= batch_events <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_events must be in 1..{MAX_BATCH_EVENTS}, got {batch_events}")
        self.settings = settings
        self.topic = settings.events_topic
        self.batch_events = batch_events
        self.linger_s = linger_ms / 1000.0
        self._create_topics = create_topics
        self._linger_ms = linger_ms
        # aiokafka's producer must be created inside a running event loop: start() makes it,
        # so that constructing this object (or a SyncEventProducer) needs no loop and no broker.
        self._kafka: AIOKafkaProducer | None = None
        self._partitions = settings.partitions
        self._buffers: dict[int, list[bytes]] = {}
        self._buffered_bytes: dict[int, int] = {}
        self._lingerer: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()  # a buffer taken for sending is sent before a flush or stop goes on
        self._deliveries: list[asyncio.Future[Any]] = []  # of the messages sent since the last flush
        self.sent = 0

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._kafka is None:
            raise RuntimeError("EventProducer not started: use `async with EventProducer(...)` or await start()")
        return self._kafka

    async def start(self) -> None:
        if self._kafka is not None:
            raise RuntimeError("EventProducer already started")
        kafka = AIOKafkaProducer(
            **aiokafka_options(self.settings), acks="all", linger_ms=self._linger_ms, enable_idempotence=False,
            max_request_size=2 * MAX_BATCH_BYTES,
        )  # fmt: skip
        try:
            if self._create_topics:
                await ensure_topics(self.settings)
            await kafka.start()
        except BaseException:
            await kafka.stop()  # release its connections: a broker may just be away
            raise
        self._kafka = kafka
        partitions = await self._producer.partitions_for(self.topic)
        if partitions:
            self._partitions = len(partitions)
        if self.batch_events > 1:
            self._lingerer = asyncio.create_task(self._linger())

    async def stop(self) -> None:
        """Send what is buffered, wait for delivery (raising if some failed), disconnect."""
        if self._kafka is None:
            return  # never started: nothing buffered, nothing to disconnect
        if self._lingerer is not None:
            async with self._send_lock:  # not in the middle of sending a buffer it took
                self._lingerer.cancel()
            await asyncio.gather(self._lingerer, return_exceptions=True)
            self._lingerer = None
        try:
            await self.flush()
        finally:
            kafka, self._kafka = self._kafka, None
            await kafka.stop()

    async def __aenter__(self) -> "EventProducer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, event: EventLike) -> None:
        """Validate and enqueue one event (delivered by the next flush or linger)."""
        key, value = encode_event(event)
        await self._enqueue(key, value)
        self.sent += 1

    async def send_encoded(self, key: bytes, value: bytes) -> None:
        """Enqueue an event already validated and encoded by :func:`~streams.events.encode_event` (not checked
        again: for producers that encode ahead of time)."""
        await self._enqueue(key, value)
        self.sent += 1

    async def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Send bytes as they are, unvalidated, as a message of their own (for tests and tools)."""
        self._track(await self._producer.send(self.topic, value=value, key=key))

    async def send_many(self, events: Iterable[EventLike]) -> int:
        """Validate every event first, then send them all and wait until the broker has them."""
        encoded = [encode_event(e) for e in events]
        for key, value in encoded:
            await self._enqueue(key, value)
        await self.flush()
        self.sent += len(encoded)
        return len(encoded)

    async def flush(self) -> None:
        """Send what is buffered and wait until the broker has everything sent so far.

        Raises the first delivery error (a :class:`aiokafka.errors.KafkaError`) if a message
        sent since the last flush was not delivered.
        """
        await self._send_buffers()
        await self._producer.flush()
        deliveries, self._deliveries = self._deliveries, []
        for outcome in await asyncio.gather(*deliveries, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    def _track(self, delivery: asyncio.Future[Any]) -> None:
        self._deliveries.append(delivery)
        if len(self._deliveries) >= 10_000:  # keep the failed and the pending ones only
            self._deliveries = [d for d in self._deliveries if not d.done() or d.cancelled() or d.exception()]

    async def _enqueue(self, key: bytes, value: bytes) -> None:
        if self.batch_events == 1:
            self._track(await self._producer.send(self.topic, value=value, key=key))
            return
        partition = kafka_partition(key, self._partitions)
        buffer = self._buffers.setdefault(partition, [])
        size = self._buffered_bytes.get(partition, 1) + len(value) + 1
        if buffer and size > MAX_BATCH_BYTES:
            await self._send_buffer(partition)
            buffer, size = self._buffers.setdefault(partition, []), len(value) + 2
        buffer.append(value)
        self._buffered_bytes[partition] = size
        if len(buffer) >= self.batch_events:
            await self._send_buffer(partition)

    async def _send_buffer(self, partition: int) -> None:
        async with self._send_lock:
            values = self._buffers.pop(partition, None)
            self._buffered_bytes.pop(partition, None)
            if values:
                self._track(await self._producer.send(
                    self.topic, value=join_batch(values), partition=partition, headers=[BATCH_HEADER]
                ))  # fmt: skip

    async def _send_buffers(self) -> None:
        for partition in list(self._buffers):
            await self._send_buffer(partition)

    async def _linger(self) -> None:
        while True:
            await asyncio.sleep(self.linger_s)
            await self._send_buffers()


class SyncEventProducer:
    """Blocking wrapper of :class:`EventProducer` for scripts and non-async back ends."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._producer = EventProducer(settings, **kwargs)

    def __enter__(self) -> "SyncEventProducer":
        self._runner.run(self._producer.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, event: EventLike) -> None:
        self._runner.run(self._producer.send(event))

    def send_many(self, events: Iterable[EventLike]) -> int:
        return self._runner.run(self._producer.send_many(events))

    def flush(self) -> None:
        self._runner.run(self._producer.flush())

    def close(self) -> None:
        try:
            self._runner.run(self._producer.stop())
        finally:
            self._runner.close()


@dataclass(frozen=True)
class Recommendations:
    """A user's cached list as read from Redis."""

    user_id: str
    items: list[str]
    scores: list[float]
    source: RecSource
    updated_ms: int | None = None
    model_version: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def age_ms(self) -> int | None:
        return None if self.updated_ms is None else int(time.time() * 1000) - self.updated_ms


class _ReaderBase:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._last_popular: Recommendations | None = None

    def _keys(self, user_id: str, tags: Sequence[str]) -> list[str]:
        s = self.settings
        return [s.rec_key(user_id), *(s.tag_popular_key(t) for t in tags), s.popular_key]

    def _parse(self, user_id: str, values: Sequence[bytes | str | None], n: int | None) -> Recommendations:
        personal, *by_tag, popular = values
        candidates: list[tuple[bytes | str | None, RecSource]] = [
            (personal, "personal"), *((raw, "popular_tag") for raw in by_tag), (popular, "popular")]
        for raw, source in candidates:
            if raw is not None:
                data = orjson.loads(raw)
                recs = Recommendations(
                    user_id=user_id,
                    items=data["items"][:n],
                    scores=data["scores"][:n],
                    source=source,
                    updated_ms=data.get("updated_ms"),
                    model_version=data.get("model_version"),
                )
                if source == "popular":
                    self._last_popular = recs
                return recs
        return Recommendations(user_id, [], [], "none")

    def _unavailable(self, user_id: str, exc: Exception, n: int | None) -> Recommendations:
        """Redis is down: answer with the last popular list this reader saw, flagged, not an exception."""
        logger.warning("Redis unavailable while reading recommendations: %s", exc)
        last = self._last_popular
        items = last.items[:n] if last else []
        scores = last.scores[:n] if last else []
        return Recommendations(user_id, items, scores, "unavailable", last.updated_ms if last else None,
                               last.model_version if last else None, error=str(exc))


class RecsReader(_ReaderBase):
    """Reads cached lists in one round trip (MGET of the user's key and the popular key).

    With ``redis_cluster`` the keys hash to different slots, so it uses the cluster client's
    ``mget_nonatomic`` (one MGET per slot, pipelined per node); the cluster client is built on the
    first read (building it reads the slot map, so a cluster that is down gives "unavailable", too).

    >>> reader = RecsReader(Settings(redis_url="redis://127.0.0.1:1/0"))  # nothing listens on port 1
    >>> recs = reader.get("u1")
    >>> recs.source, recs.items
    ('unavailable', [])
    """

    def __init__(self, settings: Settings, client: redis.Redis | redis.cluster.RedisCluster | None = None) -> None:
        super().__init__(settings)
        self.cluster = settings.redis_cluster
        self.client = client if client is not None or self.cluster else sync_redis(settings)

    def get(self, user_id: str, n: int | None = None, tags: Sequence[str] = ()) -> Recommendations:
        """The user's list; else (unknown user) trending in the first of ``tags`` that has one; else popular."""
        try:
            if self.client is None:  # a cluster client, built on the first read
                self.client = sync_redis(self.settings)
            if isinstance(self.client, redis.cluster.RedisCluster):
                values = self.client.mget_nonatomic(self._keys(user_id, tags))
            else:
                values = self.client.mget(self._keys(user_id, tags))
        except REDIS_ERRORS as exc:
            return self._unavailable(user_id, exc, n)
        return self._parse(user_id, values, n)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class AsyncRecsReader(_ReaderBase):
    """The asyncio twin of :class:`RecsReader`."""

    def __init__(
        self, settings: Settings, client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None = None
    ) -> None:
        super().__init__(settings)
        self.cluster = settings.redis_cluster
        self.client = client if client is not None else async_redis(settings)

    async def get(self, user_id: str, n: int | None = None, tags: Sequence[str] = ()) -> Recommendations:
        """The user's list; else (unknown user) trending in the first of ``tags`` that has one; else popular."""
        try:
            if isinstance(self.client, redis.asyncio.cluster.RedisCluster):
                values = await self.client.mget_nonatomic(self._keys(user_id, tags))
            else:
                values = await self.client.mget(self._keys(user_id, tags))
        except REDIS_ERRORS as exc:
            return self._unavailable(user_id, exc, n)
        return self._parse(user_id, values, n)

    async def close(self) -> None:
        await self.client.aclose()
