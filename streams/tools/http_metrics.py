"""Prometheus metrics of ``streamrec serve``: ``GET /metrics`` and what it counts.

:func:`install_metrics` adds to a FastAPI app an ASGI middleware that counts every HTTP request by
route *template* (``/v1/recommendations/{user_id}``, never the raw path, so that the number of series
stays bounded; ``unmatched`` for paths no route knows), method and status, and times it; the
``/metrics`` route that serves them; and :meth:`HttpMetrics.count_events` for the events the API
accepted or rejected. Each app has its own registry (plus the process' CPU and memory).

>>> from fastapi import FastAPI
>>> app = FastAPI()
>>> metrics = install_metrics(app)
>>> metrics.count_events(2, ["bad_kind"])
>>> metrics.registry.get_sample_value("streamrec_http_events_rejected_total", {"reason": "bad_kind"})
1.0
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

from fastapi import FastAPI, params
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpMetrics", "install_metrics", "UNMATCHED"]

#: The route label of requests no route matched (404s of arbitrary paths: one series, not one per path).
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Upper bounds (seconds) of the request-duration histogram.
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """The server's counters and histogram, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("streamrec_http_requests", "HTTP requests answered, by route template, method and "
                                "status.", ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram("streamrec_http_request_duration_seconds", "Time to answer an HTTP request, by route "
                                  "template and method.", ["route", "method"], buckets=DURATION_BUCKETS_S,
                                  registry=self.registry)
        self.events_accepted = Counter("streamrec_http_events_accepted", "Events accepted by POST /v1/events (on the "
                                       "broker when it answered).", registry=self.registry)
        self.events_rejected = Counter("streamrec_http_events_rejected", "Events rejected by POST /v1/events, by the "
                                       "event contract's reason.", ["reason"], registry=self.registry)
        ProcessCollector(registry=self.registry)
        # (route, method, status) -> its counter and histogram: looking labels up costs more than counting.
        # Bounded: routes are templates, methods a fixed set, statuses three digits.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        method = method if method in _METHODS else "other"
        series = self._series.get((route, method, status))
        if series is None:
            series = (self.requests.labels(route, method, str(status)), self.duration.labels(route, method))
            self._series[(route, method, status)] = series
        series[0].inc()
        series[1].observe(seconds)

    def count_events(self, accepted: int, rejected_reasons: Iterable[str | None]) -> None:
        """Count the events of one answered POST: how many were accepted, and why each other one was not."""
        self.events_accepted.inc(accepted)
        for reason in rejected_reasons:
            self.events_rejected.labels(reason or "unknown").inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class _RequestMetrics:
    """ASGI middleware: times each HTTP request and counts it under the template of the route that
    answered it (Starlette's router puts the matched route in the scope)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started: the server answers 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None)
            self.metrics.observe(route if isinstance(route, str) else UNMATCHED, scope["method"], status,
                                 time.perf_counter() - started)


def install_metrics(
    app: FastAPI,
    *,
    dependencies: Sequence[params.Depends] = (),
    responses: dict[int | str, dict[str, Any]] | None = None,
) -> HttpMetrics:
    """Count ``app``'s requests and serve them on ``GET /metrics`` (guarded by ``dependencies``: the
    server passes its read-key check, so ``/metrics`` follows the rules of the other read routes)."""
    metrics = HttpMetrics()
    app.add_middleware(_RequestMetrics, metrics=metrics)

    text: dict[int | str, dict[str, Any]] = {200: {"description": "Prometheus' text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}

    # response_class Response (no media type of its own): the errors of ``responses`` stay JSON in the document.
    @app.get("/metrics", response_class=Response, dependencies=list(dependencies), responses={**text, **(responses or {})},
             summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        """Request counts and durations by route, events accepted and rejected, and the process' CPU and
        memory, in Prometheus' text format (read key)."""
        return PlainTextResponse(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return metrics
