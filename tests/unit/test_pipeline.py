from __future__ import annotations

import asyncio

import pytest
import redis

from streams.events import encode_event
from streams.pipeline import Pipeline, RawMessage
from streams.service import RecommenderService
from streams.settings import Settings
from streams.state import MemoryStateStore
from streams.synthetic import SyntheticWorld, WorldConfig

SETTINGS = Settings(n_factors=8, top_n=10, worker_id="test")


def messages(events, first_offset=0):
    return [RawMessage(*encode_event(e), "t.events", 0, first_offset + n) for n, e in enumerate(events)]


def world_events(n=3000, seed=1):
    return list(SyntheticWorld(WorldConfig(users=60, items=80, seed=seed)).events(n, start_ms=1_700_000_000_000))


def test_duplicates_are_applied_once():
    pipe = Pipeline(SETTINGS, MemoryStateStore())
    batch = messages(world_events(50))
    assert len(pipe.process(batch).events) == 50
    again = pipe.process(batch)
    assert again.events == [] and again.duplicates == 50 and pipe.events_total == 50


def test_lists_exclude_history_and_fallback_is_popular():
    pipe = Pipeline(SETTINGS, MemoryStateStore())
    out = pipe.process(messages(world_events()))
    recs = pipe.recommendations(sorted(out.dirty_users))
    for user, items in recs.items():
        assert len(items) == 10
        assert not {i for i, _ in items} & set(pipe.history[user])
    popular = pipe.popular()
    assert len(popular) == 10 and [s for _, s in popular] == sorted((s for _, s in popular), reverse=True)


def test_checkpoint_restores_the_same_model_in_a_new_worker():
    store = MemoryStateStore()
    first = Pipeline(SETTINGS, store)
    out = first.process(messages(world_events()))
    first.checkpoint(out)
    users = sorted(out.dirty_users)[:5]
    expected = first.recommendations(users)

    second = Pipeline(SETTINGS, store)  # a restarted worker: nothing in memory, state in the store
    assert second.restore_all_items() == first.model.n_items
    second._hydrate(users, [])
    restored = second.recommendations(users)
    for user in users:  # same items; scores equal up to float32 summation order
        assert [i for i, _ in restored[user]] == [i for i, _ in expected[user]]
        assert [s for _, s in restored[user]] == pytest.approx([s for _, s in expected[user]], rel=1e-5)
    assert second.popular() == first.popular()


class FakeWriter:
    def __init__(self) -> None:
        self.down = False
        self.written: dict[str, list] = {}

    async def write(self, lists, *, popular, model_version, updated_ms, popular_by_tag=None):
        if self.down:
            raise redis.ConnectionError("redis is down")
        self.written.update(lists)
        self.tag_lists = dict(popular_by_tag or {})

    async def heartbeat(self, worker_id, status, ttl_s=30):
        if self.down:
            raise redis.ConnectionError("redis is down")


def make_service(writer):
    sent = {"dlq": [], "metrics": []}

    async def dlq(key, value, headers):
        sent["dlq"].append((key, value, dict(headers)))

    async def metric(key, value, headers):
        sent["metrics"].append(value)

    return RecommenderService(SETTINGS, MemoryStateStore(), writer, dlq, metric), sent


def test_service_keeps_learning_while_redis_is_down_and_catches_up():
    writer = FakeWriter()
    service, sent = make_service(writer)
    events = world_events(200)

    async def run():
        writer.down = True
        await service.handle(messages(events[:100]))
        assert service.pending_users and service.pipeline.events_total == 100
        service.redis_retry_at = 0  # skip the backoff wait
        writer.down = False
        await service.handle(messages(events[100:], 100))
        assert not service.pending_users
        assert set(writer.written) == {e["user_id"] for e in events}
        # trending per community for every tag seen while Redis was down, each list within its tag
        assert set(writer.tag_lists) == {t for e in events for t in e["tags"]}
        world = SyntheticWorld(WorldConfig(users=60, items=80, seed=1))
        for tag, recs in writer.tag_lists.items():
            assert recs and all(tag in world.item_tags(item) for item, _ in recs)

    asyncio.run(run())
    assert service.pipeline.health.redis_errors == 1


def test_service_dead_letters_bad_input_and_whole_batch_on_internal_error(monkeypatch):
    service, sent = make_service(FakeWriter())
    bad = RawMessage(b"u1", b"nope", "t.events", 2, 9)
    asyncio.run(service.handle([bad] + messages(world_events(5))))
    assert sent["dlq"][0][:2] == (b"u1", b"nope")
    assert sent["dlq"][0][2]["streamrec.reason"] == b"not_json"
    assert sent["dlq"][0][2]["streamrec.source.offset"] == b"9"

    def broken(_messages):
        raise RuntimeError("bug")

    monkeypatch.setattr(service.pipeline, "process", broken)
    batch = messages(world_events(3), 100)
    asyncio.run(service.handle(batch))
    reasons = [h["streamrec.reason"] for _, _, h in sent["dlq"][1:]]
    assert reasons == [b"internal_error"] * 3
