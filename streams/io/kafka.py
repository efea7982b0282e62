"""Kafka connection options from settings: SASL/SSL for Faust and for plain aiokafka clients."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Iterable, Sequence

import faust

from streams.settings import Settings

__all__ = ["ssl_context", "faust_credentials", "aiokafka_options", "ensure_topics", "topic_partitions",
           "assign_all_partitions", "BatchSender", "Record", "METRICS_BATCH_BYTES",
           "ITEM_UPDATES_RETENTION_MS"]


#: A checkpoint's window records and its fence go out as one record batch of at most this many
#: bytes (the metrics topic is created to accept it).
METRICS_BATCH_BYTES = 16 * 1024 * 1024
#: How long the item-updates topic keeps the workers' item deltas (a restarting worker replays them
#: from the last item snapshot on, at most a few snapshot intervals back).
ITEM_UPDATES_RETENTION_MS = 24 * 3600 * 1000


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context when the protocol uses SSL, else None."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    return context


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """``broker_credentials`` for the Faust app (None for PLAINTEXT)."""
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka producer, consumer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    return options


async def ensure_topics(settings: Settings) -> list[str]:
    """Create streamrec's topics if missing (events, dead letters, metrics, item updates and item
    state); returns those created.

    The worker creates them too; producers call this so that events sent before the
    first worker starts land in a topic with the configured partition count.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    wanted = {
        settings.events_topic: settings.partitions,
        settings.dlq_topic: settings.partitions,
        settings.metrics_topic: 1,
        settings.item_updates_topic: settings.item_partitions,
        settings.item_state_topic: settings.item_partitions,
    }
    configs = {
        settings.metrics_topic: {"max.message.bytes": str(METRICS_BATCH_BYTES + 1_000_000)},
        # Replayed from the item snapshots' fences on; a day is far more than a snapshot interval.
        settings.item_updates_topic: {"retention.ms": str(ITEM_UPDATES_RETENTION_MS)},
        settings.item_state_topic: {"cleanup.policy": "compact"},
    }
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=n, replication_factor=settings.replication_factor,
                     topic_configs=configs.get(name, {}))
            for name, n in wanted.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created concurrently by a worker
        return [t.name for t in missing]
    finally:
        await admin.close()


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """Partition numbers of ``topic`` ([] if it does not exist), asked of the broker directly.

    A plain consumer's metadata cache only knows topics it subscribed to, so tools that
    ``assign`` partitions (the metrics tail, the tests) ask here first.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        for described in await admin.describe_topics([topic]):
            if described.get("topic") == topic and not described.get("error_code"):
                return sorted(p["partition"] for p in described.get("partitions", []))
        return []
    finally:
        await admin.close()


async def assign_all_partitions(consumer: Any, settings: Settings, topic: str, *, from_beginning: bool) -> list[Any]:
    """Assign every partition of ``topic`` to a started group-less consumer; [] if the topic is missing.

    For readers that must not join a consumer group (the metrics tail, the demo, benchmarks, tests).
    """
    from aiokafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
    if tps:
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
    return tps


#: One produced record: key, value, headers.
Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]


class BatchSender:
    """Sends many records to one topic-partition as a few Kafka record batches.

    ``AIOKafkaProducer.send`` costs several µs of Python per record; building the record
    batch directly (``create_batch`` / ``send_batch``) costs about one. The worker sends
    its checkpoints, metrics and dead letters this way. Records are acknowledged by all
    in-sync replicas (``acks="all"``); :meth:`send` returns the delivery futures.
    """

    def __init__(self, settings: Settings, *, max_batch_bytes: int = 900_000) -> None:
        # 900 kB: under the brokers' default 1 MiB message.max.bytes (the metrics topic allows more)
        self._options = dict(
            aiokafka_options(settings), acks="all", linger_ms=0, enable_idempotence=False,
            max_batch_size=max_batch_bytes, max_request_size=max_batch_bytes + 100_000,
            client_id=f"{settings.app_id}-batch-sender",
        )  # fmt: skip
        self._producer: Any = None
        self._start_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        """Connect (:meth:`send` does it on first use)."""
        from aiokafka import AIOKafkaProducer

        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._options)
                await producer.start()
                self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, topic: str, partition: int, records: Iterable[Record]) -> list[asyncio.Future[Any]]:
        """Queue ``records`` for ``topic``/``partition``; await the returned futures for delivery."""
        if self._producer is None:
            await self.start()
        producer = self._producer
        futures: list[asyncio.Future[Any]] = []
        batch = producer.create_batch()
        for key, value, headers in records:
            if batch.append(timestamp=None, key=key, value=value, headers=list(headers or ())) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(timestamp=None, key=key, value=value, headers=list(headers or ())) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit in a batch")
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures
