"""The commands' one-line errors where one service is up and the other is not (the rest, with no service at
all: tests/unit/streams/tools/test_cli_errors.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from streams.tools.dev import DevServices, free_port

pytestmark = pytest.mark.integration


def test_worker_with_kafka_up_and_redis_out_of_reach_says_so_in_one_line(make_settings):
    closed = f"127.0.0.1:{free_port()}"
    settings = make_settings(redis_url=f"redis://{closed}/0")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams.tools.cli", "worker"], env={**os.environ, **settings.to_env()},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 1 and time.monotonic() - started < 20
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"streamrec worker: cannot reach Redis at {closed} (STREAMREC_REDIS_URL): Connection refused"]


def test_produce_to_a_broker_that_is_up_is_not_stopped_by_the_check(make_settings):
    settings = make_settings()
    done = subprocess.run([sys.executable, "-m", "streams.tools.cli", "produce", "--synthetic", "5"],
                          env={**os.environ, **settings.to_env()}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "produced 5 events" in done.stderr, done.stderr


def test_recs_and_worker_without_the_redis_password_name_the_password_setting(make_settings, tmp_path):
    with DevServices(state_dir=tmp_path, with_broker=False, redis_password="s3cret-pw") as redis:
        address = f"127.0.0.1:{redis.redis_port}"
        settings = make_settings(redis_url=f"redis://{address}/0")  # no STREAMREC_REDIS_PASSWORD
        for command in (["recs", "u1"], ["worker"]):
            done = subprocess.run([sys.executable, "-m", "streams.tools.cli", *command],
                                  env={**os.environ, **settings.to_env()}, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=60)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            [line] = done.stderr.splitlines()
            assert line == (f"streamrec {command[0]}: cannot reach Redis at {address} (STREAMREC_REDIS_PASSWORD): "
                            "authentication required: a password is needed")
