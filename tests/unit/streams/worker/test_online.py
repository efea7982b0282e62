"""Online quality (streams.worker.online): events checked against the list last cached for their user."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson

from streams.worker.metrics import HealthCounters
from streams.worker.online import CachedLists
from tests.unit.streams.worker.support import SETTINGS, TP, messages
from tests.unit.streams.worker.test_service import FakeWriter, make_service

TP0 = TP(SETTINGS.events_topic, 0)


def ranked(first: int, n: int = 50) -> np.ndarray:
    """One list of ``n`` item indices, best first: first, first + 1, ..."""
    return np.arange(first, first + n)[None, :]


def test_hits_at_10_and_50_count_the_position_of_the_item_in_the_list():
    lists = CachedLists()
    lists.remember(["u"], ranked(100), written_ms=0)
    # ranks 0, 9 (hit@10), 10, 49 (hit@50 only), not in the list
    check = lists.check(["u"] * 5, np.array([100, 109, 110, 149, 150]), np.zeros(5, np.int64))
    assert (check.checked, check.hits_short, check.hits_long) == (5, 2, 4)


def test_users_without_a_cached_list_are_not_checked():
    lists = CachedLists()
    assert lists.check(["u1"], np.array([1]), np.array([5])).checked == 0  # nothing cached at all
    lists.remember(["u1"], ranked(0), written_ms=0)
    check = lists.check(["u2", "u1", "u3"], np.array([1, 1, 1]), np.array([5, 5, 5]))
    assert (check.checked, check.hits_long, check.ages_ms.tolist()) == (1, 1, [5])


def test_list_age_is_event_time_minus_written_time_clamped_at_zero():
    lists = CachedLists()
    lists.remember(["a"], ranked(0), written_ms=10_000)
    lists.remember(["b"], ranked(0), written_ms=20_000)
    check = lists.check(["a", "b", "a"], np.array([0, 0, 0]), np.array([12_500, 19_000, 10_000]))
    assert check.ages_ms.tolist() == [2_500, 0, 0]


def test_a_users_new_list_replaces_the_old_one():
    lists = CachedLists()
    lists.remember(["u", "v"], np.vstack([ranked(0), ranked(500)]), written_ms=1_000)
    lists.remember(["u"], ranked(200), written_ms=3_000)
    check = lists.check(["u", "u", "v"], np.array([5, 205, 505]), np.array([4_000, 4_000, 4_000]))
    assert (check.checked, check.hits_long) == (3, 2)  # u's old item 5 is no longer a hit; v kept its list
    assert check.ages_ms.tolist() == [1_000, 1_000, 3_000]


def test_short_lists_are_padded_and_unknown_items_never_hit_the_padding():
    lists = CachedLists()
    lists.remember(["u"], np.array([[3, 4, -1]]), written_ms=0)  # fewer items than its width
    lists.remember(["v"], np.array([[7]]), written_ms=0)  # narrower than depth: the rest is padding
    check = lists.check(["u", "u", "v", "v"], np.array([4, -1, 7, -1]), np.zeros(4, np.int64))
    assert (check.checked, check.hits_short, check.hits_long) == (4, 2, 2)


def test_item_ids_are_looked_up_only_for_the_events_checked():
    lists = CachedLists()
    lists.remember(["u"], ranked(0), written_ms=0)
    looked_up: list[list[str]] = []

    def item_index(ids):
        looked_up.append(list(ids))
        return np.array([int(i[1:]) for i in ids])

    check = lists.check(["x", "u", "y"], ["i999", "i3", "i998"], np.zeros(3, np.int64), item_index=item_index)
    assert looked_up == [["i3"]] and check.hits_short == 1


def test_forgotten_users_are_not_checked_and_their_slots_are_reused():
    lists = CachedLists(depth=4)
    lists.remember([f"u{k}" for k in range(3)], np.tile(np.arange(4), (3, 1)), written_ms=0)
    assert lists.forget(["u1", "nobody"]) == 1 and sorted(lists.users()) == ["u0", "u2"]
    assert lists.check(["u1"], np.array([0]), np.array([0])).checked == 0
    lists.remember(["u9"], np.array([[8, 9, 10, 11]]), written_ms=0)  # takes u1's slot
    assert len(lists) == 3 and lists._items.shape[0] == 1024
    check = lists.check(["u0", "u9"], np.array([0, 11]), np.zeros(2, np.int64))
    assert check.hits_long == 2


def test_the_health_record_reports_online_quality_and_resets():
    lists = CachedLists()
    lists.remember(["u"], ranked(0), written_ms=1_000)
    health = HealthCounters(worker_id="w", started_ms=0)
    health.online(lists.check(["u"] * 4, np.array([1, 20, 60, 70]), np.array([2_000, 3_000, 5_000, 900])))
    record = health.record(now_ms=10_000)
    assert (record["online_checked"], record["online_hit_at_10"], record["online_hit_at_50"]) == (4, 0.25, 0.5)
    assert record["online_list_age_ms_p50"] == 1_500.0  # ages 1000, 2000, 4000, 0
    empty = health.record(now_ms=20_000)
    assert empty["online_checked"] == 0
    assert empty["online_hit_at_10"] is empty["online_hit_at_50"] is empty["online_list_age_ms_p50"] is None


def _health(sent: dict) -> dict:
    return [r for r in map(orjson.loads, sent["metrics"]) if r["type"] == "health"][-1]


def test_the_service_checks_each_event_against_the_list_written_before_its_batch():
    writer = FakeWriter()
    service, sent = make_service(writer)
    first = [{"event_id": f"a{k}", "user_id": f"u{k}", "item_id": f"i{k}", "kind": "view", "ts": 1_700_000_000_000}
             for k in range(30)]

    async def run():
        await service.on_partitions_assigned({TP0})
        await service.handle(messages(first))  # every user gets a list (10 items: SETTINGS.top_n)
        lists = {u: [i for i, _ in recs] for u, recs in writer.written.items()}
        # u0 engages the top item of their list, u1 its last, u2 one not in it; u99 has no list
        outside = next(f"i{k}" for k in range(30) if f"i{k}" not in lists["u2"] and k != 2)
        second = [("u0", lists["u0"][0]), ("u1", lists["u1"][-1]), ("u2", outside), ("u99", "i0")]
        await service.handle(messages([
            {"event_id": f"b{k}", "user_id": u, "item_id": i, "kind": "view", "ts": 1_700_000_000_000}
            for k, (u, i) in enumerate(second)], first_offset=30))
        await service.emit_health(1_700_000_100_000)

    asyncio.run(run())
    record = _health(sent)
    assert record["online_checked"] == 3  # the users with a cached list
    assert record["online_hit_at_10"] == record["online_hit_at_50"] == round(2 / 3, 4)  # lists of 10: both agree
    assert record["online_list_age_ms_p50"] == 0  # the events' ts are older than the lists
    assert record["cpu_us_per_event"]["online"] >= 0


def test_lists_not_written_are_not_remembered_and_revoked_users_are_forgotten():
    writer = FakeWriter()
    service, sent = make_service(writer)
    n = SETTINGS.partitions
    events = [{"event_id": f"a{k}", "user_id": f"u{k}", "item_id": f"i{k % 7}", "kind": "view",
               "ts": 1_700_000_000_000} for k in range(40)]

    async def run():
        await service.on_partitions_assigned({TP(SETTINGS.events_topic, p) for p in range(n)})
        writer.down = True  # nothing reaches Redis: nothing is cached
        await service.handle(messages(events))
        assert len(service.learner.cached_lists) == 0
        writer.down, service.redis_retry_at = False, 0
        await service.refresh()
        assert len(service.learner.cached_lists) == 40
        await service.on_partitions_revoked({TP(SETTINGS.events_topic, 0)})

    asyncio.run(run())
    from streams.events import kafka_partition

    kept = service.learner.cached_lists.users()
    assert kept and all(kafka_partition(u.encode(), n) != 0 for u in kept)
    assert len(kept) == sum(kafka_partition(e["user_id"].encode(), n) != 0 for e in events)
