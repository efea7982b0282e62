"""``streamrec worker --processes 2`` against the real services: two workers share the work and stop together."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis

from streams.io.redis import sync_redis
from streams.settings import Settings
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from tests.integration.helpers import produce, wait_for

pytestmark = pytest.mark.integration

STARTED = re.compile(r"started worker (?P<id>\S+) \(pid (?P<pid>\d+)\)")


def heartbeats(settings: Settings, worker_ids: list[str]) -> dict[str, dict]:
    """The workers' heartbeats in Redis (``<prefix>:worker:<id>``), as WorkerProcess.status reads them."""
    client = sync_redis(settings)
    try:
        values = client.mget([settings.worker_key(w) for w in worker_ids])
    except redis.RedisError:
        return {}
    finally:
        client.close()
    return {w: orjson.loads(v) for w, v in zip(worker_ids, values) if v is not None}


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_two_worker_processes_split_the_partitions_and_stop_together_on_sigterm(make_settings, tmp_path):
    settings = make_settings()
    worker_ids = [f"{settings.worker_id}-1", f"{settings.worker_id}-2"]  # <STREAMREC_WORKER_ID>-<i>
    log_path = tmp_path / "supervisor.log"
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:  # Faust's <app_id>-data lands in tmp_path
        supervisor = subprocess.Popen([sys.executable, "-m", "streams.tools.cli", "worker", "--processes", "2"],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      cwd=tmp_path)
    child_pids: dict[str, int] = {}

    def log_text() -> str:
        return log_path.read_text(errors="replace")

    def ready() -> dict[str, dict] | None:
        assert supervisor.poll() is None, f"supervisor exited with {supervisor.returncode}:\n{log_text()[-6000:]}"
        beats = heartbeats(settings, worker_ids)
        return beats if len(beats) == 2 and all(b.get("ready") for b in beats.values()) else None

    try:
        wait_for(ready, timeout=60)
        child_pids = {m["id"]: int(m["pid"]) for m in STARTED.finditer(log_text())}
        assert sorted(child_pids) == worker_ids and all(running(p) for p in child_pids.values())

        world = SyntheticWorld(WorldConfig(users=400, items=300, creators=50, communities=8, seed=31))
        events = list(world.events(3_000, start_ms=int(time.time() * 1000)))
        produce(settings, events)

        def totals() -> dict[str, int] | None:
            counts = {w: int(b.get("events_total") or 0) for w, b in heartbeats(settings, worker_ids).items()}
            return counts if sum(counts.values()) >= len(events) else None

        counts = wait_for(totals, timeout=30)
        assert sum(counts.values()) == len(events), counts  # every event applied once, by one of the two
        assert all(counts[w] > 0 for w in worker_ids), counts  # the partitions were split between them

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=45) == 0, log_text()[-6000:]
        assert not [pid for pid in child_pids.values() if running(pid)], "a worker outlived the supervisor"
        text = log_text()
        for worker_id, pid in child_pids.items():
            assert f"worker {worker_id} (pid {pid}) exited with code 0" in text  # a graceful stop, not a kill
        assert "restarting" not in text
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        for pid in child_pids.values():
            if running(pid):
                os.kill(pid, signal.SIGKILL)
