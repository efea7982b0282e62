"""The Faust side of the worker: the event subscription, the processing task, the timer.

Records of the events topic reach :class:`~streams.worker.service.RecommenderService` in bulk
(``app.bulk_handlers``, see :class:`streams.worker.app._Consumer`), not through Faust's
per-message stream: the ``learn`` agent only declares the subscription, so that Faust's
group membership, partition assignment and table co-partitioning work as usual.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

from streams.events import kafka_partition
from streams.io.kafka import METRICS_BATCH_BYTES, BatchSender, Record
from streams.io.redis import RecsWriter, async_redis
from streams.worker.app import app, settings
from streams.worker.fences import read_fences
from streams.worker.item_log import KafkaItemLog
from streams.worker.service import RecommenderService
from streams.worker.tables import TableStateStore
from streams.worker.topics import dlq_topic, events_topic, metrics_topic

__all__ = ["learn", "process_events", "tick", "service", "sender"]

logger = logging.getLogger(__name__)

sender = BatchSender(settings)
# Window records and the fence of a checkpoint must land together: one batch (up to 16 MiB, which
# the metrics topic is created to accept; uncompressed: gzip would cost the event loop ~50 ms a batch).
metrics_sender = BatchSender(settings, max_batch_bytes=METRICS_BATCH_BYTES)


async def _send_dead_letters(records: Sequence[Record]) -> None:
    by_partition: dict[int, list[Record]] = {}
    for record in records:
        key = record[0]
        partition = kafka_partition(key, settings.partitions) if key else 0
        by_partition.setdefault(partition, []).append(record)
    futures = []
    for partition, group in by_partition.items():
        futures.extend(await sender.send(dlq_topic.get_topic_name(), partition, group))
    await asyncio.gather(*futures)


async def _send_metrics(records: Sequence[Record]) -> None:
    await asyncio.gather(*await metrics_sender.send(metrics_topic.get_topic_name(), 0, records))


def _highwater(tp: Any) -> int | None:
    try:
        return int(app.consumer.highwater(tp))
    except Exception:  # the consumer may not know it (yet): lag is then reported as unknown
        return None


def _ack(tp: Any, first: int, last: int) -> None:
    app.consumer.ack_offsets(tp, first, last)


async def _read_fences(partitions: set[int]) -> dict[int, int]:
    return await read_fences(settings, partitions)


service = RecommenderService(
    settings,
    TableStateStore(sender),
    RecsWriter(async_redis(settings), settings),
    _send_dead_letters,
    _send_metrics,
    _highwater,
    _ack,
    _read_fences,
    KafkaItemLog(settings, sender),
)
app.bulk_handlers[events_topic.get_topic_name()] = service.offer


@app.agent(events_topic)
async def learn(stream: Any) -> None:
    """Declares the subscription to the events topic; its records go to ``service.offer`` in bulk."""
    async for _event in stream:
        logger.error("an event reached the per-message path; the bulk handler is not registered")


@app.task
async def process_events() -> None:
    """Every batch of events: validate, learn, refresh the users' lists, checkpoint."""
    await service.run()


@app.timer(interval=1.0)
async def tick() -> None:
    recovery = app.tables.recovery
    await service.tick(recovered=recovery.completed.is_set() and not app.rebalancing and not recovery.in_recovery)


@app.on_partitions_assigned.connect
async def _on_assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
    await service.on_partitions_assigned({tp for tp in assigned if tp.topic == events_topic.get_topic_name()})


@app.on_partitions_revoked.connect
async def _on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
    await service.on_partitions_revoked(set(revoked))


@app.on_before_shutdown.connect
async def _flush_on_shutdown(app: Any, **kwargs: Any) -> None:
    await service.shutdown()
    await sender.stop()
    await metrics_sender.stop()
