"""Fences: how a worker knows, after a crash or a rebalance, which events it must not apply again.

Each checkpoint ends with one record batch on the metrics topic holding the window
counts gathered since the previous checkpoint and, last, a *fence* record::

    {"type": "fence", "worker_id": "w1", "topic": "streamrec.events",
     "offsets": {"0": 1041, "3": 977}, "ts_ms": 1700000000000}

meaning: every event of partition 0 up to offset 1041 (3: 977) is in the state
changelogs and in the metrics. The batch is written whole or not at all, so counts
and fence cannot disagree. A worker given a partition reads the latest fence of it
(:func:`read_fences`) and skips the events at or below it: those were counted, and
their state written, although Kafka may not have their offsets committed yet.
Events above it were never counted: they are applied normally. Nothing is lost or
counted twice, and the user and item state never runs behind the events it skips.
"""

from __future__ import annotations

import logging
from typing import Any, Collection

import orjson

from streams.io.kafka import METRICS_BATCH_BYTES, aiokafka_options
from streams.settings import Settings

__all__ = ["read_fences", "FENCE_SCAN_RECORDS"]

logger = logging.getLogger(__name__)

#: How far back in the metrics topic to look for fences. A partition with no fence in
#: that stretch had no checkpoint for a long while, so its committed offset (which never
#: passes a fence) already is its fence.
FENCE_SCAN_RECORDS = 500_000
_CHUNK = 20_000


async def read_fences(settings: Settings, partitions: Collection[int]) -> dict[int, int]:
    """The latest fence offset of each events partition in ``partitions`` that has one.

    Reads the metrics topic backwards in chunks until every partition is found or
    :data:`FENCE_SCAN_RECORDS` records were read.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    wanted = set(partitions)
    if not wanted:
        return {}
    tp = TopicPartition(settings.metrics_topic, 0)
    consumer = AIOKafkaConsumer(
        **aiokafka_options(settings), enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=METRICS_BATCH_BYTES + 1_000_000, fetch_max_bytes=METRICS_BATCH_BYTES + 1_000_000,
    )  # fmt: skip
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        found: dict[int, int] = {}
        top: int | None = None  # None: up to the end as of now (see _fences_between)
        bottom = end
        while wanted - found.keys() and bottom > 0 and end - bottom < FENCE_SCAN_RECORDS:
            bottom = max(0, bottom - _CHUNK)
            latest = await _fences_between(consumer, tp, bottom, top if top is not None else end, settings.events_topic,
                                           wanted)
            for partition, offset in latest.items():
                found.setdefault(partition, offset)  # a later chunk (read first) holds the later fence
            top = bottom
        if found:
            logger.info("fences for partitions %s: %s", sorted(wanted), found)
        return found
    finally:
        await consumer.stop()


async def _fences_between(consumer: Any, tp: Any, start: int, stop: int, topic: str, wanted: set[int]) -> dict[int, int]:
    """Latest fence per wanted partition among the records from ``start`` until the position passes ``stop``.

    Reading on past ``stop`` to the end of the record batch that holds it: some brokers report
    a partition's end as the base offset of its last batch + 1 (Tansu 0.6; RELIABILITY.md),
    and a fence ends its batch.
    """
    consumer.seek(tp, start)
    latest: dict[int, int] = {}
    while await consumer.position(tp) < stop:
        batch = (await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)).get(tp, [])
        if not batch:
            return latest
        for record in batch:
            if record.key is None or not record.key.startswith(b"fence:"):
                continue
            try:
                fence = orjson.loads(record.value)
                if fence.get("topic") != topic:
                    continue
                for partition, offset in fence["offsets"].items():
                    if int(partition) in wanted:
                        latest[int(partition)] = int(offset)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                logger.warning("ignoring a malformed fence record at offset %d", record.offset)
    return latest
