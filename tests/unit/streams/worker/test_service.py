"""The service (streams.worker.service): batches, Redis writes and retries, checkpoints, fences, rebalances; no Faust, no services."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import redis

from streams.settings import Settings
from streams.state.store import MemoryStateStore
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from streams.worker.item_log import MemoryItemLog
from streams.worker.learner import RawMessage
from streams.worker.service import RecommenderService
from tests.unit.streams.worker.support import SETTINGS, TP, messages, world_events


class FakeWriter:
    def __init__(self) -> None:
        self.down = False
        self.written: dict[str, list] = {}

    async def write_lists(self, users, items, scores, *, popular, model_version, updated_ms, popular_by_tag=None):
        if self.down:
            raise redis.ConnectionError("redis is down")
        self.written.update({u: list(zip(i, s)) for u, i, s in zip(users, items, scores)})
        self.tag_lists = dict(popular_by_tag or {})
        if popular:
            self.popular = popular

    async def heartbeat(self, worker_id, status, ttl_s=30):
        if self.down:
            raise redis.ConnectionError("redis is down")


def make_service(writer):
    sent = {"dlq": [], "metrics": []}

    async def dlq(records):
        sent["dlq"].extend((key, value, dict(headers)) for key, value, headers in records)

    async def metric(records):
        sent["metrics"].extend(value for _, value, _ in records)

    return RecommenderService(SETTINGS, MemoryStateStore(), writer, dlq, metric), sent


def test_service_keeps_learning_while_redis_is_down_and_catches_up():
    writer = FakeWriter()
    service, sent = make_service(writer)
    events = world_events(200)

    async def run():
        await service.on_partitions_assigned({TP0})  # partition 0's owner writes the popular lists
        writer.down = True
        await service.handle(messages(events[:100]))
        assert service.pending_users and service.learner.events_total == 100
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
    assert service.learner.health.redis_errors == 1


def test_service_dead_letters_bad_input_and_whole_batch_on_internal_error(monkeypatch):
    service, sent = make_service(FakeWriter())
    bad = RawMessage(b"u1", b"nope", "t.events", 2, 9)
    asyncio.run(service.handle([bad] + messages(world_events(5))))
    assert sent["dlq"][0][:2] == (b"u1", b"nope")
    assert sent["dlq"][0][2]["streamrec.reason"] == b"not_json"
    assert sent["dlq"][0][2]["streamrec.source.offset"] == b"9"

    def broken(_messages):
        raise RuntimeError("bug")

    monkeypatch.setattr(service.learner, "process", broken)
    batch = messages(world_events(3), 100)
    asyncio.run(service.handle(batch))
    reasons = [h["streamrec.reason"] for _, _, h in sent["dlq"][1:]]
    assert reasons == [b"internal_error"] * 3


def test_offsets_are_acknowledged_only_after_their_state_is_flushed():
    acks: list[tuple] = []
    flushed: list[int] = []

    class Store(MemoryStateStore):
        async def flush(self) -> None:
            flushed.append(len(self.users))

    async def nothing(records):
        return None

    service = RecommenderService(
        Settings(n_factors=8, top_n=10, worker_id="t", checkpoint_interval_s=3600), Store(), FakeWriter(),
        nothing, nothing, ack=lambda tp, first, last: acks.append((tp, first, last, len(flushed))),
    )  # fmt: skip
    events = world_events(100)

    async def run():
        await service.handle(messages(events[:50]), [(TP0, 0, 49)])
        await service.handle(messages(events[50:], 50), [(TP0, 50, 99)])
        assert acks == [] and flushed == []  # the checkpoint interval has not passed
        await service.checkpoint()

    asyncio.run(run())
    assert flushed and flushed[0] == len({e["user_id"] for e in events})
    assert acks == [(TP0, 0, 99, 1)]  # one range, acknowledged after the flush
    assert service.checkpointer.fences == {0: 99}


TP0 = TP("t.events", 0)


def fenced_service(*, ack=None, read_fences=None, **settings) -> tuple[RecommenderService, list[list]]:
    """A one-partition service whose metrics batches (decoded) are collected in the returned list."""
    sent: list[list] = []

    async def metrics(records):
        sent.append([orjson.loads(value) for _, value, _ in records])

    async def nothing(records):
        return None

    config = Settings(n_factors=8, top_n=10, worker_id="t", partitions=1, topic_prefix="t", **settings)
    return RecommenderService(config, MemoryStateStore(), FakeWriter(), nothing, metrics, ack=ack,
                              read_fences=read_fences), sent


def test_a_checkpoint_sends_window_counts_and_fence_in_one_batch_and_replays_are_skipped():
    acks: list[tuple] = []

    async def fences(partitions):
        return {0: 49}  # a previous owner applied offsets 0..49 of partition 0

    service, sent = fenced_service(checkpoint_interval_s=3600, ack=lambda tp, first, last: acks.append((tp, first, last)),
                                   read_fences=fences)
    events = world_events(100)

    async def run():
        await service.on_partitions_assigned({TP0})
        await service.offer(TP0, messages(events))  # offsets 0..99: 0..49 are behind the fence
        chunks = await service.intake.take(10_000, 0)
        assert [r.offset for r in chunks[0][1]] == list(range(50, 100))
        await service.handle(chunks[0][1], [(TP0, 50, 99)])
        await service.checkpoint()

    asyncio.run(run())
    assert acks == [(TP0, 0, 49), (TP0, 50, 99)]  # the skipped ones at once, the applied ones after the checkpoint
    (batch,) = sent
    assert batch[-1]["type"] == "fence" and batch[-1]["offsets"] == {"0": 99}
    views = sum(r["views"] for r in batch if r["type"] == "item")
    assert views == sum(e["kind"] == "view" for e in events[50:])  # exactly the applied events
    assert service.learner.health.replayed_skipped == 50


def test_counts_sent_with_a_fence_are_exactly_those_of_the_events_it_covers():
    """A checkpoint is written in slices with batches in between; its counts must not include them
    (a crash would replay those batches, above the fence, and count them twice)."""
    service, sent = fenced_service(checkpoint_interval_s=0)
    service.checkpointer.slice_users = 1
    events = world_events(200)

    async def run():
        await service.handle(messages(events[:100]), [(TP0, 0, 99)])  # starts a checkpoint of many users
        for k in range(100, 200, 10):  # more batches while its slices are written
            await service.handle(messages(events[k:k + 10], k), [(TP0, k, k + 9)])
        assert not sent  # still writing the first checkpoint's slices
        while not sent:
            await service.checkpointer.step()

    asyncio.run(run())
    first = sent[0]
    assert first[-1]["type"] == "fence" and first[-1]["offsets"] == {"0": 99}
    views = sum(r["views"] for r in first if r["type"] == "item")
    assert views == sum(e["kind"] == "view" for e in events[:100])


def test_a_batch_taken_before_a_rebalance_is_left_to_the_partitions_next_owner():
    """The processing loop takes records, then waits for the batch lock; a revocation that runs
    first takes them back (their next owner reads them again: applied here too, they would count twice)."""

    async def no_fences(partitions):
        return {}

    service, sent = fenced_service(checkpoint_interval_s=3600, batch_within_s=0, read_fences=no_fences)

    async def scenario():
        await service.on_partitions_assigned({TP0})
        await service.offer(TP0, messages(world_events(50)))
        await service._batch_lock.acquire()  # a batch (or a checkpoint) under way
        revoke = asyncio.create_task(service.on_partitions_revoked({TP0}))
        await asyncio.sleep(0)  # the rebalance now waits for the lock
        loop = asyncio.create_task(service.run())
        await asyncio.sleep(0.05)  # the loop took the records and waits for the lock, behind the rebalance
        assert not service.intake._chunks and service._taken
        service._batch_lock.release()
        await asyncio.wait_for(revoke, 5)
        await asyncio.sleep(0.05)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        # offers wait for the next assignment's fences
        blocked = asyncio.create_task(service.offer(TP0, messages(world_events(5))))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        await service.on_partitions_assigned({TP0})
        await asyncio.wait_for(blocked, 5)

    asyncio.run(scenario())
    assert service.learner.events_total == 0
    assert all(r["type"] == "fence" for batch in sent for r in batch)  # nothing counted


def test_nothing_is_processed_after_the_last_checkpoint_of_a_shutdown():
    service, sent = fenced_service(checkpoint_interval_s=3600, batch_within_s=0)

    async def scenario():
        await service.handle(messages(world_events(20)), [(TP0, 0, 19)])
        await service.shutdown()
        service._fences_ready.set()
        await service.offer(TP0, messages(world_events(30, seed=2), 20))  # fetched before the consumer stopped
        loop = asyncio.create_task(service.run())
        await asyncio.sleep(0.05)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(scenario())
    assert service.learner.events_total == 20  # the 30 later ones are their next owner's
    counted = sum(r["views"] + r["likes"] + r["shares"] for batch in sent for r in batch if r["type"] == "item")
    assert counted == 20


def test_a_batch_failing_midway_counts_nothing_and_its_dead_letters_replay_in_full(monkeypatch):
    """Learning succeeded, counting failed: the batch is dead-lettered whole, nothing of it is counted
    and no event id is remembered, so replaying the dead letters applies every event once."""
    service, sent = make_service(FakeWriter())
    events = world_events(40)
    batch = messages(events, 100)
    windows = service.learner.windows

    def broken(*args, **kwargs):
        raise RuntimeError("bug while counting")

    with monkeypatch.context() as patch:
        patch.setattr(windows, "add_columns", broken)
        asyncio.run(service.handle(batch))
    assert [h["streamrec.reason"] for _, _, h in sent["dlq"]] == [b"internal_error"] * len(batch)
    learner = service.learner
    assert learner.events_total == 0 and learner.history == {} and learner.health.events_processed == 0
    assert not any(e["event_id"] in learner.seen_event_ids for e in events)
    replay = [RawMessage(key, value, "t.events.dlq", 0, n) for n, (key, value, _) in enumerate(sent["dlq"])]
    out = asyncio.run(service.handle(replay))
    assert len(out.events) == len(events) and out.duplicates == 0 and not out.dead_letters
    views = sum(r["views"] for r in windows.close_all() if r["type"] == "item")
    assert views == sum(e["kind"] == "view" for e in events)


def test_lists_waiting_for_redis_are_dropped_for_revoked_partitions():
    from streams.events import kafka_partition

    writer = FakeWriter()
    service, _ = make_service(writer)
    events = world_events(300)
    n = SETTINGS.partitions
    revoked_partition = kafka_partition(events[0]["user_id"].encode(), n)

    async def run():
        await service.on_partitions_assigned({TP(SETTINGS.events_topic, p) for p in range(n)})
        writer.down = True
        await service.handle(messages(events))
        assert {kafka_partition(u.encode(), n) for u in service.pending_users} > {revoked_partition}
        await service.on_partitions_revoked({TP(SETTINGS.events_topic, revoked_partition)})
        assert service.pending_users and all(kafka_partition(u.encode(), n) != revoked_partition
                                             for u in service.pending_users)
        writer.down = False
        service.redis_retry_at = 0
        await service.refresh()

    asyncio.run(run())
    assert all(kafka_partition(u.encode(), n) != revoked_partition for u in writer.written)


def test_the_popular_lists_writer_publishes_the_other_workers_events():
    """Two services sharing one item log: partition 0's owner writes popular lists that count the events
    only the other worker saw."""
    from streams.events import kafka_partition

    settings = Settings(n_factors=8, top_n=10, partitions=4, item_exchange_interval_s=0.001)
    log = MemoryItemLog(settings.partitions)

    async def nothing(records):
        return None

    writers = [FakeWriter(), FakeWriter()]
    first, second = (RecommenderService(dataclasses.replace(settings, worker_id=f"w{k}"), MemoryStateStore(),
                                        writers[k], nothing, nothing, item_log=log) for k in range(2))
    events = [e for e in world_events(600) if kafka_partition(e["user_id"].encode(), 4) != 0]

    async def run():
        for service in (first, second):
            await service.items.start()
        await first.on_partitions_assigned({TP(settings.events_topic, 0)})
        await second.on_partitions_assigned({TP(settings.events_topic, p) for p in (1, 2, 3)})
        await second.handle(messages(events))
        await second.items.publish(force=True)
        for _ in range(10):
            await asyncio.sleep(0)  # the log hands the records to both workers
        first.trending_written = float("-inf")
        assert await first.refresh()
        for service in (first, second):
            await service.items.stop()

    asyncio.run(run())
    popular = [item for item, _ in writers[0].popular]
    assert len(popular) == 10 and set(popular) <= {e["item_id"] for e in events}
    assert writers[0].tag_lists and not getattr(writers[1], "popular", None)
