"""``streamrec dev up / status / down`` with the default, relative state directory, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
import redis

from streams.tools.dev import free_port

pytestmark = pytest.mark.integration


def test_dev_up_in_a_relative_directory_starts_both_services_and_dev_down_stops_them(tmp_path) -> None:
    broker_port, redis_port = free_port(), free_port()
    env = {**os.environ, "STREAMREC_BROKER_URL": f"kafka://127.0.0.1:{broker_port}",
           "STREAMREC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}

    def streamrec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams.tools.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    up = streamrec("dev", "up")  # state in ./.streamrec-dev, relative to the working directory
    try:
        assert up.returncode == 0, up.stderr
        info = orjson.loads(up.stdout)
        assert info["bootstrap"] == f"127.0.0.1:{broker_port}"
        assert redis.Redis(port=redis_port, socket_timeout=5).ping()
        status = orjson.loads(streamrec("dev", "status").stdout)
        assert set(status["services"]) == {"broker", "redis"}
    finally:
        down = streamrec("dev", "down")
    assert down.returncode == 0 and "broker" in down.stdout and "redis" in down.stdout, down.stdout + down.stderr
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=redis_port, socket_timeout=2).ping()
