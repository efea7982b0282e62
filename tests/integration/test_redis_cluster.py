"""Redis Cluster: the packed writer routes by slot, readers use MGET per slot, against a real 3-node cluster.

The cluster is the session fixture ``redis_cluster`` (3 primaries started by ``streams.tools.dev.start_redis_cluster``);
tests that stop their cluster start one of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import pytest
import redis
from redis.crc import key_slot

from streams.client import AsyncRecsReader, RecsReader
from streams.io.redis import RecsWriter, async_redis, encode_list
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from tests.integration.helpers import produce, wait_for

pytestmark = pytest.mark.integration


def _node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


def _slot_owners(port: int) -> dict[int, int]:
    """Slot -> port of the primary owning it, as the node on ``port`` sees the cluster."""
    client = _node(port)
    try:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    finally:
        client.close()
    if isinstance(ranges, dict):  # redis-py's parsed form: {(start, end): {"primary": (host, port), ...}}
        return {slot: int(info["primary"][1]) for (start, end), info in ranges.items()
                for slot in range(start, end + 1)}
    return {slot: int(r[2][1]) for r in ranges for slot in range(int(r[0]), int(r[1]) + 1)}


def _keys_on_node(port: int, prefix: str) -> dict[bytes, bytes]:
    """Every key of ``prefix`` stored on the node on ``port`` (asked of that node alone), with its value."""
    client = _node(port)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        pipe = client.pipeline(transaction=False)  # GET by GET: a cluster node refuses MGET across slots
        for key in keys:
            pipe.get(key)
        return dict(zip(keys, pipe.execute()))
    finally:
        client.close()


def _node_id(port: int) -> str:
    client = _node(port)
    try:
        return client.execute_command("CLUSTER", "MYID").decode()
    finally:
        client.close()


def _start_migration(slot: int, source: int, target: int) -> None:
    """Mark ``slot`` as moving from the node on ``source`` to the node on ``target``, as redis-cli's reshard does."""
    src, dst = _node(source), _node(target)
    try:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target))
    finally:
        src.close()
        dst.close()


def _finish_migration(slot: int, source: int, target: int, ports: list[int]) -> None:
    """MIGRATE the slot's remaining keys to the target, then give the slot to the target on every node."""
    src = _node(source)
    try:
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    finally:
        src.close()
    target_id = _node_id(target)
    for port in [target, source, *(p for p in ports if p not in (source, target))]:
        client = _node(port)
        try:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            client.close()
    wait_for(lambda: all(_slot_owners(p)[slot] == target for p in ports), timeout=10)


def _lists(n: int, seed: int) -> tuple[list[str], list[list[str]], np.ndarray]:
    rng = np.random.default_rng(seed)
    users = [f"u{j}" for j in range(n)]
    items = [[f"i{k}" for k in rng.integers(0, 10_000, 20)] for _ in users]
    return users, items, rng.standard_normal((n, 20)).astype(np.float32)


def test_cluster_writer_stores_each_key_on_its_slot_owner_with_the_single_node_bytes_and_ttl_across_all_three_nodes(
    make_settings, redis_cluster
):
    single = make_settings(rec_ttl_s=1234)
    clustered = make_settings(redis_url=redis_cluster.url, redis_cluster=True, redis_prefix=single.redis_prefix,
                              rec_ttl_s=1234)
    rng = np.random.default_rng(1)
    users = [f"user-{j}" for j in range(3_456)]  # four chunks of packed commands
    items = [[f"i{k}" for k in rng.integers(0, 10_000, 50)] for _ in users]
    scores = rng.standard_normal((len(users), 50)).astype(np.float32)
    popular = [("p1", 3.0), ("p2", 2.123456)]
    by_tag = {f"tag{t}": [(f"t{t}-a", 1.5), (f"t{t}-b", 0.25)] for t in range(40)}
    keys = [single.rec_key(u) for u in users] + [single.popular_key] + [single.tag_popular_key(t) for t in by_tag]

    async def write_and_read(settings: Any) -> list[bytes | None]:
        client = async_redis(settings)
        try:
            await RecsWriter(client, settings).write_lists(users, items, scores, popular=popular, model_version="m1",
                                                           updated_ms=99, popular_by_tag=by_tag)
            return await (client.mget_nonatomic(keys) if settings.redis_cluster else client.mget(keys))
        finally:
            await client.aclose()

    expected = asyncio.run(write_and_read(single))
    assert None not in expected
    assert asyncio.run(write_and_read(clustered)) == expected  # read back through the cluster client
    owners = _slot_owners(redis_cluster.ports[0])
    by_key = dict(zip((k.encode() for k in keys), expected))
    stored: dict[bytes, bytes] = {}
    for port in redis_cluster.ports:
        on_node = _keys_on_node(port, single.redis_prefix)
        assert on_node, f"no list on the node on port {port}"
        assert all(owners[key_slot(key)] == port for key in on_node), "a key on a node that does not own its slot"
        stored.update(on_node)
    assert stored == by_key  # every key once, on its owner, with the single-node writer's bytes
    for port in redis_cluster.ports:
        client = _node(port)
        try:
            some_key = next(iter(_keys_on_node(port, single.redis_prefix)))
            assert 1200 < client.ttl(some_key) <= 1234
        finally:
            client.close()


def test_worker_caches_every_affected_users_list_across_the_cluster_and_unknown_users_get_popular_tag_or_popular(
    make_settings, start_worker, redis_cluster
):
    settings = make_settings(redis_url=redis_cluster.url, redis_cluster=True)
    world = SyntheticWorld(WorldConfig(users=400, items=300, creators=50, communities=6, seed=21))
    worker = start_worker(settings)
    events = list(world.events(5_000, start_ms=int(time.time() * 1000) - 60_000))
    produce(settings, events)
    wait_for(lambda: (worker.status() or {}).get("events_total", 0) >= len(events), timeout=90)
    wait_for(lambda: (worker.status() or {}).get("pending_users", 1) == 0, timeout=90)

    users = sorted({e["user_id"] for e in events})
    tag = next(t for e in events for t in e.get("tags", ()))
    reader = RecsReader(settings)
    try:
        recs = {u: reader.get(u, n=10) for u in users}
        assert {r.source for r in recs.values()} == {"personal"}
        assert all(len(r.items) == 10 and r.model_version for r in recs.values())
        # the trending lists are written once a second: the last ones may come after the users' lists
        wait_for(lambda: reader.get("nobody-has-seen-me", tags=[tag]).source == "popular_tag", timeout=30)
        newcomer = reader.get("nobody-has-seen-me", n=5, tags=[tag])
        assert newcomer.source == "popular_tag" and newcomer.items
        assert reader.get("nobody-has-seen-me", n=5).source == "popular"
        assert all(tag in world.item_tags(i) for i in newcomer.items)
    finally:
        reader.close()
    per_node = [_keys_on_node(port, f"{settings.redis_prefix}:rec") for port in redis_cluster.ports]
    assert all(per_node), "the users' lists are spread over all three nodes"
    assert sum(map(len, per_node)) == len(users)


def test_list_whose_slot_moved_to_another_node_between_two_writes_is_written_on_the_new_owner(
    make_settings, redis_cluster, caplog
):
    settings = make_settings(redis_url=redis_cluster.url, redis_cluster=True)
    users, items, scores = _lists(600, seed=2)
    key = settings.rec_key(users[0])
    slot = key_slot(key.encode())
    owners = _slot_owners(redis_cluster.ports[0])
    source = owners[slot]
    target = next(p for p in redis_cluster.ports if p != source)

    async def run() -> None:
        client = async_redis(settings)
        writer = RecsWriter(client, settings)
        try:
            await writer.write_lists(users, items, scores, popular=None, model_version="m1", updated_ms=1)
            _start_migration(slot, source, target)
            _finish_migration(slot, source, target, redis_cluster.ports)  # the list moves with its slot
            assert client.get_node_from_key(key).port == source  # the writer's slot map is now out of date
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="streams.io.redis"):
                await writer.write_lists(users, items[::-1], scores, popular=None, model_version="m2", updated_ms=2)
            assert any("redirected" in r.getMessage() for r in caplog.records)  # the old owner answered MOVED
            assert client.get_node_from_key(key).port == target  # the slot map was read again
            want = [encode_list(list(zip(i, s.tolist())), source="personal", updated_ms=2, model_version="m2",
                                user_id=u) for u, i, s in zip(users, items[::-1], scores)]
            assert await client.mget_nonatomic([settings.rec_key(u) for u in users]) == want
        finally:
            await client.aclose()

    asyncio.run(run())
    assert b'"model_version":"m2"' in _keys_on_node(target, settings.redis_prefix)[key.encode()]
    assert key.encode() not in _keys_on_node(source, settings.redis_prefix)


def test_list_of_a_slot_being_migrated_is_written_on_the_importing_node_when_the_old_owner_answers_ask(
    make_settings, redis_cluster, caplog
):
    settings = make_settings(redis_url=redis_cluster.url, redis_cluster=True)
    users, items, scores = _lists(300, seed=3)
    key = settings.rec_key(users[0])
    slot = key_slot(key.encode())
    source = _slot_owners(redis_cluster.ports[0])[slot]
    target = next(p for p in redis_cluster.ports if p != source)

    async def run() -> None:
        client = async_redis(settings)
        writer = RecsWriter(client, settings)
        try:
            await writer.write_lists(users[1:], items[1:], scores[1:], popular=None, model_version="m1",
                                     updated_ms=1)  # reads the slot map; users[0] has no list yet
            _start_migration(slot, source, target)  # the old owner does not have the key: it answers ASK
            try:
                with caplog.at_level(logging.INFO, logger="streams.io.redis"):
                    await writer.write_lists(users, items, scores, popular=None, model_version="m1", updated_ms=1)
                assert any("redirected" in r.getMessage() for r in caplog.records)
            finally:
                _finish_migration(slot, source, target, redis_cluster.ports)
            want = [encode_list(list(zip(i, s.tolist())), source="personal", updated_ms=1, model_version="m1",
                                user_id=u) for u, i, s in zip(users, items, scores)]
            assert await client.mget_nonatomic([settings.rec_key(u) for u in users]) == want
        finally:
            await client.aclose()

    asyncio.run(run())
    assert key.encode() in _keys_on_node(target, settings.redis_prefix)


def test_readers_answer_unavailable_and_the_writer_raises_a_redis_error_when_the_cluster_is_down(tmp_path):
    from streams.settings import Settings
    from streams.tools.dev import start_redis_cluster

    cluster = start_redis_cluster(tmp_path)
    try:
        settings = Settings(redis_url=cluster.url, redis_cluster=True, redis_prefix="down")

        async def write(updated_ms: int) -> None:
            client = async_redis(settings)
            try:
                await RecsWriter(client, settings).write({"u1": [("a", 0.9)]}, popular=[("p", 1.0)],
                                                         model_version="m", updated_ms=updated_ms)
            finally:
                await client.aclose()

        asyncio.run(write(5))
        reader = RecsReader(settings)
        assert reader.get("u1").source == "personal"
        assert reader.get("stranger").source == "popular"
        cluster.stop()

        recs = reader.get("u1")
        assert (recs.source, recs.items, recs.updated_ms) == ("unavailable", ["p"], 5)  # the last popular list seen
        assert recs.error
        reader.close()
        fresh = RecsReader(settings)  # building a cluster client while no node answers
        assert fresh.get("u1").source == "unavailable"
        fresh.close()

        async def read_async() -> str:
            async_reader = AsyncRecsReader(settings)
            try:
                return (await async_reader.get("u1")).source
            finally:
                await async_reader.close()

        assert asyncio.run(read_async()) == "unavailable"
        with pytest.raises(redis.RedisError):
            asyncio.run(write(6))
    finally:
        cluster.stop()
