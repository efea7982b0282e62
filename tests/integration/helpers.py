"""Small synchronous helpers for integration tests: produce, consume a topic, wait for a condition."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable, Mapping, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from streams.client import EventProducer, Recommendations, RecsReader
from streams.io.kafka import aiokafka_options, assign_all_partitions
from streams.settings import Settings

T = TypeVar("T")


def produce(settings: Settings, events: Iterable[Mapping[str, Any]]) -> int:
    async def run() -> int:
        async with EventProducer(settings) as producer:
            return await producer.send_many(events)

    return asyncio.run(run())


def produce_raw(settings: Settings, pairs: Iterable[tuple[bytes | None, bytes]]) -> None:
    async def run() -> None:
        async with EventProducer(settings) as producer:
            for key, value in pairs:
                await producer.send_raw(key, value)
            await producer.flush()

    asyncio.run(run())


def consume(
    settings: Settings, topic: str, until: Callable[[list[ConsumerRecord]], bool], timeout: float = 60.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, read until ``until(records)`` or the timeout."""

    async def run() -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        records: list[ConsumerRecord] = []
        try:
            deadline = time.monotonic() + timeout
            while not await assign_all_partitions(consumer, settings, topic, from_beginning=True):
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} did not appear within {timeout:.0f} s")
                await asyncio.sleep(0.2)
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=300)
                for batch in batches.values():
                    records.extend(batch)
                if until(records):
                    break
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


def metric_records(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout:.0f} s (last value {value!r})")


def read_recs(settings: Settings, user_id: str, n: int | None = None) -> Recommendations:
    reader = RecsReader(settings)
    try:
        return reader.get(user_id, n)
    finally:
        reader.close()
