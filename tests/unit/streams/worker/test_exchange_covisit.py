"""Co-visit counts on the item exchange: every worker counts the co-visits of the whole group's users."""

from __future__ import annotations

import asyncio
import dataclasses
import struct

import numpy as np
import orjson

from streams.events import encode_event, kafka_partition
from streams.state.codecs import decode_item, encode_item
from streams.state.store import MemoryStateStore
from streams.worker.exchange import (
    FENCE_KEY_PREFIX,
    ItemUpdate,
    decode_update,
    encode_fence,
    encode_update,
    fence_key,
    parse_fence,
)
from streams.worker.item_log import ItemSync, MemoryItemLog
from streams.worker.learner import Learner, RawMessage
from tests.unit.streams.worker.support import SETTINGS
from tests.unit.streams.worker.test_exchange import PARTITIONS, K, Log, Replica, learn_in_halves, snapshot_state, stream


def covisits(replica: Replica, full_rows: bool = True) -> dict[tuple[str, str], float]:
    """The replica's co-visit table by item ids (without the items whose neighbours fill their row: which
    pairs such an item keeps depends on the order they came in, see :mod:`models.covisit`)."""
    model, out = replica.model, {}
    table = model.session.covisit
    for row in range(model.n_items):
        if not full_rows and (table.nbr[row] >= 0).all():
            continue
        for neighbour, count in table.neighbours_of(row):
            out[model.item_ids_at(np.array([row]))[0], model.item_ids_at(np.array([neighbour]))[0]] = count
    return out


def logged_pairs(log: Log, replica: Replica, start: dict[int, int] | None = None) -> dict[tuple[str, str], float]:
    """The sum of the co-visit pairs of the log's records (from ``start``), by item ids as ``replica`` numbers them."""
    out: dict[tuple[str, str], float] = {}
    for partition, records in enumerate(log.partitions):
        for value in records[(start or {}).get(partition, 0):]:
            u = decode_update(value)
            for s, d, c in zip(u.pair_src.tolist(), u.pair_dst.tolist(), u.pair_counts.tolist()):
                ends = tuple(u.pair_ids[-1 - e] if e < 0 else replica.model.item_ids_at(
                    replica.exchange._model_index[[e]])[0] for e in (s, d))
                out[ends] = out.get(ends, 0.0) + c  # type: ignore[index]
    return out


def test_pairs_round_trip_through_bytes_and_records_without_pairs_still_decode():
    update = ItemUpdate("w/1", 7, np.zeros(0, np.int64), np.zeros((0, K), np.float32), np.zeros(0, np.float32),
                        np.zeros(0, np.int64), np.zeros(0), 10.0, 20.0,
                        pair_src=np.array([3, -1, 2**33]), pair_dst=np.array([-2, 3, 3]),
                        pair_counts=np.array([1, 2, 3], np.float32), pair_ids=["new", "newer"])
    back = decode_update(encode_update(update))
    assert back.pair_src.tolist() == [3, -1, 2**33] and back.pair_dst.tolist() == [-2, 3, 3]  # int64 when needed
    assert back.pair_counts.tolist() == [1.0, 2.0, 3.0] and back.pair_ids == ["new", "newer"]
    small = dataclasses.replace(update, pair_src=np.array([3, -1, 5]))
    assert len(encode_update(update)) - len(encode_update(small)) == 3 * 2 * 4  # int32 ends when they fit
    # A record written before pairs existed: no pair fields in the header, no pair arrays.
    header = orjson.dumps({"o": "old/1", "s": 1, "k": K, "n": 1, "c": 0, "ids": [], "p": [], "m": [], "cb": 0.0,
                           "cl": 0.0, "f": 0, "t": 0, "tk": 0, "tn": 1, "v": {}})
    body = np.array([5], "<i8").tobytes() + np.ones(K, "<f4").tobytes() + np.zeros(1, "<f4").tobytes()
    old = decode_update(b"SRX2" + struct.pack("<I", len(header)) + header + body)
    assert old.numbers.tolist() == [5] and len(old.pair_src) == len(old.pair_dst) == len(old.pair_counts) == 0


def test_one_replicas_pairs_reach_the_other_once_and_its_own_are_not_added_again():
    log, a, b = Log(), Replica("a"), Replica("b")
    events = stream(3000)
    a.learn(events[:1500])
    log.publish(a)  # new items: pairs travel by id
    own = covisits(a)
    log.deliver(a)
    log.deliver(b)
    assert covisits(a) == own  # its own record read back: nothing added
    assert covisits(b, False) == covisits(a, False) != {}  # b learned nothing: a's table, pair for pair
    a.learn(events[1500:])
    sent = [len(records) for records in log.partitions]
    log.publish(a)  # numbered items now: pairs travel by number, by id only for the items new in this take
    take = [decode_update(value) for records, n in zip(log.partitions, sent) for value in records[n:]]
    assert {i for u in take for i in u.pair_ids} <= {i for u in take for i in u.proposals}
    log.deliver(a)
    log.deliver(b)
    assert covisits(b, False) == covisits(a, False)
    assert a.exchange.pairs_applied == 0 and b.exchange.pairs_applied == a.exchange.pairs_sent > 0
    assert b.exchange.waiting_pairs == b.exchange.pairs_dropped == 0


def test_two_replicas_each_count_both_replicas_pairs():
    events = stream(4000)
    log, a, b = learn_in_halves(events)
    # the group's pairs: each event with its user's previous 2 (the users' events all on one replica)
    history: dict[str, list[str]] = {}
    expected: dict[tuple[str, str], float] = {}
    for e in events:
        for before in history.get(e["user_id"], [])[-2:]:
            if before != e["item_id"]:
                for pair in ((before, e["item_id"]), (e["item_id"], before)):
                    expected[pair] = expected.get(pair, 0.0) + 1.0
        history.setdefault(e["user_id"], []).append(e["item_id"])
    for replica in (a, b):  # exact where no pair was evicted
        table = covisits(replica, False)
        rows = {src for src, _ in table}
        assert len(rows) > 50 and table == {pair: n for pair, n in expected.items() if pair[0] in rows}


def test_pairs_respect_the_record_size():
    log, writer = Log(), Replica("w")
    events = stream(3000)
    writer.learn(events[:1000])
    log.publish(writer)
    log.deliver(writer)
    writer.exchange.max_record_bytes = 3000
    writer.learn(events[1000:])
    sent = writer.exchange.pairs_sent
    taken = writer.exchange.take_records(now_ms=0)
    updates = [decode_update(value) for _, _, value in taken]
    row_bytes = 4 * K + 24
    for u in updates:  # the rows' share (as the chunking counts them) plus the pairs fit
        rows = max(len(u.numbers), len(u.count_numbers), len(u.ids))
        assert rows * row_bytes + 12 * len(u.pair_src) + sum(len(i) + 3 for i in u.pair_ids) <= 3000
    assert sum(len(u.pair_src) for u in updates) == writer.exchange.pairs_sent - sent > 3000 // 12
    assert sum(1 for u in updates if len(u.pair_src) and not len(u.numbers)) > 0  # records of pairs alone
    for partition, _, value in taken:
        log.partitions[partition].append(value)
    reader = Replica("r")
    log.deliver(reader)
    assert covisits(reader, False) == covisits(writer, False)


def full_rows(replica: Replica) -> set[str]:
    """The items whose neighbours fill their row."""
    full = (replica.model.session.covisit.nbr[: replica.model.n_items] >= 0).all(1)
    return set(replica.model.item_ids_at(np.flatnonzero(full)))


def whole_rows(*replicas: Replica) -> None:
    """Snapshots keep every neighbour (not only the 16 strongest): the restored tables compare pair for pair."""
    for replica in replicas:
        replica.model.session.covisit_candidates = replica.model.session.covisit.k


def test_a_restored_replica_has_the_writers_counts_from_the_snapshot_plus_the_log_past_the_fences_once():
    """The snapshot holds the counts as of its offsets (the writer's own pairs not in the log yet left out);
    the replay adds the pairs past them, once."""
    log, writer = Log(), Replica("writer")
    whole_rows(writer)
    events = stream(4000)
    writer.learn(events[:1500])
    log.publish(writer)
    log.deliver(writer)
    writer.learn(events[1500:2000])
    log.publish(writer)  # sent, not read back when the snapshot is taken
    writer.learn(events[2000:2500])  # not even taken
    writer.exchange.mark_dirty(range(PARTITIONS))
    state = snapshot_state(writer)
    log.deliver(writer)
    writer.learn(events[2500:])
    log.publish(writer)
    log.deliver(writer)
    restored = Replica("restored")
    start = restored.exchange.restore(state)
    assert covisits(restored) != {}  # from the snapshot alone
    log.deliver(restored, start)
    restored.exchange.restore_done()
    full = full_rows(writer)
    table = {pair: count for pair, count in covisits(restored).items() if pair[0] not in full}
    assert len({src for src, _ in table}) > 50 and table == covisits(writer, False)
    after_fence = logged_pairs(log, writer, start)
    assert any(count > after_fence.get(pair, 0.0) for pair, count in table.items())  # before the fences too


def test_a_snapshot_written_past_its_fence_is_not_counted_again_by_the_replay():
    """Items written after the log moved past the fence hold the pairs in between: the replay skips them (and
    their neighbours numbered in between get their counts once the replay numbers them)."""
    log, a, b = Log(), Replica("a"), Replica("b")
    whole_rows(a, b)
    events = stream(4000)
    users_a = {e["user_id"] for e in events if hash(e["user_id"]) % 2 == 0}
    for replica, mine in ((a, True), (b, False)):
        replica.learn([e for e in events[:2000] if (e["user_id"] in users_a) == mine])
        log.publish(replica)
    log.deliver(a)
    log.deliver(b)
    a.exchange.mark_dirty(range(PARTITIONS))
    items, fences = a.exchange.start_snapshot(range(PARTITIONS))
    b.learn([e for e in events[2000:] if e["user_id"] not in users_a])
    log.publish(b)
    log.deliver(a)  # b's new pairs reach a before a writes the items: past the fences
    state = {}
    for partition, numbers in items.items():
        state.update(a.exchange.snapshot(partition, numbers))
        state[fence_key(partition)] = encode_fence(fences[partition])
    restored = Replica("restored")
    start = restored.exchange.restore(state)
    assert restored.exchange.waiting_pairs > 0  # neighbours numbered past the fences: the replay numbers them
    log.deliver(restored, start)
    restored.exchange.restore_done()
    assert restored.exchange.waiting_pairs == restored.exchange.pairs_dropped == 0
    full = full_rows(a)
    table = {pair: count for pair, count in covisits(restored).items() if pair[0] not in full}
    assert len({src for src, _ in table}) > 50 and table == covisits(a, False)


def test_an_item_snapshot_keeps_the_strongest_neighbours_ranking_uses_by_number():
    log, writer = Log(), Replica("writer")
    writer.learn(stream(3000))
    log.publish(writer)
    log.deliver(writer)
    writer.exchange.mark_dirty(range(PARTITIONS))
    states = {key.decode(): decode_item(value) for key, value in snapshot_state(writer).items()
              if not key.startswith(FENCE_KEY_PREFIX)}
    candidates = writer.model.covisit_candidates
    assert max(len(s.neighbours) for s in states.values()) == candidates < writer.model.session.covisit.k
    number_of = {s.number: item for item, s in states.items()}
    for item, state in states.items():
        (row,) = writer.model.item_index([item]).tolist()
        strongest = writer.model.session.covisit.neighbours_of(row)
        assert list(state.covisit_counts) == [count for _, count in strongest[:candidates]]
        by_row = dict(strongest)
        for number, count in zip(state.neighbours, state.covisit_counts):
            assert by_row[writer.model.item_index([number_of[number]])[0]] == count


def _messages(events, partition: int, first_offset: int) -> list[RawMessage]:
    return [RawMessage(*encode_event(e), "t.events", partition, first_offset + n) for n, e in enumerate(events)]


def _pair_scenario() -> tuple[list[dict], str, str, list[dict], dict]:
    """Background events on 2 events partitions, then 40 users of partition 0 watching x then y, and a new
    user of partition 1 watching x: ``(background, x, y, binge, watch)``."""
    world_events = stream(4000)
    x, y = "binge-x", "binge-y"
    fans = [u for u in sorted({e["user_id"] for e in world_events}) if kafka_partition(u.encode(), 2) == 0][:40]
    reader = next(f"newcomer-{n}" for n in range(100) if kafka_partition(f"newcomer-{n}".encode(), 2) == 1)
    t = world_events[-1]["ts"] + 1000
    binge = [dict(world_events[0], event_id=f"{u}-{item}", user_id=u, item_id=item, ts=t + 2 * k + (item == y),
                  tags=[], creator_id="c")
             for k, u in enumerate(fans) for item in (x, y)]
    watch = dict(binge[0], event_id="reader-x", user_id=reader, item_id=x, ts=t + 10**6)
    return world_events, x, y, binge, watch


async def _learn_and_exchange(a: Learner, b: Learner, syncs: list[ItemSync], background: list[dict],
                              binge: list[dict]) -> None:
    """``a`` learns partition 0's background events, ``b`` partition 1's, then ``a`` the binge; both publish
    and read back everything they sent."""
    for learner, p in ((a, 0), (b, 1)):
        mine = [e for e in background if kafka_partition(e["user_id"].encode(), 2) == p]
        for lo in range(0, len(mine), 1000):
            learner.process(_messages(mine[lo:lo + 1000], p, lo))
    a.process(_messages(binge, 0, 10**6))
    for sync in syncs:
        await sync.publish(force=True)
    while a.exchange.records_in_flight or b.exchange.records_in_flight:
        await asyncio.sleep(0)


def test_a_pair_only_one_workers_users_co_visit_pulls_into_the_other_workers_users_list():
    """Two workers on one item log: users of worker A watch x then y, many times; a new user of worker B who
    watches x gets y in their list, though B never saw anyone watch x then y."""
    settings = dataclasses.replace(SETTINGS, partitions=2, top_n=10)
    world_events, x, y, binge, watch = _pair_scenario()
    reader = watch["user_id"]

    async def run(exchange_pairs: bool) -> list[str]:
        store, log = MemoryStateStore(), MemoryItemLog(settings.item_partitions)
        a, b = Learner(settings, store), Learner(settings, store)
        if not exchange_pairs:  # as before: A publishes no pairs
            a.model.take_covisit_deltas = lambda: (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32),)
        syncs = [ItemSync(settings, a.exchange, log), ItemSync(settings, b.exchange, log)]
        for sync in syncs:
            await sync.start()
        await _learn_and_exchange(a, b, syncs, world_events, binge)
        rows = b.model.item_index([x, y]).tolist()
        assert min(rows) >= 0  # b knows both items, from the log
        assert b.model.session.covisit.neighbours_of(rows[0])[:1] == ([(rows[1], 40.0)] if exchange_pairs else [])
        b.process(_messages([watch], 1, 10**6))
        lists = b.recommendations([reader])[reader]
        for sync in syncs:
            await sync.stop()
        return [item for item, _ in lists]

    with_pairs, without = asyncio.run(run(True)), asyncio.run(run(False))
    # Seeded: y ranks 7th with the pairs, 16th from the factors alone (x is excluded: watched).
    assert y in with_pairs and y not in without, (with_pairs, without)


def test_a_restarted_worker_still_pulls_the_pair_it_learned_before_the_snapshot():
    """Worker A's users watch x then y; A snapshots the items; worker B restarts (nothing of the pairs in the
    log past the fences): a new user of B who watches x still gets y, from the co-visit rows of the snapshot.
    Restored from the same snapshot without those rows (records as written before them), y is not there."""
    settings = dataclasses.replace(SETTINGS, partitions=2, top_n=10)
    world_events, x, y, binge, watch = _pair_scenario()
    reader = watch["user_id"]

    async def learn_and_snapshot() -> tuple[MemoryStateStore, MemoryItemLog]:
        store, log = MemoryStateStore(), MemoryItemLog(settings.item_partitions)
        a, b = Learner(settings, store), Learner(settings, store)
        syncs = [ItemSync(settings, a.exchange, log), ItemSync(settings, b.exchange, log)]
        for sync in syncs:
            await sync.start()
        syncs[0].assigned(set(range(settings.item_partitions)))
        await _learn_and_exchange(a, b, syncs, world_events, binge)
        await syncs[0].snapshot_step(None)  # A read its pairs back: they are below the fences
        for sync in syncs:
            await sync.stop()
        return store, log

    async def restart(store: MemoryStateStore, log: MemoryItemLog) -> tuple[list[str], float]:
        b = Learner(settings, store)
        sync = ItemSync(settings, b.exchange, log)
        await sync.start()
        rows = b.model.item_index([x, y]).tolist()
        strongest = dict(b.model.session.covisit.neighbours_of(rows[0])).get(rows[1], 0.0)
        b.process(_messages([watch], 1, 10**6))
        lists = b.recommendations([reader])[reader]
        await sync.stop()
        return [item for item, _ in lists], strongest

    async def run() -> tuple[tuple[list[str], float], tuple[list[str], float]]:
        store, log = await learn_and_snapshot()
        fences = dict(filter(None, (parse_fence(key, value) for key, value in log.state.items())))
        assert [fences[p].offset for p in range(len(log.updates))] == [len(r) - 1 for r in log.updates]  # no replay
        without = MemoryItemLog(settings.item_partitions)
        without.updates = [list(records) for records in log.updates]
        without.state = {key: value if key.startswith(FENCE_KEY_PREFIX) else
                         encode_item(dataclasses.replace(decode_item(value), neighbours=(), covisit_counts=()))
                         for key, value in log.state.items()}
        return await restart(store, log), await restart(store, without)

    (with_rows, count), (without_rows, no_count) = asyncio.run(run())
    assert (count, no_count) == (40.0, 0.0)
    assert y in with_rows and y not in without_rows, (with_rows, without_rows)


def test_pairs_naming_an_item_whose_proposal_comes_later_wait_for_it():
    log, a = Log(), Replica("a")
    a.learn(stream(1500))
    log.publish(a)  # every item new: pairs name items proposed in other partitions' records
    log.deliver(a)
    b, small = Replica("b"), Replica("small")
    small.exchange.max_waiting_pairs = 10
    for replica in (b, small):  # the last partition first: its pairs name items of the others, unread yet
        for partition in reversed(range(PARTITIONS)):
            for offset, value in enumerate(log.partitions[partition]):
                replica.exchange.apply(partition, offset, value, now_ms=0)
            if partition == PARTITIONS - 1:
                assert replica.exchange.waiting_pairs + replica.exchange.pairs_dropped > 0
    assert b.exchange.waiting_pairs == b.exchange.pairs_dropped == 0
    assert covisits(b, False) == covisits(a, False)
    assert small.exchange.pairs_dropped > 0  # too many waited: the oldest were dropped, counted
    assert small.exchange.pairs_applied + small.exchange.pairs_dropped == a.exchange.pairs_sent
