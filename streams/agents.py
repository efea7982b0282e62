"""Thin Faust agents: take a batch of events, hand it to the service, let it route the results."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from streams.app import app, settings
from streams.cache import RecsWriter, async_redis
from streams.pipeline import RawMessage
from streams.service import RecommenderService
from streams.tables import TableStateStore
from streams.topics import dlq_topic, events_topic, metrics_topic

__all__ = ["learn", "tick", "service"]

logger = logging.getLogger(__name__)


async def _send_dead_letter(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> Any:
    return await dlq_topic.send(key=key, value=value, headers=list(headers or ()))


async def _send_metric(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> Any:
    return await metrics_topic.send(key=key, value=value)


def _highwater(tp: Any) -> int | None:
    try:
        return int(app.consumer.highwater(tp))
    except Exception:  # the consumer may not know it (yet): lag is then reported as unknown
        return None


service = RecommenderService(
    settings,
    TableStateStore(),
    RecsWriter(async_redis(settings), settings),
    _send_dead_letter,
    _send_metric,
    _highwater,
)


@app.agent(events_topic)
async def learn(stream: Any) -> None:
    """Every batch of events: validate, learn, checkpoint, refresh the users' lists."""
    # Table writes queue in Faust's producer buffer; a batch writes one entry per changed
    # user and item, so let the buffer hold a few batches before it throttles the stream.
    app.producer.buffer.max_messages = 4 * settings.batch_max_events
    async for batch in stream.take_events(settings.batch_max_events, within=settings.batch_within_s):
        messages = [
            RawMessage(e.message.key, e.message.value, e.message.topic, e.message.partition, e.message.offset)
            for e in batch
        ]
        await service.handle(messages, [e.message.tp for e in batch])


@app.timer(interval=1.0)
async def tick() -> None:
    await service.tick()


@app.on_before_shutdown.connect
async def _flush_on_shutdown(app: Any, **kwargs: Any) -> None:
    await service.shutdown()
