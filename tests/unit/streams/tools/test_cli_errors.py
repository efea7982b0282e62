"""Every ``streamrec`` command that cannot reach Kafka or Redis, or gets a bad setting, says so in one line.

The commands run as they are run by a person (a subprocess), against a closed port on 127.0.0.1: it
refuses connections at once, so no broker or Redis is needed. A listener that never answers stands
for a server that is not Kafka. (The worker with Kafka up and Redis out of reach:
tests/integration/test_cli_errors.py.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.errors import ServiceUnavailable
from streams.tools.reach import redis_address, redis_setting_for, short_reason

TIME_LIMIT_S = 20.0


def _closed_port() -> int:
    """A port nothing listens on (bound, then released: connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def closed() -> str:
    return f"127.0.0.1:{_closed_port()}"


@pytest.fixture(scope="module")
def listening() -> Iterator[str]:
    """A TCP listener that never answers (a busy port, or a server that is not Kafka)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _run(args: list[str], tmp_path: Path, **env: str) -> tuple[int, str, float]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    environ.update(env, PYTHONPATH=os.pathsep.join(sys.path))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams.tools.cli", *args], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    return done.returncode, done.stderr, time.monotonic() - started


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), stderr
    return lines[0]


KAFKA_COMMANDS = [["produce", "--synthetic", "10"], ["metrics", "--seconds", "1"], ["worker"],
                  ["worker", "--processes", "2"]]


@pytest.mark.parametrize("command", KAFKA_COMMANDS, ids=" ".join)
def test_kafka_out_of_reach_is_one_line_naming_the_address_and_the_variable(command, closed, tmp_path):
    status, stderr, elapsed = _run(command, tmp_path, STREAMREC_BROKER_URL=f"kafka://{closed}",
                                   STREAMREC_REDIS_URL=f"redis://{closed}/0")
    line = _one_line(stderr)
    assert status == 1 and elapsed < TIME_LIMIT_S
    assert line == f"streamrec {command[0]}: cannot reach Kafka at {closed} (STREAMREC_BROKER_URL): Connection refused"


@pytest.mark.parametrize("command", [["recs", "u1"], ["recs", "u1", "--json"]], ids=" ".join)
def test_redis_out_of_reach_is_one_line_naming_the_address_and_the_variable(command, closed, tmp_path):
    status, stderr, elapsed = _run(command, tmp_path, STREAMREC_REDIS_URL=f"redis://{closed}/0")
    line = _one_line(stderr)
    assert status == 1 and elapsed < TIME_LIMIT_S
    assert line == f"streamrec recs: cannot reach Redis at {closed} (STREAMREC_REDIS_URL): Connection refused"


def test_a_server_that_does_not_answer_as_kafka_is_given_up_in_seconds(listening, tmp_path):
    status, stderr, elapsed = _run(["produce", "--synthetic", "1"], tmp_path,
                                   STREAMREC_BROKER_URL=f"kafka://{listening}")
    line = _one_line(stderr)
    assert status == 1 and elapsed < TIME_LIMIT_S
    assert line == f"streamrec produce: cannot reach Kafka at {listening} (STREAMREC_BROKER_URL): no answer in 3 s"


def test_a_redis_that_does_not_answer_is_given_up_in_seconds(listening, tmp_path):
    status, stderr, elapsed = _run(["recs", "u1"], tmp_path, STREAMREC_REDIS_URL=f"redis://{listening}/0")
    line = _one_line(stderr)
    assert status == 1 and elapsed < 10
    assert line == f"streamrec recs: cannot reach Redis at {listening} (STREAMREC_REDIS_URL): no answer in 3 s"


@pytest.mark.parametrize("bench", ["pipeline", "freshness", "scale"])
def test_bench_with_services_out_of_reach_names_the_option(bench, closed, tmp_path):
    status, stderr, elapsed = _run(["bench", bench, "--bootstrap", closed], tmp_path)
    line = _one_line(stderr)
    assert status == 1 and elapsed < TIME_LIMIT_S
    assert line == f"streamrec bench {bench}: cannot reach Kafka at {closed} (--bootstrap): Connection refused"
    status, stderr, elapsed = _run(["bench", bench, "--redis-url", f"redis://{closed}/0"], tmp_path)
    line = _one_line(stderr)
    assert status == 1 and elapsed < TIME_LIMIT_S
    assert line == f"streamrec bench {bench}: cannot reach Redis at {closed} (--redis-url): Connection refused"


@pytest.mark.parametrize("command", [["produce", "--synthetic", "1"], ["recs", "u1"], ["metrics"], ["worker"],
                                     ["worker", "--processes", "2"], ["settings"], ["dev", "up"], ["demo"]],
                         ids=" ".join)
def test_a_bad_setting_is_one_line_and_exit_2(command, tmp_path):
    status, stderr, _ = _run(command, tmp_path, STREAMREC_PARTITIONS="abc")
    line = _one_line(stderr)
    name = " ".join(command[:2]) if command[0] == "dev" else command[0]
    assert status == 2
    assert line == f"streamrec {name}: bad setting: STREAMREC_PARTITIONS='abc' is not a valid int"


def test_dev_up_on_a_busy_port_names_the_variable(listening, tmp_path):
    status, stderr, elapsed = _run(["dev", "up", "--dir", str(tmp_path / "dev")], tmp_path,
                                   STREAMREC_BROKER_URL=f"kafka://{listening}")
    line = _one_line(stderr)
    assert status == 1 and elapsed < TIME_LIMIT_S
    assert line.startswith(f"streamrec dev up: cannot start broker: port {listening} is busy")
    assert line.endswith("(STREAMREC_BROKER_URL)")


def test_reasons_and_addresses_are_short():
    assert short_reason("Error 111 connecting to 127.0.0.1:1. Connection refused.") == "Connection refused"
    assert short_reason("KafkaConnectionError: Unable to bootstrap from [('h', 1)]") == "no broker answered"
    assert short_reason(ConnectionRefusedError(111, "Connection refused")) == "Connection refused"
    assert short_reason(TimeoutError()) == "no answer in 3 s"
    assert short_reason("Timeout reading from socket") == "no answer in 3 s"
    assert short_reason("WRONGPASS invalid username-password pair or user is disabled.") == (
        "authentication failed: wrong user name or password")
    assert redis_setting_for(short_reason("Authentication required.")) == "STREAMREC_REDIS_PASSWORD"
    assert redis_setting_for("Connection refused") == "STREAMREC_REDIS_URL"
    assert redis_address("redis://user:secret@cache.example:6380/0") == "cache.example:6380"  # no credentials
    assert redis_address("rediss://cache.example") == "cache.example:6379"
    assert str(ServiceUnavailable("Kafka", "h:9092", "STREAMREC_BROKER_URL", "Connection refused")) == (
        "cannot reach Kafka at h:9092 (STREAMREC_BROKER_URL): Connection refused")
