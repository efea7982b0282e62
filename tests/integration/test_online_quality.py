"""Online quality on two real workers: each checks its own users' events against the lists it cached.

Events whose item is the top of the user's cached list (read back from Redis) must come back in
the health records of the worker that owns the user as online hits at 10.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from streams.events import kafka_partition
from streams.io.redis import sync_redis
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from tests.integration.helpers import consume, metric_records, produce, wait_for
from tests.integration.test_multi_worker import partitions_of, start_group, wait_processed

pytestmark = pytest.mark.integration


def _now_ms() -> int:
    return int(time.time() * 1000)


def _totals(records: list[dict[str, Any]], worker_id: str, since_ms: int = 0) -> dict[str, float]:
    """A worker's online figures summed over its health records ending after ``since_ms`` (hits back from
    the per-window ratios)."""
    mine = [r for r in records if r.get("type") == "health" and r["worker_id"] == worker_id and r["online_checked"]
            and r["window_end_ms"] > since_ms]
    return {
        "checked": sum(r["online_checked"] for r in mine),
        "hits_10": sum(round(r["online_hit_at_10"] * r["online_checked"]) for r in mine),
        "hits_50": sum(round(r["online_hit_at_50"] * r["online_checked"]) for r in mine),
        "max_age_p50": max((r["online_list_age_ms_p50"] for r in mine), default=-1),
    }


def test_two_workers_report_the_hits_of_events_on_their_users_cached_lists(make_settings, start_worker):
    settings = make_settings()
    workers = start_group(settings, start_worker, 2)
    world = SyntheticWorld(WorldConfig(users=300, items=200, creators=30, communities=4, seed=41))
    background = list(world.events(6_000, start_ms=_now_ms() - 60_000, rate_per_s=400))
    produce(settings, background)
    wait_processed(workers, len(background))
    wait_for(lambda: sum(int((w.status() or {}).get("pending_users") or 0) for w in workers) == 0, timeout=60)

    # Every user's next event is the top item of the list their worker cached last.
    users = sorted({e["user_id"] for e in background})
    redis = sync_redis(settings)
    cached = {u: orjson.loads(raw)["items"] for u, raw in zip(users, redis.mget([settings.rec_key(u) for u in users]))
              if raw is not None}
    redis.close()
    time.sleep(settings.metrics_window_s + 0.5)  # the next events fall in health windows of their own
    now = _now_ms()
    nexts = [{"event_id": f"next-{u}", "user_id": u, "item_id": items[0], "kind": "view", "ts": now}
             for u, items in cached.items() if items]
    n, owned = settings.partitions, [partitions_of(w) for w in workers]
    per_worker = [sum(kafka_partition(e["user_id"].encode(), n) in parts for e in nexts) for parts in owned]
    assert min(per_worker) >= 20, per_worker
    produce(settings, nexts)
    wait_processed(workers, len(background) + len(nexts))

    ids = [w.settings.worker_id for w in workers]

    # only the health windows that end after the planted events were sent: the background's own hits
    # (a synthetic user's next item is often in their list) must not stand in for them
    def all_reported(records: list[Any]) -> bool:
        parsed = metric_records(records)
        return all(_totals(parsed, wid, now)["hits_10"] >= want for wid, want in zip(ids, per_worker))

    records = metric_records(consume(settings, settings.metrics_topic, all_reported, timeout=60))
    for wid, want in zip(ids, per_worker):
        t = _totals(records, wid, now)
        print(f"{wid}: {t}")
        assert t["checked"] >= want > 0
        # the planted hits, plus the background's own (a synthetic user's next item is often in their list)
        assert want <= t["hits_10"] <= t["hits_50"] <= t["checked"]
        # their lists were written before the pause: seconds old, not minutes
        assert 1_000 <= t["max_age_p50"] < 120_000
