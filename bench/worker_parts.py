"""Per-event / per-list cost of three worker parts, the plain way beside the worker's, on one process.

    python bench/worker_parts.py                 # ~30 s; starts its own redis-server on a free port
    python bench/worker_parts.py --no-redis      # metrics and state codecs only
    git show 615feda:streams/metrics.py > /tmp/dict_metrics.py
    python bench/worker_parts.py --metrics-module /tmp/dict_metrics.py   # windows of per-event dicts and sets

1. ``EngagementWindows``: 200k synthetic events (100k users, 20k items) in batches of 5,000,
   ``close_due`` after each batch (10 s windows, 2 s grace); µs per event of ``add(events)``,
   ``add_columns`` (columns built untimed) and of closing.
2. ``RecsWriter``: 5,000 lists of 50 items + 50 scores (~1 KB values) per call against a real
   ``redis-server`` (``--redis-server`` path): a plain redis-py pipeline of SET EX with
   ``encode_list``, MULTI + MSET + EXPIREs, one EVALSHA Lua script per chunk of 5,000 keys,
   and ``write_lists`` (own RESP packing, one read of all replies). µs per list, end to end
   in the client (encoding included), median of 7 calls.
3. State codecs: ``encode_user`` / ``encode_item`` per row against ``encode_users`` /
   ``encode_items`` for 5,000 rows of k = 64.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.events import KINDS, Event  # noqa: E402
from streams.tools.synthetic import SyntheticWorld, WorldConfig  # noqa: E402


def median_us(fn: Callable[[], Any], n: int, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / n * 1e6


def bench_metrics(module_path: str | None) -> None:
    if module_path:
        spec = importlib.util.spec_from_file_location("metrics_under_test", module_path)
        assert spec and spec.loader
        metrics = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = metrics
        spec.loader.exec_module(metrics)
    else:
        import streams.worker.metrics as metrics
    world = SyntheticWorld(WorldConfig(users=100_000, items=20_000, seed=1))
    events = [Event(d["event_id"], d["user_id"], d["item_id"], d["kind"], d["ts"], d.get("watch_ms"),
                    d.get("creator_id"), tuple(d.get("tags", ()))) for d in
              world.events(200_000, start_ms=1_700_000_000_000, rate_per_s=20_000)]
    batches = [events[s:s + 5000] for s in range(0, len(events), 5000)]
    codes = {k: i for i, k in enumerate(KINDS)}
    columns = [(np.array([e.ts for e in b], np.int64), np.array([codes[e.kind] for e in b], np.int8),
                [e.user_id for e in b], [e.item_id for e in b], [e.creator_id for e in b], [e.tags for e in b])
               for b in batches]
    modes = [("add(events)", lambda w, j: w.add(batches[j]))]
    if hasattr(metrics.EngagementWindows, "add_columns"):
        modes.append(("add_columns", lambda w, j: w.add_columns(*columns[j])))
    for label, add in modes:
        best_add = best_close = 1e9
        for _ in range(3):
            windows = metrics.EngagementWindows(10_000, 2_000)
            t_add = t_close = 0.0
            for j, batch in enumerate(batches):
                t0 = time.perf_counter()
                add(windows, j)
                t1 = time.perf_counter()
                windows.close_due(batch[-1].ts)
                t_close += time.perf_counter() - t1
                t_add += t1 - t0
            t1 = time.perf_counter()
            windows.close_all()
            t_close += time.perf_counter() - t1
            best_add, best_close = min(best_add, t_add), min(best_close, t_close)
        n = len(events)
        print(f"metrics {label:12s}: add {best_add / n * 1e6:5.2f} us/event, close {best_close / n * 1e6:5.2f} us/event, "
              f"total {(best_add + best_close) / n * 1e6:5.2f}")


def bench_state() -> None:
    from streams.state.codecs import ItemState, encode_item, encode_items, encode_user, encode_users

    rng = np.random.default_rng(0)
    n = 5000
    vectors = rng.standard_normal((n, 64)).astype(np.float32)
    histories = [[f"i{k:05d}" for k in rng.integers(0, 20_000, rng.integers(1, 50))] for _ in range(n)]
    biases, popularity = rng.standard_normal(n).astype(np.float32), rng.random(n) * 50
    creators, tags = [f"c{j % 500}" for j in range(n)], [("dance", "food")] * n
    print(f"state encode_user  x{n}: {median_us(lambda: [encode_user(v, h) for v, h in zip(vectors, histories)], n):5.2f}"
          f" us/user;  encode_users: {median_us(lambda: encode_users(vectors, histories), n):5.2f} us/user")

    def singles() -> None:
        for j in range(n):
            encode_item(ItemState(vectors[j], float(biases[j]), creators[j], tags[j], float(popularity[j]), 17))

    batch = median_us(lambda: encode_items(vectors, biases, creators, tags, popularity, 17), n)
    print(f"state encode_item  x{n}: {median_us(singles, n):5.2f} us/item;  encode_items: {batch:5.2f} us/item")


LUA = b"for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1]) end return #KEYS"


async def redis_methods(port: int) -> None:
    import redis.asyncio as aioredis

    from streams.io.redis import RecsWriter, async_redis, encode_list, encode_lists
    from streams.settings import Settings

    settings = Settings.from_env({}, redis_url=f"redis://127.0.0.1:{port}/0", redis_prefix="bench")
    rng = np.random.default_rng(0)
    n, ttl = 5000, settings.rec_ttl_s
    users = [f"u{j:07d}" for j in range(n)]
    items = [[f"i{k:05d}" for k in rng.integers(0, 20_000, 50)] for _ in range(n)]
    scores = np.sort(rng.standard_normal((n, 50)).astype(np.float32), axis=1)[:, ::-1]
    lists = {u: list(zip(i, s.tolist())) for u, i, s in zip(users, items, scores)}
    keys = [settings.rec_key(u) for u in users]
    client = async_redis(settings)
    sha = (await client.script_load(LUA))
    writer = RecsWriter(client, settings)

    def values() -> list[bytes]:
        return encode_lists(users, items, scores, source="personal", updated_ms=1, model_version="v1")

    async def pipeline_set_ex() -> None:  # the plain way: one redis-py SET EX per list
        pipe = client.pipeline(transaction=False)
        for user, recs in lists.items():
            pipe.set(settings.rec_key(user), encode_list(recs, source="personal", updated_ms=1, model_version="v1",
                                                         user_id=user), ex=ttl)
        await pipe.execute()

    async def mset_expire() -> None:
        pipe = client.pipeline(transaction=True)
        pipe.mset(dict(zip(keys, values())))
        for key in keys:
            pipe.expire(key, ttl)
        await pipe.execute()

    async def evalsha() -> None:
        vals = values()
        for s in range(0, n, 5000):
            await client.evalsha(sha, len(keys[s:s + 5000]), *keys[s:s + 5000], ttl, *vals[s:s + 5000])

    async def write_lists() -> None:
        await writer.write_lists(users, items, scores, popular=None, model_version="v1", updated_ms=1)

    async def write_mapping() -> None:
        await writer.write(lists, popular=None, model_version="v1", updated_ms=1)

    t0 = time.perf_counter()
    values()
    print(f"redis: encode_lists alone {(time.perf_counter() - t0) / n * 1e6:5.2f} us/list "
          f"({len(values()[0])} bytes per value)")
    for label, method in [("redis-py pipeline SET EX per list", pipeline_set_ex),
                          ("MULTI + MSET + EXPIREs", mset_expire), ("EVALSHA Lua, 5000 keys per call", evalsha),
                          ("RecsWriter.write_lists", write_lists), ("RecsWriter.write (mapping)", write_mapping)]:
        await client.flushall()
        await client.config_resetstat()
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            await method()
            times.append(time.perf_counter() - t0)
        stats = await client.info("commandstats")
        server = sum(v["usec"] for k, v in stats.items() if k not in ("cmdstat_config", "cmdstat_info")) / 7 / n
        assert await client.get(keys[-1]) == values()[-1] and await client.ttl(keys[-1]) > 0
        print(f"redis: {label:38s} {float(np.median(times)) / n * 1e6:6.2f} us/list (server {server:.2f})")
    await client.aclose()
    await aioredis.Redis(port=port).aclose()


def bench_redis(server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(  # noqa: S603 - argv list; the redis-server path given on our command line
        [server, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        asyncio.run(redis_methods(port))
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics-module", help="path of another revision's metrics module (streams/worker/metrics.py, earlier streams/metrics.py) to time")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--redis-server", default="redis-server")
    args = parser.parse_args()
    bench_metrics(args.metrics_module)
    bench_state()
    if not args.no_redis:
        bench_redis(args.redis_server)


if __name__ == "__main__":
    main()
