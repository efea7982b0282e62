"""The command line and the Redis cache, against the real services."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streams.client import RecsReader
from streams.io.redis import RecsWriter, async_redis
from streams.settings import Settings
from streams.tools.dev import DevServices
from tests.integration.helpers import read_recs, wait_for

pytestmark = pytest.mark.integration


def streamrec(settings: Settings, *args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run([sys.executable, "-m", "streams.tools.cli", *args], input=stdin, env=env,
                          capture_output=True, timeout=timeout)


def test_produce_recs_and_metrics_commands(make_settings, start_worker, tmp_path: Path):
    settings = make_settings()
    worker = start_worker(settings)
    now = int(time.time() * 1000)
    lines = [orjson.dumps({"event_id": f"f{n}", "user_id": "cli-user", "item_id": f"i{n % 7}", "kind": "view",
                           "ts": now + n}) for n in range(20)]
    # A catalog first (lists are computed when a user's events arrive), then our user's events.
    synthetic = streamrec(settings, "produce", "--synthetic", "300", "--users", "30", "--items", "20")
    assert synthetic.returncode == 0, synthetic.stderr
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    done = streamrec(settings, "produce", "--file", str(events_file))
    assert done.returncode == 0, done.stderr
    assert b"produced 20 events" in done.stderr

    bad = streamrec(settings, "produce", "--file", "-", stdin=lines[0] + b'\n{"event_id": 1}\n')
    assert bad.returncode == 1 and b"invalid input" in bad.stderr and b"event 2" in bad.stderr

    # 20 + 300 events; the valid line before the bad one repeats event f0 and is applied once
    wait_for(lambda: (worker.status() or {}).get("events_total", 0) >= 320, timeout=60)

    recs = streamrec(settings, "recs", "cli-user", "-n", "3", "--json")
    assert recs.returncode == 0, recs.stderr
    data = orjson.loads(recs.stdout)
    assert data["source"] == "personal" and len(data["items"]) == 3
    assert not {f"i{n}" for n in range(7)} & set(data["items"])  # all seen: excluded
    table = streamrec(settings, "recs", "cli-user", "-n", "3")
    assert table.returncode == 0 and b"personal" in table.stdout and data["items"][0].encode() in table.stdout

    tail = streamrec(settings, "metrics", "--json", "--from-beginning", "--seconds", "6")
    assert tail.returncode == 0, tail.stderr
    records = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert any(r["type"] == "health" for r in records) and any(r["type"] == "tag" for r in records)


def test_cache_with_redis_auth_one_round_trip_and_fallbacks(tmp_path: Path):
    with DevServices(state_dir=tmp_path, with_broker=False, redis_password="s3cret-pw") as services:
        url = f"redis://127.0.0.1:{services.redis_port}/0"
        settings = Settings(redis_url=url, redis_password="s3cret-pw", redis_prefix="authtest")

        async def write() -> None:
            client = async_redis(settings)
            await RecsWriter(client, settings).write({"u1": [("a", 0.9), ("b", 0.5)]}, popular=[("p", 3.0)],
                                                     model_version="v7", updated_ms=123,
                                                     popular_by_tag={"dance": [("d1", 2.0), ("d2", 1.0)]})
            assert await client.ttl(settings.rec_key("u1")) > 0
            await client.aclose()

        asyncio.run(write())
        personal = read_recs(settings, "u1")
        assert (personal.items, personal.scores, personal.source, personal.model_version) == (["a", "b"], [0.9, 0.5],
                                                                                            "personal", "v7")
        reader = RecsReader(settings)
        assert reader.get("stranger").items == ["p"] and reader.get("stranger").source == "popular"
        dancer = reader.get("stranger", tags=["no-such-tag", "dance"])
        assert (dancer.items, dancer.source) == (["d1", "d2"], "popular_tag")
        assert reader.get("u1", tags=["dance"]).source == "personal"
        counting = RecsReader(settings)
        calls = []
        real_mget = counting.client.mget
        counting.client.mget = lambda keys: calls.append(keys) or real_mget(keys)  # type: ignore[method-assign]
        assert counting.get("u1").source == "personal"
        assert calls == [["authtest:rec:u1", "authtest:popular"]]  # one round trip for both keys

        no_password = RecsReader(Settings(redis_url=url, redis_prefix="authtest")).get("u1")
        assert no_password.source == "unavailable" and no_password.error
        services.stop_redis()
        down = reader.get("u1")
        assert down.source == "unavailable" and down.items == ["p"]  # the last popular list it saw
