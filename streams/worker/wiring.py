"""The worker's app: ``faust -A streams.worker.wiring worker``, or ``streamrec worker``.

The one module with module-level state. Importing it reads the settings from the environment,
builds the app (:func:`~streams.worker.app.create_app`) and wires the worker onto it
(:func:`wire`): the topics and tables are declared, the service is built around them, and the
agents, the processing task, the timer and the partition signals are registered.
"""

from __future__ import annotations

import os

# A worker process is one core's worth of work (run one per core): numpy's BLAS must not spread a
# matrix product over every core, where its spinning threads cost more CPU than they save. Set before
# anything below imports numpy.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import asyncio  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from streams.events import kafka_partition  # noqa: E402
from streams.io.kafka import METRICS_BATCH_BYTES, BatchSender, Record  # noqa: E402
from streams.io.redis import RecsWriter, async_redis  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.state.table_store import TableStateStore  # noqa: E402
from streams.worker.agents import register_agents  # noqa: E402
from streams.worker.app import StreamrecApp, create_app  # noqa: E402
from streams.worker.fences import read_fences  # noqa: E402
from streams.worker.item_log import KafkaItemLog  # noqa: E402
from streams.worker.prometheus import register_metrics_endpoint  # noqa: E402
from streams.worker.service import RecommenderService  # noqa: E402
from streams.worker.tables import Tables, declare_tables  # noqa: E402
from streams.worker.topics import Topics, declare_topics  # noqa: E402

__all__ = ["app", "settings", "worker", "wire", "Worker"]


@dataclass(frozen=True)
class Worker:
    """What :func:`wire` declared on an app and built for it."""

    topics: Topics
    tables: Tables
    service: RecommenderService
    sender: BatchSender
    metrics_sender: BatchSender


def wire(app: StreamrecApp, settings: Settings) -> Worker:
    """Declare the worker's topics, tables and agents on ``app`` and build its service.

    Nothing connects here: the senders, Redis and the item log connect when the worker starts.
    """
    topics = declare_topics(app, settings)
    tables = declare_tables(app, settings)
    sender = BatchSender(settings)
    # Window records and the fence of a checkpoint must land together: one batch (up to 16 MiB, which
    # the metrics topic is created to accept; uncompressed: gzip would cost the event loop ~50 ms a batch).
    metrics_sender = BatchSender(settings, max_batch_bytes=METRICS_BATCH_BYTES)
    dlq_name, metrics_name = topics.dlq.get_topic_name(), topics.metrics.get_topic_name()

    async def send_dead_letters(records: Sequence[Record]) -> None:
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            key = record[0]
            partition = kafka_partition(key, settings.partitions) if key else 0
            by_partition.setdefault(partition, []).append(record)
        futures = []
        for partition, group in by_partition.items():
            futures.extend(await sender.send(dlq_name, partition, group))
        await asyncio.gather(*futures)

    async def send_metrics(records: Sequence[Record]) -> None:
        await asyncio.gather(*await metrics_sender.send(metrics_name, 0, records))

    def highwater(tp: Any) -> int | None:
        try:
            return int(app.consumer.highwater(tp))
        except Exception:  # the consumer may not know it (yet): lag is then reported as unknown
            return None

    def ack(tp: Any, first: int, last: int) -> None:
        app.consumer.ack_offsets(tp, first, last)

    async def fences(partitions: set[int]) -> dict[int, int]:
        return await read_fences(settings, partitions)

    service = RecommenderService(
        settings,
        TableStateStore(tables.user_state, sender),
        RecsWriter(async_redis(settings), settings),
        send_dead_letters,
        send_metrics,
        highwater,
        ack,
        fences,
        KafkaItemLog(settings, sender),
    )
    register_agents(app, topics.events, service, closers=(sender.stop, metrics_sender.stop))
    register_metrics_endpoint(app, service, settings)
    return Worker(topics, tables, service, sender, metrics_sender)


settings = Settings.from_env()
app = create_app(settings)
worker = wire(app, settings)
