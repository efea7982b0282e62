"""EventProducer against a stand-in for aiokafka's producer: delivery errors surface, nothing buffered is lost;
SyncEventProducer works from a plain script (no event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError

from streams.client import EventProducer, SyncEventProducer
from streams.settings import Settings


class FakeKafkaProducer:
    """Records what was sent; ``slow`` makes ``send`` wait (as aiokafka's does while a batch drains)."""

    def __init__(self) -> None:
        self.fail = False
        self.slow: asyncio.Event | None = None
        self.sent: list[tuple[int | None, bytes]] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def flush(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None,
                   headers: Any = None) -> asyncio.Future[Any]:
        if self.slow is not None:
            await self.slow.wait()
        self.sent.append((partition, value))
        delivery = asyncio.get_running_loop().create_future()
        if self.fail:
            delivery.set_exception(KafkaTimeoutError())
        else:
            delivery.set_result(None)
        return delivery


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKafkaProducer:
    stand_in = FakeKafkaProducer()
    monkeypatch.setattr("streams.client.AIOKafkaProducer", lambda **options: stand_in)
    return stand_in


def producer(**kwargs: Any) -> EventProducer:
    return EventProducer(Settings(topic_prefix="t", partitions=4), create_topics=False, **kwargs)


def events(n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{k}", "user_id": f"u{k % 7}", "item_id": f"i{k % 5}", "kind": "view", "ts": 1_700_000_000_000}
            for k in range(n)]


def delivered_events(fake: FakeKafkaProducer) -> list[str]:
    ids = []
    for _, value in fake.sent:
        data = orjson.loads(value)
        ids.extend(e["event_id"] for e in (data if isinstance(data, list) else [data]))
    return sorted(ids)


@pytest.mark.parametrize("batch_events", [1, 200])
def test_a_failed_delivery_is_raised_not_swallowed(fake, batch_events):
    fake.fail = True

    async def scenario():
        p = producer(batch_events=batch_events)
        await p.start()
        with pytest.raises(KafkaTimeoutError):
            await p.send_many(events(10))
        await p.stop()  # the failures were reported by the flush: nothing left to raise

    asyncio.run(scenario())


def test_stop_waits_for_a_buffer_the_linger_task_is_sending(fake):
    """The linger task took a buffer and is inside ``send`` when the producer stops: the buffer
    must still go out (cancelling the task there would drop it)."""

    async def scenario():
        p = producer(batch_events=200, linger_ms=1)
        await p.start()
        fake.slow = asyncio.Event()
        for event in events(30):
            await p.send(event)
        buffered = len(p._buffers)
        await asyncio.sleep(0.02)  # the linger task took a buffer and waits inside send
        assert len(p._buffers) < buffered and not fake.sent
        stopping = asyncio.create_task(p.stop())
        await asyncio.sleep(0.02)
        fake.slow.set()  # the broker takes the batch now
        await asyncio.wait_for(stopping, 5)

    asyncio.run(scenario())
    assert delivered_events(fake) == sorted(e["event_id"] for e in events(30))


def test_sync_producer_is_constructed_outside_any_event_loop_without_connecting(monkeypatch):
    """aiokafka's producer needs a running loop: it is made in start(), never in __init__ (README's first example)."""
    created: list[dict[str, Any]] = []
    monkeypatch.setattr("streams.client.AIOKafkaProducer", lambda **options: created.append(options))
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # a plain script: no loop is running here
    sync = SyncEventProducer(Settings(broker_url="kafka://127.0.0.1:1"))  # nothing listens on port 1
    assert created == []  # no Kafka client yet, so no connection
    sync.close()  # closing a producer that never started is a no-op
    assert created == []


def test_sync_producer_sends_from_a_plain_script(fake):
    """Enter, send, flush and exit from synchronous code, delivery checked as with the async producer."""
    with SyncEventProducer(Settings(topic_prefix="t", partitions=4), create_topics=False) as sync:
        for event in events(5):
            sync.send(event)
        sync.flush()
        assert delivered_events(fake) == sorted(e["event_id"] for e in events(5))
        assert sync.send_many(events(3)) == 3
    fake.fail = True
    with pytest.raises(KafkaTimeoutError):
        with SyncEventProducer(Settings(topic_prefix="t", partitions=4), create_topics=False) as sync:
            sync.send(events(1)[0])  # delivered (or not) when the block ends: the failure surfaces there


def test_a_producer_used_before_start_says_so():
    p = EventProducer(Settings(topic_prefix="t"), create_topics=False)

    async def scenario():
        with pytest.raises(RuntimeError, match="not started"):
            await p.send_raw(b"k", b"v")
        await p.stop()  # nothing to stop

    asyncio.run(scenario())
