"""Shared fixtures: real services for integration tests, unique names per test.

The broker is the embedded Tansu (started here) unless ``STREAMREC_TEST_BROKER`` names a
running Kafka (``kafka://127.0.0.1:19092``: CI's Apache Kafka). Redis is always a real
``redis-server`` started here; tests of Redis Cluster also get a real 3-node cluster
(``redis_cluster``: ``make_settings(redis_url=redis_cluster.url, redis_cluster=True)``).
Every test gets its own topic prefix, Redis prefix, consumer group and worker id.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from streams.settings import Settings
from streams.tools.dev import free_port

TEST_BROKER_ENV = "STREAMREC_TEST_BROKER"


class Services:
    def __init__(self, broker_url: str, redis_url: str, broker_kind: str, redis_control: Any) -> None:
        self.broker_url = broker_url
        self.redis_url = redis_url
        self.broker_kind = broker_kind  # "tansu" or "kafka"
        self.redis_control = redis_control  # the DevServices that owns redis (stop/start for fault tests)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    from streams.tools.dev import DevServices

    external = os.environ.get(TEST_BROKER_ENV, "").strip()
    state_dir = tmp_path_factory.mktemp("services")
    # With an external broker (CI's Apache Kafka) only Redis is started here.
    with DevServices(state_dir=state_dir, with_broker=not external) as dev:
        if external:
            yield Services(external, dev.redis_url, "kafka", dev)
        else:
            yield Services(dev.broker_url, dev.redis_url, "tansu", dev)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Redis Cluster of 3 primaries on free loopback ports (``streams.tools.dev.start_redis_cluster``),
    for the whole session; point settings at it with ``make_settings(redis_url=redis_cluster.url,
    redis_cluster=True)``. ``redis_cluster.ports`` are its nodes' ports."""
    from streams.tools.dev import start_redis_cluster

    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def make_settings(services: Services) -> Callable[..., Settings]:
    """Settings with a unique prefix, group and worker id for this test."""

    def factory(**overrides: Any) -> Settings:
        tag = "t" + uuid.uuid4().hex[:10]
        values: dict[str, Any] = dict(
            broker_url=services.broker_url,
            redis_url=services.redis_url,
            topic_prefix=tag,
            redis_prefix=tag,
            app_id=tag,
            worker_id=f"{tag}-w",
            metrics_window_s=2.0,
            metrics_grace_s=0.5,
            session_timeout_s=6.0,
            rebalance_timeout_s=6.0,
            web_port=free_port(),  # the web server is off by default; a test checks nothing listens here
            metrics_port=free_port(),  # each test's workers serve /metrics on a port of their own
        )
        values.update(overrides)
        return Settings.from_env({}, **values)

    return factory


@pytest.fixture
def start_worker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[Settings], Any]]:
    """Start ``streamrec worker`` processes; all are stopped after the test (log shown on failure)."""
    from streams.tools.worker_process import WorkerProcess

    workers: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "worker") -> WorkerProcess:
        spawned_ms = int(time.time() * 1000)
        worker = WorkerProcess(settings, tmp_path / f"{name}-{len(workers)}.log").start()
        workers.append(worker)
        worker.wait_ready(after_ms=spawned_ms)  # this process's heartbeat, not a killed predecessor's
        return worker

    yield start
    for worker in workers:
        worker.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for worker in workers:
            print(f"--- {worker.log_path} ---\n{worker.log_tail(80)}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
