"""Several workers, one recommender: the item model, the catalog and popularity are the group's.

Real workers (child processes) on a real broker and Redis. Each worker owns the users of its
events partitions; what any worker learns about items reaches the others (streams.worker.exchange).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import orjson
import pytest

from models import Popularity, event_weights
from streams.events import kafka_partition
from streams.io.redis import sync_redis
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from tests.integration.helpers import produce, read_recs, wait_for
from tests.integration.oracle import Expected, wait_for_oracle
from tests.integration.test_faults import Producer

pytestmark = pytest.mark.integration


def _now_ms() -> int:
    return int(time.time() * 1000)


def start_group(settings: Any, start_worker: Any, n: int) -> list[Any]:
    """``n`` workers of one group, returned once the partitions are split among all of them."""
    workers = [start_worker(dataclasses.replace(settings, worker_id=f"{settings.worker_id}-{k}"), f"w{k}")
               for k in range(n)]

    def settled() -> bool:
        owned = [set((w.status() or {}).get("partitions") or ()) for w in workers]
        return all(owned) and sum(map(len, owned)) == settings.partitions and set().union(*owned) == set(
            range(settings.partitions))

    wait_for(settled, timeout=60)
    return workers


def partitions_of(worker: Any) -> set[int]:
    return set((worker.status() or {}).get("partitions") or ())


def wait_processed(workers: list[Any], n: int, timeout: float = 90) -> None:
    wait_for(lambda: sum(int((w.status() or {}).get("events_total") or 0) for w in workers) >= n, timeout=timeout)


def test_an_item_engaged_only_by_one_workers_users_enters_the_list_of_the_other_workers_user(
    make_settings, start_worker
):
    settings = make_settings()
    a, b = start_group(settings, start_worker, 2)
    world = SyntheticWorld(WorldConfig(users=600, items=300, creators=60, communities=6, seed=31))
    background = list(world.events(15_000, start_ms=_now_ms() - 60_000, rate_per_s=400))
    produce(settings, background)
    wait_processed([a, b], len(background))
    n, owned_a, owned_b = settings.partitions, partitions_of(a), partitions_of(b)
    community = world.user_top_communities(world.user_ids[0], 1)[0]
    fans = [u for u in world.user_ids if world.user_top_communities(u, 1)[0] == community]
    fans_a = [u for u in fans if kafka_partition(u.encode(), n) in owned_a]
    fans_b = [u for u in fans if kafka_partition(u.encode(), n) in owned_b]
    assert len(fans_a) >= 20 and fans_b
    new_item, reader = "only-on-a", fans_b[0]
    now = _now_ms()
    binges = [
        {"event_id": f"new-{u}-{kind}", "user_id": u, "item_id": new_item, "kind": kind, "ts": now + k,
         "creator_id": "c-new", "tags": [community]}
        for k, u in enumerate(fans_a[:40]) for kind in ("view", "like", "share")
    ]
    produce(settings, binges)
    wait_processed([a, b], len(background) + len(binges))

    # The reader's list is refreshed at their next events; the new item must be in it by then.
    def reader_sees_the_item() -> bool:
        nudge = world.engage(reader, community, n_items=1, start_ms=_now_ms())
        produce(settings, [dict(e, event_id=f"{e['event_id']}-{time.monotonic_ns()}") for e in nudge])
        time.sleep(1.0)
        return new_item in read_recs(settings, reader).items

    wait_for(reader_sees_the_item, timeout=45, interval=0.5)


def popularity_of(settings: Any, events: list[dict[str, Any]]) -> Popularity:
    """What one model learning every event would rank: the popular lists must say the same."""
    pop = Popularity(half_life_s=settings.popular_half_life_s)
    weights = event_weights([e["kind"] for e in events], np.array([e.get("watch_ms", -1) for e in events], float),
                            kind_weights=settings.kind_weights)
    pop.learn_batch([e["user_id"] for e in events], [e["item_id"] for e in events], weights,
                    ts_ms=[e["ts"] for e in events], item_tags=[e.get("tags") for e in events])
    return pop


def list_matches(raw: bytes | None, expected: list[tuple[str, float]], scores: dict[str, float]) -> bool:
    """The cached list holds the expected top items: the same scores (float sums in another order) and no
    item ranked below the expected last one (ties at the boundary may swap)."""
    if raw is None:
        return False
    cached = orjson.loads(raw)
    if len(cached["items"]) != len(expected):
        return False
    floor = expected[-1][1] * (1 - 1e-6)
    return all(scores.get(i, -1.0) >= floor and abs(s - scores[i]) <= 1e-4 * max(abs(scores[i]), 1.0)
               for i, s in zip(cached["items"], cached["scores"]))


def test_popular_lists_are_the_whole_groups_whichever_worker_writes_them(make_settings, start_worker):
    """Two workers; the popular lists must equal one model's over every event, also after the worker that
    writes them is SIGKILLed while events flow (its successor replays its unfenced events, whose item
    changes it had published already: counted once)."""
    settings = make_settings()
    workers = start_group(settings, start_worker, 2)
    world = SyntheticWorld(WorldConfig(users=800, items=400, creators=60, communities=6, seed=32))
    redis = sync_redis(settings)

    def lists_agree(events: list[dict[str, Any]]) -> bool:
        pop = popularity_of(settings, events)
        scores = dict(zip(pop.item_ids, pop.score("").tolist()))
        keys = [settings.popular_key, *(settings.tag_popular_key(t) for t in world.communities)]
        expected = [pop.top_n("", settings.top_n), *(pop.top_n_for_tags([t], settings.top_n) for t in world.communities)]
        return all(list_matches(raw, want, scores) for raw, want in zip(redis.mget(keys), expected))

    events = list(world.events(12_000, start_ms=_now_ms() - 30_000, rate_per_s=400))
    produce(settings, events)
    wait_processed(workers, len(events))
    wait_for(lambda: lists_agree(events), timeout=30)

    writer = next(w for w in workers if 0 in partitions_of(w))
    survivor = next(w for w in workers if w is not writer)
    more = list(world.events(12_000, start_ms=_now_ms(), rate_per_s=400))
    producer = Producer(settings, more, chunks=24, pause_s=0.25)
    producer.start()
    time.sleep(2.0)
    writer.kill()  # mid-stream: the survivor takes partition 0 over, with the popular lists
    producer.finish()
    wait_for(lambda: partitions_of(survivor) == set(range(settings.partitions)), timeout=60)
    wait_for_oracle(settings, Expected.of(events + more))
    wait_for(lambda: lists_agree(events + more), timeout=30)
    redis.close()


def hit_rate(settings: Any, users: list[str], history: dict[str, set[str]], later: list[dict[str, Any]]) -> float:
    """HR@top_n of the cached lists of ``users`` against their later events (items not engaged before)."""
    reader = sync_redis(settings)
    lists = dict(zip(users, reader.mget([settings.rec_key(u) for u in users])))
    reader.close()
    hits = total = 0
    for event in later:
        raw = lists.get(event["user_id"])
        if raw is None or event["item_id"] in history.get(event["user_id"], ()):
            continue
        total += 1
        hits += event["item_id"] in orjson.loads(raw)["items"]
    assert total >= 300
    return hits / total


def test_a_restarted_workers_users_keep_the_quality_of_their_lists(make_settings, start_worker):
    """Seeded: the restarted worker's users reach at least 0.9x the HR@50 of the other worker's users
    (0.98x when written; a restart that restored a patchwork of latent spaces lost up to 21 %)."""
    settings = make_settings(item_snapshot_interval_s=2.0)
    a, b = start_group(settings, start_worker, 2)
    world = SyntheticWorld(WorldConfig(users=1500, items=500, creators=80, communities=8, seed=33))
    stream = list(world.events(36_000, start_ms=_now_ms() - 120_000, rate_per_s=400))
    train, later = stream[:30_000], stream[30_000:]
    produce(settings, train[:15_000])
    wait_processed([a, b], 15_000)
    time.sleep(3)  # item snapshots written: the restart restores them, then replays the log after them
    b.kill()
    b = start_worker(b.settings, "w1-again")
    produce(settings, train[15_000:])
    wait_for_oracle(settings, Expected.of(train))  # every event counted: learned too
    wait_for(lambda: sum(int((w.status() or {}).get("pending_users") or 0) for w in (a, b)) == 0, timeout=60)
    time.sleep(2)
    history: dict[str, set[str]] = {}
    for e in train:
        history.setdefault(e["user_id"], set()).add(e["item_id"])
    n = settings.partitions
    of_b = partitions_of(b)
    users_a = sorted(u for u in history if kafka_partition(u.encode(), n) not in of_b)
    users_b = sorted(u for u in history if kafka_partition(u.encode(), n) in of_b)
    later_a = [e for e in later if e["user_id"] in set(users_a)]
    later_b = [e for e in later if e["user_id"] in set(users_b)]
    hr_a, hr_b = hit_rate(settings, users_a, history, later_a), hit_rate(settings, users_b, history, later_b)
    print(f"HR@{settings.top_n}: kept worker's users {hr_a:.3f}, restarted worker's users {hr_b:.3f}")
    assert hr_b >= 0.9 * hr_a
