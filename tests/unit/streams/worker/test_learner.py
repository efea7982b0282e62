"""The learner (streams.worker.learner): decoding, deduplication, learning, state, lists; no Faust, no services."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import orjson
import pytest

from streams.settings import Settings
from streams.state.codecs import encode_user
from streams.state.store import MemoryStateStore
from streams.worker.item_log import ItemSync, MemoryItemLog
from streams.worker.learner import Learner, RawMessage
from streams.worker.service import RecommenderService
from tests.unit.streams.worker.support import SETTINGS, CountingBPRMF, messages, world_events


def test_duplicates_are_applied_once():
    learner = Learner(SETTINGS, MemoryStateStore())
    batch = messages(world_events(50))
    assert len(learner.process(batch).events) == 50
    again = learner.process(batch)
    assert again.events == [] and again.duplicates == 50 and learner.events_total == 50


def test_lists_exclude_history_and_fallback_is_popular():
    learner = Learner(SETTINGS, MemoryStateStore())
    out = learner.process(messages(world_events()))
    recs = learner.recommendations(sorted(out.dirty_users))
    for user, items in recs.items():
        assert len(items) == 10
        assert not {i for i, _ in items} & set(learner.history[user])
    popular = learner.popular()
    assert len(popular) == 10 and [s for _, s in popular] == sorted((s for _, s in popular), reverse=True)


def test_checkpoint_and_item_snapshot_restore_the_same_model_in_a_new_worker():
    # the factors and items are restored; the session is not exactly (the recent events come back with
    # equal weights, the co-visitation counts are the process's own memory), so it is off here
    settings = dataclasses.replace(SETTINGS, session_covisit_weight=0.0, session_tag_weight=0.0)
    store, log = MemoryStateStore(), MemoryItemLog(settings.partitions)

    async def run():
        first = Learner(settings, store)
        first_items = ItemSync(settings, first.exchange, log)
        await first_items.start()
        first_items.assigned(set(range(settings.partitions)))
        out = first.process(messages(world_events()))
        first.checkpoint(sorted(out.dirty_users))
        await first_items.publish(force=True)
        while first.exchange.records_in_flight:  # until the log hands them back: they are in it now
            await asyncio.sleep(0)
        await first_items.snapshot_step(None)
        users = sorted(out.dirty_users)[:5]
        expected = first.recommendations(users)

        second = Learner(settings, store)  # a restarted worker: nothing in memory, state in Kafka
        second_items = ItemSync(settings, second.exchange, log)
        await second_items.start()
        assert second.model.n_items == first.model.n_items and second_items.restored_items == first.model.n_items
        second._hydrate(users)
        restored = second.recommendations(users)
        for user in users:  # same items; scores equal up to float32 summation order
            assert [i for i, _ in restored[user]] == [i for i, _ in expected[user]]
            assert [s for _, s in restored[user]] == pytest.approx([s for _, s in expected[user]], rel=1e-5)
        assert [i for i, _ in second.popular()] == [i for i, _ in first.popular()]
        await first_items.stop()
        await second_items.stop()

    asyncio.run(run())


def batch_message(events, partition, offset=0):
    from streams.events import BATCH_HEADER, encode_batch

    return RawMessage(None, encode_batch(events), "t.events", partition, offset, headers=[BATCH_HEADER])


def test_batch_messages_apply_good_events_and_dead_letter_bad_ones_alone():
    from streams.events import kafka_partition

    learner = Learner(SETTINGS, MemoryStateStore())
    events = world_events(400)
    partition = kafka_partition(events[0]["user_id"].encode(), SETTINGS.partitions)
    mine = [e for e in events if kafka_partition(e["user_id"].encode(), SETTINGS.partitions) == partition]
    other = next(e for e in events if kafka_partition(e["user_id"].encode(), SETTINGS.partitions) != partition)
    message = batch_message(mine[:20], partition)
    # splice in a broken event and one of another partition's users, as raw JSON
    import orjson

    items = orjson.loads(message.value)
    items[3:3] = [{**mine[0], "kind": "poke"}, other]
    message.value = orjson.dumps(items)
    out = learner.process([message])
    assert len(out.events) == 20
    assert [(d.reason, d.batch_index) for d in out.dead_letters] == [("bad_kind", 3), ("wrong_partition", 4)]
    assert orjson.loads(out.dead_letters[1].copy_value()) == other
    headers = dict(out.dead_letters[0].headers())
    assert headers["streamrec.source.batch_index"] == b"3" and headers["streamrec.reason"] == b"bad_kind"
    # the same batch again: every event is a duplicate, nothing learned twice
    again = learner.process([message])
    assert again.events == [] and again.duplicates == 20 and learner.events_total == 20


def test_a_batch_message_that_is_not_a_json_array_is_dead_lettered_whole():
    from streams.events import BATCH_HEADER

    learner = Learner(SETTINGS, MemoryStateStore())
    cases = {b"[1, 2": "not_json", b'{"a": 1}': "not_object", b"[]": "empty", b"": "empty"}
    out = learner.process([RawMessage(None, value, "t", 0, n, headers=[BATCH_HEADER]) for n, value in enumerate(cases)])
    assert [d.reason for d in out.dead_letters] == list(cases.values())
    assert all(d.batch_index is None and d.copy_value() == d.message.value for d in out.dead_letters)


def test_an_array_without_the_batch_header_is_still_not_an_event():
    learner = Learner(SETTINGS, MemoryStateStore())
    (event,) = world_events(1)
    import orjson

    out = learner.process([RawMessage(event["user_id"].encode(), orjson.dumps([event]), "t", 0, 0)])
    assert [d.reason for d in out.dead_letters] == ["not_object"] and not out.events


def test_revoked_partitions_users_are_read_again_from_the_store():
    from streams.events import kafka_partition

    store = MemoryStateStore()
    learner = Learner(Settings(n_factors=8, partitions=4), store)
    out = learner.process(messages(world_events(300)))
    users = sorted(out.dirty_users)
    gone = {kafka_partition(users[0].encode(), 4)}
    store.users[users[0]] = encode_user(np.zeros(8, np.float32), ["elsewhere"])  # its next owner's state
    forgotten = learner.forget_partitions(gone)
    assert forgotten == sum(kafka_partition(u.encode(), 4) in gone for u in users) and users[0] not in learner.history
    learner._hydrate([users[0]])
    assert list(learner.history[users[0]]) == ["elsewhere"]
    assert not learner.model.user_vectors([users[0]]).any()


def test_events_too_far_in_the_future_are_dead_lettered_and_late_ones_kept():
    import time

    learner = Learner(Settings(n_factors=8, max_clock_skew_s=60), MemoryStateStore())
    now = int(time.time() * 1000)
    base = {"user_id": "u1", "item_id": "i1", "kind": "view"}
    plan = {"soon": now + 30_000, "future": now + 3_600_000, "last-week": now - 7 * 86_400_000}
    out = learner.process([RawMessage(b"u1", orjson.dumps({**base, "event_id": e, "ts": ts}), "t", 0, n)
                        for n, (e, ts) in enumerate(plan.items())])
    assert [e.event_id for e in out.events] == ["soon", "last-week"]
    assert [(d.reason, d.message.offset) for d in out.dead_letters] == [("future_ts", 1)]
    # the late event counts in its own (old) window
    starts = {r["window_start_ms"] for r in learner.windows.close_all()}
    assert len(starts) == 2


def test_a_corrupt_user_state_is_quarantined_and_the_user_starts_afresh():
    store = MemoryStateStore()
    learner = Learner(SETTINGS, store)
    events = world_events(200)
    victim = events[0]["user_id"]
    store.users[victim] = b"SRU1\x08\x00truncated"
    out = learner.process(messages(events))
    assert len(out.events) == len(events) and not out.dead_letters  # nothing poisoned
    assert learner.health.state_quarantined == 1
    assert set(learner.history[victim]) == {e["item_id"] for e in events if e["user_id"] == victim}
    assert learner.recommendations([victim])[victim]


def test_events_a_crashed_worker_published_are_learned_again_by_their_users_only():
    """A worker learns events, publishes their item changes, and dies before its checkpoint. Its successor
    replays the events (they are past the fence): the users learn them, the items and popularity do not
    move a second time."""
    log = MemoryItemLog(SETTINGS.partitions)
    events = world_events(400)
    batch = messages(events)

    async def run():
        crashed = Learner(SETTINGS, MemoryStateStore())
        crashed_items = ItemSync(SETTINGS, crashed.exchange, log)
        await crashed_items.start()
        crashed.process(batch)
        await crashed_items.publish(force=True)
        successor = Learner(SETTINGS, MemoryStateStore())
        successor_items = ItemSync(SETTINGS, successor.exchange, log)
        await successor_items.start()  # reads the crashed worker's records
        items = sorted({e["item_id"] for e in events})
        before = successor.model.item_vectors(items)
        popular_before = successor.popular()
        out = successor.process(batch)
        assert len(out.events) == len(events)
        after = successor.model.item_vectors(items)
        assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
        assert successor.popular() == popular_before == crashed.popular()
        assert set(successor.history) == {e["user_id"] for e in events}
        assert successor.model.n_users == crashed.model.n_users
        await successor_items.publish(force=True)  # its own records carry no item change of those events
        for sync in (crashed_items, successor_items):
            await sync.stop()

    asyncio.run(run())


def test_a_successor_restoring_from_snapshots_still_knows_which_events_were_published():
    """As above, but the crashed worker's records are older than the item snapshot the successor restores:
    the snapshot's fence carries which events' item changes the log held."""
    log = MemoryItemLog(SETTINGS.item_partitions)
    events = world_events(400)
    batch = messages(events)

    async def run():
        crashed = Learner(SETTINGS, MemoryStateStore())
        crashed_items = ItemSync(SETTINGS, crashed.exchange, log)
        await crashed_items.start()
        crashed.process(batch)
        await crashed_items.publish(force=True)
        writer = Learner(SETTINGS, MemoryStateStore())  # another worker, which snapshots the items
        writer_items = ItemSync(SETTINGS, writer.exchange, log)
        await writer_items.start()
        writer_items.assigned({0})
        await writer_items.snapshot_step(None)
        successor = Learner(SETTINGS, MemoryStateStore())
        successor_items = ItemSync(SETTINGS, successor.exchange, log)
        await successor_items.start()  # the snapshot, and nothing of the log after its fence
        assert successor_items.restored_items == crashed.model.n_items
        popular_before = successor.popular()
        successor.process(batch)
        assert successor.popular() == popular_before == crashed.popular()
        for sync in (crashed_items, writer_items, successor_items):
            await sync.stop()

    asyncio.run(run())


def test_the_model_setting_plugs_a_model_class_into_the_learner():
    settings = Settings.from_env({"STREAMREC_MODEL": "tests.unit.streams.worker.support:CountingBPRMF",
                                  "STREAMREC_N_FACTORS": "8", "STREAMREC_TOP_N": "10", "STREAMREC_WORKER_ID": "test"})
    learner = Learner(settings, MemoryStateStore())
    assert type(learner.model) is CountingBPRMF
    assert learner.model.built_with == {
        "n_factors": 8, "learning_rate": settings.learning_rate, "regularization": settings.regularization,
        "n_negatives": settings.n_negatives, "init_std": settings.init_std, "seed": settings.seed,
        "covisit_weight": settings.session_covisit_weight, "session_tag_weight": settings.session_tag_weight,
        "session_boost": settings.session_boost,
        "track_item_deltas": True,
    }
    out = learner.process(messages(world_events(300)))
    assert learner.model.batches_learned == 1 and len(out.events) == 300
    lists = learner.recommendations(sorted(out.dirty_users))
    assert lists and all(len(items) == 10 for items in lists.values())
    service = RecommenderService(settings, MemoryStateStore(), None, None, None)
    assert type(service.learner.model) is CountingBPRMF
