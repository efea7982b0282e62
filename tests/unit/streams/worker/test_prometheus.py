"""The worker's Prometheus metrics (streams.worker.prometheus): a real service fed real batches, read
through its registry and its HTTP endpoint; no Faust, no services."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from streams.settings import Settings
from streams.state.store import MemoryStateStore
from streams.worker.learner import RawMessage
from streams.worker.metrics import BucketCounts
from streams.worker.prometheus import start_metrics_server, worker_registry
from streams.worker.service import RecommenderService
from tests.unit.streams.worker.support import SETTINGS, TP, messages, world_events
from tests.unit.streams.worker.test_service import FakeWriter

EVENTS = TP("t.events", 0)


def make_service(highwater=None) -> RecommenderService:
    async def nowhere(records):
        pass

    return RecommenderService(SETTINGS, MemoryStateStore(), FakeWriter(), nowhere, nowhere, highwater=highwater)


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_counters_and_histograms_count_the_batches_the_service_handled():
    service = make_service()
    registry = worker_registry(service)
    events = world_events(300)
    bad = [RawMessage(b"u1", b"nope", "t.events", 0, 1000), RawMessage(b"u1", b"{}", "t.events", 0, 1001)]
    asyncio.run(service.handle(messages(events[:200]) + bad))
    asyncio.run(service.handle(messages(events[200:], 200)))

    assert sample(registry, "streamrec_events_processed_total") == 300
    assert sample(registry, "streamrec_dead_letters_total", reason="not_json") == 1
    assert sample(registry, "streamrec_dead_letters_total", reason="missing_field") == 1
    assert sample(registry, "streamrec_batch_messages_total") == 302
    assert sample(registry, "streamrec_batch_seconds_count") == 2
    assert sample(registry, "streamrec_batch_seconds_bucket", le="+Inf") == 2
    assert sample(registry, "streamrec_batch_seconds_sum") > 0
    # one freshness sample per event learned, its ts to the Redis write of its user's list
    assert sample(registry, "streamrec_freshness_seconds_count") == 300
    refreshed = len({e["user_id"] for e in events[:200]}) + len({e["user_id"] for e in events[200:]})
    assert sample(registry, "streamrec_users_refreshed_total") == refreshed  # one list write per user per batch
    assert sample(registry, "streamrec_redis_errors_total") == 0
    assert sample(registry, "streamrec_model_users") == service.learner.model.n_users > 0
    assert sample(registry, "streamrec_model_items") == service.learner.model.n_items > 0
    model = service.learner.model
    assert sample(registry, "streamrec_model_factor_bytes") == 4 * ((model.n_users + model.n_items) * 8 + model.n_items)
    assert sample(registry, "streamrec_worker_info", worker_id="test") == 1
    assert sample(registry, "process_cpu_seconds_total") is not None


def test_counters_keep_counting_across_health_windows():
    """Health records reset their window's counts; the Prometheus counters go on from where they were."""
    service = make_service()
    registry = worker_registry(service)
    events = world_events(120)
    asyncio.run(service.handle(messages(events[:70])))
    asyncio.run(service.emit_health(service.started_ms + 10_000))
    assert service.learner.health.events_processed == 0
    assert sample(registry, "streamrec_events_processed_total") == 70
    asyncio.run(service.handle(messages(events[70:], 70)))
    assert sample(registry, "streamrec_events_processed_total") == 120
    assert sample(registry, "streamrec_freshness_seconds_count") == 120
    assert sample(registry, "streamrec_batch_seconds_count") == 2


def test_redis_errors_are_counted():
    service = make_service()
    registry = worker_registry(service)
    service.writer.down = True
    asyncio.run(service.handle(messages(world_events(20))))
    assert sample(registry, "streamrec_redis_errors_total") == 1
    assert sample(registry, "streamrec_pending_users") == len(service.pending_users) > 0


def test_consumer_lag_per_partition_from_positions_and_high_watermarks():
    highwaters = {TP("t.events", 0): 150, TP("t.events", 3): 10}
    service = make_service(highwater=highwaters.get)
    registry = worker_registry(service)
    events = world_events(100)
    asyncio.run(service.handle(messages(events[:60]), [(TP("t.events", 0), 0, 59)]))
    asyncio.run(service.handle(messages(events[60:], 60), [(TP("t.events", 3), 0, 39)]))
    assert sample(registry, "streamrec_consumer_lag", partition="0") == 150 - 60
    assert sample(registry, "streamrec_consumer_lag", partition="3") == 0  # read past the (stale) high watermark
    del highwaters[TP("t.events", 3)]  # unknown to the consumer: no sample rather than a guess
    assert sample(registry, "streamrec_consumer_lag", partition="3") is None


def test_online_quality_comes_from_the_last_health_record_when_it_has_it():
    service = make_service()
    registry = worker_registry(service)
    names = {family.name for family in registry.collect()}
    assert {"streamrec_online_hit_ratio", "streamrec_online_list_age_seconds", "streamrec_online_checked"} <= names
    assert sample(registry, "streamrec_online_hit_ratio", k="10") is None  # no health record yet

    asyncio.run(service.emit_health(service.started_ms + 10_000))  # a record without the fields
    assert sample(registry, "streamrec_online_hit_ratio", k="10") is None
    assert sample(registry, "streamrec_online_list_age_seconds") is None

    service.last_health = {**service.last_health, "online_checked": 80, "online_hit_at_10": 0.25,
                           "online_hit_at_50": 0.625, "online_list_age_ms_p50": 2500.0}
    assert sample(registry, "streamrec_online_hit_ratio", k="10") == 0.25
    assert sample(registry, "streamrec_online_hit_ratio", k="50") == 0.625
    assert sample(registry, "streamrec_online_list_age_seconds") == 2.5
    assert sample(registry, "streamrec_online_checked") == 80

    service.last_health = {**service.last_health, "online_checked": 0, "online_hit_at_10": None,
                           "online_hit_at_50": None, "online_list_age_ms_p50": None}
    assert sample(registry, "streamrec_online_hit_ratio", k="10") is None
    assert sample(registry, "streamrec_online_checked") == 0


def test_bucket_counts_match_prometheus_le_semantics():
    h = BucketCounts((0.01, 0.1, 1.0))
    h.add_ms([np.array([0.0, 10.0, 10.0001, 100.0, 5_000.0])])
    assert h.buckets() == [(0.01, 2), (0.1, 4), (1.0, 4), (float("inf"), 5)]
    assert h.count == 5 and abs(h.sum_s - 5.1200001) < 1e-9
    h.add_ms([])
    assert h.count == 5


def test_endpoint_serves_the_registry_over_http_and_port_zero_is_off():
    service = make_service()
    asyncio.run(service.handle(messages(world_events(30))))
    registry = worker_registry(service)
    assert start_metrics_server(Settings(metrics_port=0), registry) is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_metrics_server(Settings(metrics_host="127.0.0.1", metrics_port=port), registry)
    assert server is not None
    try:
        with urllib.request.urlopen(server.url, timeout=10) as answer:  # noqa: S310  (our own http:// URL)
            text = answer.read().decode()
            assert answer.headers["Content-Type"].startswith("text/plain")
    finally:
        server.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["streamrec_events_processed"].samples[0].value == 30
    assert families["streamrec_freshness_seconds"].type == "histogram"


def test_a_port_already_taken_logs_one_warning_and_returns_none(caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="streams.worker.prometheus"):
            server = start_metrics_server(Settings(metrics_port=port), worker_registry(make_service()))
    assert server is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0].getMessage()
    assert "STREAMREC_METRICS_PORT" in warnings[0].getMessage()
