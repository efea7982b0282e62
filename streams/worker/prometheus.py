"""The worker's Prometheus endpoint: ``GET /metrics`` on ``STREAMREC_METRICS_HOST:STREAMREC_METRICS_PORT``
(default ``127.0.0.1:9464``; port ``0`` turns it off).

Nothing is counted for Prometheus on the hot path. :class:`WorkerCollector` reads the worker's own
counters when Prometheus scrapes: the totals since the start kept next to the health windows
(:meth:`~streams.worker.metrics.HealthCounters.totals`, whose freshness and batch-time histograms are
filled with numpy in bulk), the model's sizes, the consumer's positions against the high watermarks,
and the last health record (online quality, :func:`online_quality`).

It is served by prometheus_client's HTTP server on a daemon thread, not by Faust's web server: that one
is off by default and also serves Faust's own pages, and it runs on the event loop, so a long batch would
hold a scrape back (and a scrape would hold the next batch). On its own thread the endpoint answers while
the loop is busy, which is when it is wanted; what it reads is copied (under the health counters' lock
for the windowed counts), never iterated while the loop changes it. With ``streamrec worker
--processes N``, worker ``<id>-i`` binds the port + i - 1 (the supervisor sets ``STREAMREC_METRICS_PORT``
per child). A port already taken is logged once and the worker runs on without the endpoint.

>>> from streams.settings import Settings
>>> from streams.state.store import MemoryStateStore
>>> from streams.worker.service import RecommenderService
>>> async def nothing(records): pass
>>> service = RecommenderService(Settings(worker_id="w1"), MemoryStateStore(), None, nothing, nothing)
>>> registry = worker_registry(service)
>>> registry.get_sample_value("streamrec_events_processed_total")
0.0
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping
from wsgiref.simple_server import WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.settings import Settings
from streams.worker.metrics import BucketCounts

if TYPE_CHECKING:
    from streams.worker.app import StreamrecApp
    from streams.worker.service import RecommenderService

__all__ = ["WorkerCollector", "worker_registry", "online_quality", "MetricsServer", "start_metrics_server",
           "register_metrics_endpoint"]

logger = logging.getLogger(__name__)

#: Counters of the health totals: (name without ``_total``, key in ``HealthTotals.counts``, help).
_COUNTERS = (
    ("streamrec_events_processed", "events_processed", "Events learned (valid, not duplicates)."),
    ("streamrec_duplicates_skipped", "duplicates_skipped", "Events skipped as repeated event_id."),
    ("streamrec_replayed_skipped", "replayed_skipped", "Redelivered messages at or below a fence (already applied)."),
    ("streamrec_users_refreshed", "users_refreshed", "Users whose top-N list was written to Redis."),
    ("streamrec_redis_errors", "redis_errors", "Failed Redis writes of lists (retried with backoff)."),
    ("streamrec_state_quarantined", "state_quarantined", "Corrupt user states set aside (the user started afresh)."),
    ("streamrec_batch_messages", "batch_events", "Messages of the processed batches."),
)


@dataclass(frozen=True)
class OnlineQuality:
    """The last health window's online quality (None: not reported, or nothing checked)."""

    checked: int | None
    hit_ratio: dict[str, float]  # k ("10", "50") -> share of checked events whose item was in the first k
    list_age_s: float | None


def online_quality(record: Mapping[str, Any] | None) -> OnlineQuality:
    """Read the online-quality fields of a health record: the one place they are read for Prometheus.

    ``online_checked`` (events whose user had a cached list), ``online_hit_at_10`` and
    ``online_hit_at_50`` (ratios, null when nothing was checked) and ``online_list_age_ms_p50``;
    a record without them (or no record yet) gives no values.

    >>> online_quality({"online_checked": 40, "online_hit_at_10": 0.25, "online_hit_at_50": 0.5,
    ...                 "online_list_age_ms_p50": 1500.0})
    OnlineQuality(checked=40, hit_ratio={'10': 0.25, '50': 0.5}, list_age_s=1.5)
    >>> online_quality({"type": "health"})
    OnlineQuality(checked=None, hit_ratio={}, list_age_s=None)
    """
    record = record or {}
    checked = record.get("online_checked")
    hits = {k: record.get(f"online_hit_at_{k}") for k in ("10", "50")}
    age_ms = record.get("online_list_age_ms_p50")
    return OnlineQuality(
        checked=int(checked) if isinstance(checked, (int, float)) else None,
        hit_ratio={k: float(v) for k, v in hits.items() if isinstance(v, (int, float))},
        list_age_s=float(age_ms) / 1000.0 if isinstance(age_ms, (int, float)) else None,
    )


def _histogram(name: str, doc: str, counts: BucketCounts) -> HistogramMetricFamily:
    buckets = [("+Inf" if le == float("inf") else repr(le), float(n)) for le, n in counts.buckets()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=counts.sum_s)


def factor_bytes(model: Any) -> int:
    """Bytes of the model's user and item factors (and item biases): what the counts and dtype say.

    >>> from models import BPRMF
    >>> m = BPRMF(n_factors=8)
    >>> m.learn_batch(["u1", "u2"], ["i1", "i1"])
    >>> factor_bytes(m)  # (2 users + 1 item) x 8 float32, plus 1 bias
    100
    """
    itemsize = np.dtype(getattr(model, "dtype", np.float32)).itemsize
    n_users, n_items = int(model.n_users), int(model.n_items)
    return itemsize * ((n_users + n_items) * int(model.n_factors) + n_items)


class WorkerCollector(Collector):
    """Reads one worker's :class:`~streams.worker.service.RecommenderService` at scrape time."""

    def __init__(self, service: RecommenderService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        learner = service.learner
        totals = learner.health.totals()
        for name, key, doc in _COUNTERS:
            yield CounterMetricFamily(name, doc, value=float(totals.counts[key]))
        dead = CounterMetricFamily("streamrec_dead_letters", "Messages sent to the dead-letter topic, by reason.",
                                   labels=["reason"])
        for reason, n in sorted(totals.dead_letter_reasons.items()):
            dead.add_metric([reason], float(n))
        yield dead
        yield _histogram("streamrec_freshness_seconds", "Event ts to the Redis write of its user's list.",
                         totals.freshness)
        yield _histogram("streamrec_batch_seconds", "Processing time of a batch of events.", totals.batch_seconds)
        yield self._consumer_lag()
        yield GaugeMetricFamily("streamrec_pending_users", "Users whose list waits for Redis.",
                                value=len(service.pending_users))
        model = learner.model
        yield GaugeMetricFamily("streamrec_model_users", "Users of the model held by this worker.", value=model.n_users)
        yield GaugeMetricFamily("streamrec_model_items", "Items of the model (every worker holds all of them).",
                                value=model.n_items)
        yield GaugeMetricFamily("streamrec_model_factor_bytes", "Bytes of the user and item factors held.",
                                value=factor_bytes(model))
        yield GaugeMetricFamily("streamrec_worker_ready", "1 once the worker serves from its recovered state.",
                                value=1.0 if service.ready_ms is not None else 0.0)
        info = GaugeMetricFamily("streamrec_worker_info", "The worker's id (value 1).", labels=["worker_id"])
        info.add_metric([service.worker_id], 1.0)
        yield info
        yield from self._online_quality()

    def _consumer_lag(self) -> GaugeMetricFamily:
        lag = GaugeMetricFamily("streamrec_consumer_lag", "Events behind the high watermark, per assigned partition.",
                                labels=["partition"])
        highwater = self.service.highwater
        if highwater is not None:
            for tp, position in sorted(dict(self.service.positions).items(), key=lambda kv: kv[0].partition):
                high = highwater(tp)
                if high is not None:
                    lag.add_metric([str(tp.partition)], float(max(high - position, 0)))
        return lag

    def _online_quality(self) -> Iterator[Metric]:
        quality = online_quality(self.service.last_health)
        checked = GaugeMetricFamily("streamrec_online_checked", "Events of the last health window whose user had "
                                    "a cached list (the online hit ratios' denominator).")
        ratio = GaugeMetricFamily("streamrec_online_hit_ratio", "Share of those events whose item was in the first "
                                  "k of the user's cached list (last health window).", labels=["k"])
        age = GaugeMetricFamily("streamrec_online_list_age_seconds", "Median age of the cached list an event was "
                                "checked against (last health window).")
        if quality.checked is not None:
            checked.add_metric([], quality.checked)
        for k, value in sorted(quality.hit_ratio.items()):
            ratio.add_metric([k], value)
        if quality.list_age_s is not None:
            age.add_metric([], quality.list_age_s)
        yield from (checked, ratio, age)


def worker_registry(service: RecommenderService) -> CollectorRegistry:
    """A registry of the worker's metrics and its process' (CPU, memory, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(service))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """A running endpoint: its address, and :meth:`stop`."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str, port: int) -> None:
        self.server, self.thread, self.host, self.port = server, thread, host, port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_metrics_server(settings: Settings, registry: CollectorRegistry) -> MetricsServer | None:
    """Serve ``registry`` on the settings' metrics address from a daemon thread; None if the port is 0, or
    (one warning logged) if the address cannot be bound."""
    host, port = settings.metrics_host, settings.metrics_port
    if port == 0:
        return None
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        logger.warning("Prometheus endpoint off: cannot listen on %s:%d (STREAMREC_METRICS_HOST, "
                       "STREAMREC_METRICS_PORT): %s; the worker runs on without it", host, port, exc)
        return None
    bound = server.server_address[1]
    logger.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return MetricsServer(server, thread, host, int(bound))


def register_metrics_endpoint(app: StreamrecApp, service: RecommenderService, settings: Settings) -> None:
    """Start the endpoint when the worker starts (not at import), stop it when the worker stops."""
    registry = worker_registry(service)
    running: list[MetricsServer] = []
    faust_app: Any = app  # Faust's decorators and signals are untyped

    async def serve_metrics() -> None:
        server = start_metrics_server(settings, registry)
        if server is not None:
            running.append(server)

    async def stop_metrics(app: Any, **kwargs: Any) -> None:
        while running:
            await asyncio.to_thread(running.pop().stop)  # waits for the server thread's poll (up to 0.5 s)

    faust_app.task(serve_metrics)
    faust_app.on_before_shutdown.connect(stop_metrics)
