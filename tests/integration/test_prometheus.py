"""The Prometheus endpoints of a real worker process and a real ``streamrec serve``, on the test's broker and
Redis: what the worker learned shows in its counters and histograms, every metric the Grafana dashboard
reads is exposed by one of the two, and a worker whose metrics port is taken runs on."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.tools.dev import free_port
from streams.tools.synthetic import SyntheticWorld, WorldConfig
from tests.integration.helpers import produce, produce_raw, wait_for
from tests.unit.test_monitoring import dashboard_metric_names, exposed_names

pytestmark = pytest.mark.integration


def scrape(url: str, **headers: str) -> dict[str, Any]:
    """Metric families by name (counters under their name without ``_total``, as the parser gives them)."""
    answer = httpx.get(url, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def value(families: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float | None:
    for s in families[name].samples if name in families else ():
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def test_worker_and_server_expose_what_the_dashboard_reads(make_settings, start_worker, serve):  # noqa: F811
    settings = make_settings()
    worker = start_worker(settings)
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    assert value(scrape(url), "streamrec_worker_ready") == 1

    world = SyntheticWorld(WorldConfig(users=100, items=150, seed=5))
    events = list(world.events(2_000, start_ms=int(time.time() * 1000) - 30_000))
    produce(settings, events)
    produce_raw(settings, [(b"u1", b"not json"), (b"u2", b"[1, 2")])

    def learned() -> dict[str, Any] | None:
        families = scrape(url)
        done = (value(families, "streamrec_events_processed", "streamrec_events_processed_total") or 0) >= len(events)
        return families if done and value(families, "streamrec_dead_letters", "streamrec_dead_letters_total",
                                           reason="not_json") == 2 else None

    families = wait_for(learned, timeout=90, interval=0.5)
    assert value(families, "streamrec_freshness_seconds", "streamrec_freshness_seconds_count") > 0
    assert value(families, "streamrec_freshness_seconds", "streamrec_freshness_seconds_bucket", le="+Inf") > 0
    assert value(families, "streamrec_batch_seconds", "streamrec_batch_seconds_count") >= 1
    assert value(families, "streamrec_model_users") == len({e["user_id"] for e in events})
    assert value(families, "streamrec_model_factor_bytes") > 0
    lag = {s.labels["partition"]: s.value for s in families["streamrec_consumer_lag"].samples}
    assert lag and all(v >= 0 for v in lag.values())
    assert set(lag) <= {str(p) for p in range(settings.partitions)}
    assert value(families, "streamrec_worker_info", worker_id=settings.worker_id) == 1

    server = serve(settings, STREAMREC_API_KEYS_READ="r-key")
    reader = {"Authorization": "Bearer r-key"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v1/popular", headers=reader).status_code == 200
        assert http.get("/metrics").status_code == 401
    served = scrape(server.url + "/metrics", **reader)
    assert value(served, "streamrec_http_requests", "streamrec_http_requests_total", route="/v1/popular",
                 method="GET", status="200") == 1

    exposed = exposed_names(families.values()) | exposed_names(served.values())
    missing = {title: sorted(names - exposed) for title, names in dashboard_metric_names().items() if names - exposed}
    assert not missing, f"the dashboard reads metrics the running worker and server do not expose: {missing}"
    assert worker.alive()


def test_a_worker_whose_metrics_port_is_taken_warns_once_and_runs_on(make_settings, start_worker):
    port = free_port()
    first = start_worker(make_settings(metrics_port=port))
    second = start_worker(make_settings(metrics_port=port), name="second")  # another group, same port
    produce(second.settings, [{"event_id": "e1", "user_id": "u1", "item_id": "i1", "kind": "view",
                               "ts": int(time.time() * 1000)}])
    wait_for(lambda: int((second.status() or {}).get("events_total") or 0) >= 1, timeout=60)
    log = second.log_path.read_text(errors="replace")
    assert log.count("Prometheus endpoint off: cannot listen on") == 1, log[-3000:]
    assert first.alive() and second.alive()
    assert value(scrape(f"http://127.0.0.1:{port}/metrics"), "streamrec_worker_info",
                 worker_id=first.settings.worker_id) == 1
