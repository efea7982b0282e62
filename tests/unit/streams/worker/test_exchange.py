"""The item exchange without Kafka: replicas that share a log end up one model."""

from __future__ import annotations

import numpy as np
import pytest

from models import BPRMF, Popularity
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from streams.worker.exchange import (
    ItemExchange,
    ItemUpdate,
    decode_update,
    encode_fence,
    encode_update,
    fence_key,
    item_partition,
)

K = 8
PARTITIONS = 3


class Replica:
    """One worker's item side: model, popularity, meta and exchange."""

    def __init__(self, name: str) -> None:
        self.model = BPRMF(n_factors=K, track_item_deltas=True, seed=0)
        self.popularity = Popularity(half_life_s=3600, track_deltas=True)
        self.meta: dict = {}
        self.exchange = ItemExchange(self.model, self.popularity, self.meta, partitions=PARTITIONS, origin=name)

    def learn(self, events: list[dict]) -> None:
        users = [e["user_id"] for e in events]
        items = [e["item_id"] for e in events]
        tags = [tuple(e["tags"]) for e in events]
        self.exchange.note_new_items(self.model.add_items(items, tags))
        self.model.learn_batch(users, items, item_tags=tags)
        self.popularity.learn_batch(users, items, ts_ms=[e["ts"] for e in events], item_tags=tags)
        for e in events:
            meta = (e["creator_id"], tuple(e["tags"]))
            if self.meta.get(e["item_id"]) != meta:
                self.meta[e["item_id"]] = meta
                self.exchange.note_meta(e["item_id"], *meta)
        self.exchange.note_learned(0)


class Log:
    """The item-updates topic in memory: records per partition, in order."""

    def __init__(self) -> None:
        self.partitions: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
        self.read: dict[int, dict[int, int]] = {}

    def publish(self, replica: Replica) -> None:
        for partition, _, value in replica.exchange.take_records(now_ms=0):
            self.partitions[partition].append(value)

    def deliver(self, replica: Replica, start: dict[int, int] | None = None) -> None:
        position = self.read.setdefault(id(replica), dict(start or {}))
        for partition, records in enumerate(self.partitions):
            for offset in range(position.get(partition, 0), len(records)):
                replica.exchange.apply(partition, offset, records[offset], now_ms=0)
            position[partition] = len(records)


def stream(n: int, seed: int = 3) -> list[dict]:
    return list(SyntheticWorld(WorldConfig(users=200, items=150, seed=seed)).events(n, start_ms=1_700_000_000_000))


def item_state(replica: Replica, items: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors, biases = replica.model.item_vectors(items)
    return vectors, biases, replica.popularity.score("", items)


def test_records_round_trip_through_bytes():
    update = ItemUpdate("w/1", 7, np.array([3, 15]), np.arange(2 * K, dtype=np.float32).reshape(2, K),
                        np.array([0.5, -1], np.float32), np.array([15]), np.array([2.0]), 10.0, 20.0,
                        ["new"], np.ones((1, K), np.float32), np.array([0.1], np.float32), np.array([1.5]),
                        ["new"], np.full((1, K), 0.5, np.float32), np.array([0.25], np.float32),
                        {"new": ("c", ("dance",))}, 5, 6)
    back = decode_update(encode_update(update))
    assert (back.origin, back.seq, back.ids, back.proposals, back.meta) == ("w/1", 7, ["new"], ["new"],
                                                                           {"new": ("c", ("dance",))})
    for name in ("numbers", "vectors", "biases", "count_numbers", "counts", "id_vectors", "id_biases", "id_counts",
                 "base_vectors", "base_biases"):
        assert np.array_equal(getattr(back, name), getattr(update, name)), name
    assert (back.count_base_ms, back.clock_ms, back.first_change_ms, back.sent_ms) == (10.0, 20.0, 5, 6)


def snapshot_state(replica: Replica) -> dict[bytes, bytes]:
    """A whole item snapshot of ``replica`` with its fences, as the item log would hold it."""
    state = {}
    items, fences = replica.exchange.start_snapshot(range(PARTITIONS))
    for partition, numbers in items.items():
        state.update(replica.exchange.snapshot(partition, numbers))
        state[fence_key(partition)] = encode_fence(fences[partition])
    return state


def learn_in_halves(events: list[dict], step: int = 500) -> tuple[Log, Replica, Replica]:
    """Replicas ``a`` and ``b`` each learn half of the users' ``events``, exchanging after every ``step`` events."""
    log, a, b = Log(), Replica("a"), Replica("b")
    users_a = {e["user_id"] for e in events if hash(e["user_id"]) % 2 == 0}
    for lo in range(0, len(events), step):
        chunk = events[lo:lo + step]
        a.learn([e for e in chunk if e["user_id"] in users_a])
        b.learn([e for e in chunk if e["user_id"] not in users_a])
        log.publish(a)
        log.publish(b)
        log.deliver(a)
        log.deliver(b)
    return log, a, b


def test_two_replicas_that_exchange_everything_hold_the_same_items():
    events = stream(4000)
    log, a, b = learn_in_halves(events)
    items = sorted({e["item_id"] for e in events})
    assert sorted(a.model.item_ids) == sorted(b.model.item_ids) == items  # one catalog
    for mine, theirs in zip(item_state(a, items), item_state(b, items)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    assert {i: a.meta[i] for i in items} == {i: b.meta[i] for i in items}  # creators and tags
    assert a.model.item_tags(items[0]) == b.model.item_tags(items[0]) != ()
    assert a.exchange.records_in_flight == b.exchange.records_in_flight == 0


def test_popularity_sums_every_replicas_events():
    log, a, b = Log(), Replica("a"), Replica("b")
    events = stream(2000)
    a.learn(events[:1000])
    b.learn(events[1000:])
    for replica in (a, b):
        log.publish(replica)
    log.deliver(a)
    log.deliver(b)
    alone = Popularity(half_life_s=3600)
    alone.learn_batch([e["user_id"] for e in events], [e["item_id"] for e in events], ts_ms=[e["ts"] for e in events])
    expected = alone.top_n("", 20)
    for replica in (a, b):
        got = replica.popularity.top_n("", 20)
        assert [i for i, _ in got] == [i for i, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-9)


def test_the_first_proposal_of_a_new_item_wins_on_every_replica():
    log, a, b = Log(), Replica("a"), Replica("b")
    background = stream(1000)
    a.learn(background)
    log.publish(a)
    log.deliver(b)  # b knows the catalog; then both meet the same new item at once, with tags priors
    tagged = [dict(e, item_id="brand-new") for e in background[:3]]
    a.learn(background[:50] + tagged)
    b.learn(background[50:100] + [dict(e, user_id="someone") for e in tagged])
    base_a = a.exchange._provisional["brand-new"][0].copy()
    log.publish(b)  # b's proposal comes first in the log
    log.publish(a)
    log.deliver(a)
    log.deliver(b)
    assert "brand-new" not in a.exchange._provisional and "brand-new" not in b.exchange._provisional
    assert a.exchange.number_of("brand-new") == b.exchange.number_of("brand-new") >= 0
    va, vb = a.model.item_vectors(["brand-new"])[0][0], b.model.item_vectors(["brand-new"])[0][0]
    np.testing.assert_allclose(va, vb, rtol=1e-4, atol=1e-6)
    assert not np.allclose(base_a, b.exchange.model.item_vectors(["brand-new"])[0][0])  # a really moved


def test_a_snapshot_is_exact_as_of_its_offset_despite_unpublished_and_unread_changes():
    """Restore from snapshots written while changes were pending and in flight, replay the log from the
    fences: the same replica as a worker that read everything."""
    log, writer = Log(), Replica("writer")
    events = stream(3000)
    writer.learn(events[:1000])
    log.publish(writer)
    log.deliver(writer)  # read back: in the log
    writer.learn(events[1000:2000])
    log.publish(writer)  # in flight: sent, not read back
    writer.learn(events[2000:2500])  # pending: not even sent
    assert writer.exchange.records_in_flight > 0
    writer.exchange.mark_dirty(range(PARTITIONS))
    state = snapshot_state(writer)
    log.publish(writer)
    log.deliver(writer)

    restored = Replica("restored")
    start = restored.exchange.restore(state)
    log.deliver(restored, start)
    restored.exchange.restore_done()
    ids = sorted(writer.model.item_ids)
    assert sorted(restored.model.item_ids) == ids
    for mine, theirs in zip(item_state(restored, ids), item_state(writer, ids)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_a_corrupt_record_is_skipped_and_counted():
    replica = Replica("r")
    assert replica.exchange.apply(0, 0, b"garbage", now_ms=0) == 0  # no exception
    assert replica.exchange.corrupt_records == 1 and replica.exchange.positions[0] == 0


def test_corrupt_snapshots_are_quarantined_and_the_item_starts_from_the_log():
    log, writer = Log(), Replica("writer")
    writer.learn(stream(500))
    log.publish(writer)
    victim = writer.model.item_ids[0]
    restored = Replica("restored")
    start = restored.exchange.restore({victim.encode(): b"SRI1\x00\x00not-a-state"})
    log.deliver(restored, start)
    assert restored.exchange.quarantined_items == 1 and restored.model.has_item(victim)


def test_items_are_spread_over_every_partition():
    assert {item_partition(f"v{n}", PARTITIONS) for n in range(100)} == set(range(PARTITIONS))


def test_every_replica_numbers_the_items_alike_and_records_then_carry_numbers():
    log, a, b = Log(), Replica("a"), Replica("b")
    events = stream(3000)
    a.learn(events[:1500])
    b.learn(events[1500:])
    for replica in (a, b):
        log.publish(replica)
    log.deliver(a)
    log.deliver(b)
    items = sorted(a.model.item_ids)
    assert [a.exchange.number_of(i) for i in items] == [b.exchange.number_of(i) for i in items]
    assert min(a.exchange.number_of(i) for i in items) >= 0
    a.learn(events[:500])  # known items only: every one travels by number, none by id
    updates = [decode_update(value) for _, _, value in a.exchange.take_records(now_ms=0)]
    assert updates and not any(u.ids or u.proposals for u in updates) and sum(len(u.numbers) for u in updates) > 0


def test_a_replica_restored_from_a_fence_and_newer_snapshot_records_numbers_items_like_the_log():
    """The restore reads an older snapshot's fence and items of a newer snapshot whose fence was not
    written yet (a snapshot in progress): replaying the log from the older fence must give every item
    the number the other replicas gave it."""
    log, writer = Log(), Replica("writer")
    events = stream(4000)
    writer.learn(events[:1000])
    log.publish(writer)
    log.deliver(writer)
    state = snapshot_state(writer)
    for lo in (1000, 2000, 3000):  # new items, numbered after that fence
        writer.learn(events[lo:lo + 1000])
        log.publish(writer)
        log.deliver(writer)
    writer.exchange.mark_dirty(range(PARTITIONS))
    items, _ = writer.exchange.start_snapshot(range(PARTITIONS))
    for partition, numbers in items.items():  # the newer snapshot: some of its items, no fence yet
        state.update(writer.exchange.snapshot(partition, numbers[-1:]))  # its newest item only
    restored = Replica("restored")
    log.deliver(restored, restored.exchange.restore(state))
    restored.exchange.restore_done()
    ids = sorted(writer.model.item_ids)
    assert [restored.exchange.number_of(i) for i in ids] == [writer.exchange.number_of(i) for i in ids]
    for mine, theirs in zip(item_state(restored, ids), item_state(writer, ids)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
