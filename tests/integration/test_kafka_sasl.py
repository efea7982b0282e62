"""Kafka SASL over TLS, end to end: a worker, a producer and the readers authenticate with
PLAIN or SCRAM-SHA-256 and verify the broker's certificate; a wrong password and a client
without TLS are refused.

Runs against the Apache Kafka that ``make test-kafka`` starts: ``.ci/kafka.sh`` opens a
SASL_SSL listener with a throwaway certificate and password (``<kafka dir>/sasl/client.json``).
The embedded broker has no SASL listener: there these tests are skipped.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.client import EventProducer
from streams.settings import Settings
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from tests.integration.helpers import produce, read_recs, wait_for
from tests.integration.oracle import Expected, assert_oracle, wait_for_oracle

pytestmark = pytest.mark.integration


@pytest.fixture
def sasl(services: Any) -> dict[str, str]:
    kafka_dir = os.environ.get("STREAMREC_TEST_KAFKA_DIR")
    client = Path(kafka_dir or "", "sasl", "client.json")
    if services.broker_kind != "kafka" or not kafka_dir or not client.is_file():
        pytest.skip("needs the SASL_SSL listener of the Apache Kafka started by `make test-kafka`")
    return json.loads(client.read_text())


def sasl_settings(make_settings: Callable[..., Settings], sasl: dict[str, str], mechanism: str,
                  password: str | None = None, protocol: str = "SASL_SSL") -> Settings:
    return make_settings(
        broker_url=f"kafka://{sasl['bootstrap']}", security_protocol=protocol, sasl_mechanism=mechanism,
        sasl_username=sasl["username"], sasl_password=sasl["password"] if password is None else password,
        ssl_cafile=sasl["cafile"],
    )


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_worker_producer_and_readers_work_over_sasl_ssl(make_settings, start_worker, sasl, mechanism):
    settings = sasl_settings(make_settings, sasl, mechanism)
    worker = start_worker(settings)  # Faust (group, tables, changelogs) and our own clients, all authenticated
    world = SyntheticWorld(WorldConfig(users=200, items=150, creators=30, communities=6, seed=31))
    events = list(world.events(3_000, start_ms=int(time.time() * 1000) - 30_000))
    produce(settings, events)
    expected = Expected.of(events)
    assert_oracle(settings, wait_for_oracle(settings, expected, timeout=90), expected)  # read over SASL_SSL too
    user = events[-1]["user_id"]
    recs = wait_for(lambda: (r := read_recs(settings, user)).source == "personal" and r, timeout=30)
    assert len(recs.items) == settings.top_n
    assert worker.alive()


def connects(settings: Settings) -> bool:
    """Whether a producer gets through: True, or False when the broker refuses it."""

    async def connect() -> None:
        async with EventProducer(settings):
            pass

    try:
        asyncio.run(asyncio.wait_for(connect(), 30))
        return True
    except KafkaConnectionError:  # aiokafka: "Unable to bootstrap", the reason is in its log
        gc.collect()  # aiokafka leaves the refused connection's socket open: collected here, not in a later test
        return False


# aiokafka (0.14) does not close the socket of a refused bootstrap: its ResourceWarning is not ours.
refusal = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")


@refusal
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_a_wrong_password_is_refused(make_settings, sasl, mechanism, caplog):
    assert connects(sasl_settings(make_settings, sasl, mechanism))  # the control: the right one gets in
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        assert not connects(sasl_settings(make_settings, sasl, mechanism, password="not-the-password"))
    assert "Authentication failed" in caplog.text


@refusal
def test_a_client_without_tls_is_refused(make_settings, sasl):
    assert not connects(sasl_settings(make_settings, sasl, "PLAIN", protocol="SASL_PLAINTEXT"))
