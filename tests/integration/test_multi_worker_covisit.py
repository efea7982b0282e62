"""Co-visit counts are the group's: what one worker's users watch one after the other pulls items into the
lists of another worker's users (real broker, worker processes and Redis)."""

from __future__ import annotations

import time

import pytest

from streams.events import kafka_partition
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from tests.integration.helpers import produce, read_recs, wait_for
from tests.integration.test_multi_worker import partitions_of, start_group, wait_processed

pytestmark = pytest.mark.integration


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_a_pair_only_one_workers_users_co_visit_pulls_into_the_other_workers_users_list(make_settings, start_worker):
    """New fans on worker A watch x then y; a user of worker B watches x: y leads their list, though no user of
    B ever watched x then y. The session pull is made to outweigh the factors (the pull is in units of the
    user's score spread, and this user's best factor scores are ~15 of them), so the list's head shows the
    counts alone; tests/unit/streams/worker/test_exchange_covisit.py compares with and without the pairs
    at the default weight."""
    settings = make_settings(session_covisit_weight=50.0, top_n=10)
    a, b = start_group(settings, start_worker, 2)
    world = SyntheticWorld(WorldConfig(users=600, items=300, creators=60, communities=6, seed=34))
    background = list(world.events(10_000, start_ms=_now_ms() - 60_000, rate_per_s=400))
    produce(settings, background)
    wait_processed([a, b], len(background))
    n, owned_a, owned_b = settings.partitions, partitions_of(a), partitions_of(b)
    # new users, so that x and y are each other's only co-visits (a fan's earlier items would pair with x too)
    fans = [u for u in (f"pair-fan-{j}" for j in range(400)) if kafka_partition(u.encode(), n) in owned_a][:40]
    active = {e["user_id"] for e in background}
    reader = next(u for u in world.user_ids if u in active and kafka_partition(u.encode(), n) in owned_b)
    x, y, now = "pair-x", "pair-y", _now_ms()
    binge = [{"event_id": f"{u}-{item}", "user_id": u, "item_id": item, "kind": "view", "ts": now + 2 * k + j,
              "creator_id": "c-pair", "tags": []}
             for k, u in enumerate(fans) for j, item in enumerate((x, y))]
    produce(settings, binge)
    wait_processed([a, b], len(background) + len(binge))
    time.sleep(2 * settings.item_exchange_interval_s + 1)  # A's pairs published and read by B

    written = read_recs(settings, reader).updated_ms or 0
    produce(settings, [{"event_id": "reader-x", "user_id": reader, "item_id": x, "kind": "view", "ts": _now_ms(),
                        "creator_id": "c-pair", "tags": []}])
    wait_for(lambda: (read_recs(settings, reader).updated_ms or 0) > written, timeout=30, interval=0.5)
    items = read_recs(settings, reader).items
    assert x not in items and items[0] == y, items
