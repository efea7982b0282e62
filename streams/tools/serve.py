"""``streamrec serve``: the HTTP API, for applications in any language (FastAPI + uvicorn).

    GET  /v1/recommendations/{user_id}?n=10&tags=dance,cooking  a user's list (read key)
    GET  /v1/popular?n=10                                         the popular list (read key)
    GET  /v1/trending/{tag}?n=10                                  trending in one community (read key)
    POST /v1/events                                               one event or a JSON array of them (write key)
    GET  /healthz                                                 the process is up
    GET  /readyz                                                  Redis answers and a worker's heartbeat is fresh
    GET  /metrics                                                 Prometheus metrics (read key; streams.tools.http_metrics)
    GET  /openapi.json, /docs                                     the API's description

Reads go through :class:`~streams.client.AsyncRecsReader` (personal, else trending in the given
communities, else popular); ``GET /v1/recommendations`` is answered by :class:`FastRecommendations`, a
pure ASGI handler in front of its FastAPI route (the same answers for a fraction of the CPU); events are validated by :func:`~streams.events.validate_event`, the
worker's contract, and sent by :class:`~streams.client.EventProducer`, as ``streamrec produce`` sends
them. Redis or the broker being down is a ``503`` with a JSON reason, never a ``500``.

Keys: ``STREAMREC_API_KEYS_READ`` and ``STREAMREC_API_KEYS_WRITE`` (comma-separated bearer keys; a
write key also reads). With no key at all only requests from a loopback address are served, and
the server refuses to bind anything but a loopback address. ``STREAMREC_SERVE_RATE_LIMIT`` limits
each client (its key, else its address) on the ``/v1/`` routes (:mod:`streams.tools.ratelimit`);
``--tls-cert`` / ``--tls-key`` serve HTTPS.

It is a module of ``streams.tools`` (what people run), not a package of its own: it is an
application of ``streams.client`` and ``streams.events`` like ``streamrec produce`` and ``streamrec recs``,
and the import rules already keep the worker (and everything but the command line) from importing it.

The committed OpenAPI document is regenerated with ``streamrec serve --openapi > docs/openapi.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import math
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable, Literal
from urllib.parse import parse_qsl

import orjson
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from streams import __version__
from streams.client import AsyncRecsReader, EventProducer, Recommendations, RecSource
from streams.events import MAX_BATCH_EVENTS, MAX_ID, MAX_TAG, MAX_TAGS, InvalidEvent, encode_event, validate_event
from streams.io.redis import REDIS_ERRORS
from streams.settings import Settings
from streams.tools.http_metrics import install_metrics
from streams.tools.ratelimit import RateLimiter

__all__ = ["create_app", "app_from_env", "openapi_document", "run", "Heartbeats", "ApiKeys", "is_loopback", "FastRecommendations"]

logger = logging.getLogger(__name__)

#: A worker's heartbeat (``<prefix>:worker:<id>``, written every second) counts as fresh this long.
HEARTBEAT_FRESH_MS = 30_000
MAX_N = 1000
EVENT_SCHEMA_PATH = FilePath(__file__).resolve().parents[1] / "schemas" / "event.schema.json"

ReaderFactory = Callable[[Settings], AsyncRecsReader]
ProducerFactory = Callable[[Settings], EventProducer]


# --- responses ---------------------------------------------------------------------------------


class RecsOut(BaseModel):
    """A cached list, as :class:`~streams.client.Recommendations` reads it."""

    user_id: str | None
    items: list[str]
    scores: list[float]
    source: RecSource
    updated_ms: int | None = None
    age_ms: int | None = None
    model_version: str | None = None


class EventResult(BaseModel):
    index: int
    event_id: str | None = None
    status: Literal["accepted", "rejected"]
    reason: str | None = None
    detail: str | None = None


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    results: list[EventResult]


class ErrorOut(BaseModel):
    error: str
    detail: str


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    ready: bool
    failed: Literal["redis", "worker_heartbeat"] | None = None
    detail: str | None = None
    workers: list[str] = []


class ApiError(Exception):
    """Answered as ``{"error": ..., "detail": ...}`` with ``status``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{error}: {detail}")
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorOut} for status in statuses}


# --- security ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the rest of the key check
def is_loopback(host: str | None) -> bool:
    """True for a loopback address (or ``localhost``): the only clients served without API keys.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "::ffff:127.0.0.1", "10.0.0.2", "0.0.0.0", None)]
    [True, True, True, True, False, False, False]
    """
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class ApiKeys:
    """The bearer keys of the settings; a write key also reads.

    >>> keys = ApiKeys("r1, r2", "w1")
    >>> keys.scope_of("r2"), keys.scope_of("w1"), keys.scope_of("nope"), keys.configured
    ('read', 'write', None, True)
    """

    def __init__(self, read: str, write: str) -> None:
        self.write = tuple(key.strip().encode() for key in write.split(",") if key.strip())
        self.read = tuple(key.strip().encode() for key in read.split(",") if key.strip())

    @classmethod
    def from_settings(cls, settings: Settings) -> "ApiKeys":
        return cls(settings.api_keys_read, settings.api_keys_write)

    @property
    def configured(self) -> bool:
        return bool(self.read or self.write)

    def scope_of(self, token: str) -> Literal["read", "write"] | None:
        given = token.encode()
        # every key compared in constant time, all of them: the answer's timing tells nothing
        write = [hmac.compare_digest(given, key) for key in self.write]
        read = [hmac.compare_digest(given, key) for key in self.read]
        return "write" if any(write) else "read" if any(read) else None


_bearer = HTTPBearer(auto_error=False, description="An API key of STREAMREC_API_KEYS_READ or STREAMREC_API_KEYS_WRITE.")


def _require(scope: Literal["read", "write"]) -> Callable[..., Awaitable[None]]:
    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
    ) -> None:
        host = request.client.host if request.client else None
        _admit(request.app.state.keys, request.app.state.limiter, scope, host,
               None if credentials is None else credentials.credentials)

    return check


def _admit(keys: ApiKeys, limiter: RateLimiter | None, scope: Literal["read", "write"], host: str | None,
           token: str | None) -> None:
    """Raise the :class:`ApiError` that refuses a request of ``host`` with the bearer ``token`` (or none), if any:
    the key check and the rate limit of every ``/v1/`` route."""
    if not keys.configured:
        if not is_loopback(host):
            raise ApiError(403, "localhost_only", "no API keys are configured (STREAMREC_API_KEYS_READ, "
                                                  "STREAMREC_API_KEYS_WRITE): only localhost is served")
        _limit(limiter, f"address:{host}")
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if token is None:
        raise ApiError(401, "missing_key", "send the header Authorization: Bearer <API key>", challenge)
    granted = keys.scope_of(token)
    if granted is None:
        raise ApiError(401, "unknown_key", "the API key is not one of the configured keys", challenge)
    if scope == "write" and granted != "write":
        raise ApiError(403, "read_only_key", "this key may read lists; posting events needs a write key")
    _limit(limiter, f"key:{token}")  # only known keys get a bucket: memory stays bounded


def _limit(limiter: RateLimiter | None, client: str) -> None:
    """Count the request against ``client``'s rate limit (if one is set): 429 with ``Retry-After`` when over it."""
    if limiter is None:
        return
    wait = limiter.wait(client)
    if wait > 0:
        raise ApiError(429, "rate_limited", f"over {limiter.rate:g} requests/s (burst {limiter.burst:g}) for this "
                       f"client (STREAMREC_SERVE_RATE_LIMIT): retry in {wait:.3f} s",
                       {"Retry-After": str(max(1, math.ceil(wait)))})


def _bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header, read as FastAPI's ``HTTPBearer`` reads them.

    >>> [_bearer_token(h) for h in ("Bearer k1", "bearer  k1 ", "Basic cjE6", "Bearer", None)]
    ['k1', 'k1', None, None, None]
    """
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme and token and scheme.lower() == "bearer" else None


# --- the app -----------------------------------------------------------------------------------


def _recs_out(recs: Recommendations) -> RecsOut:
    return RecsOut(user_id=recs.user_id, items=recs.items, scores=recs.scores, source=recs.source,
                   updated_ms=recs.updated_ms, age_ms=recs.age_ms, model_version=recs.model_version)


def _tags(raw: str | None) -> list[str]:
    tags = [tag.strip() for tag in (raw or "").split(",") if tag.strip()]
    if len(tags) > MAX_TAGS:
        raise ApiError(422, "bad_tags", f"at most {MAX_TAGS} tags, got {len(tags)}")
    long = [tag for tag in tags if len(tag) > MAX_TAG]
    if long:
        raise ApiError(422, "bad_tags", f"a tag has 1 to {MAX_TAG} characters, got {len(long[0])}")
    return tags


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to be larger than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body is {declared} bytes, limit {limit} (STREAMREC_SERVE_MAX_BODY_BYTES)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body is over {limit} bytes (STREAMREC_SERVE_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_list(request: Request, key: str, source: RecSource, n: int | None) -> RecsOut:
    reader: AsyncRecsReader = request.app.state.reader
    try:
        raw = await reader.client.get(key)
    except REDIS_ERRORS as exc:
        raise ApiError(503, "redis_unavailable", str(exc)) from None
    if raw is None:
        return RecsOut(user_id=None, items=[], scores=[], source="none")
    data = orjson.loads(raw)
    updated_ms = data.get("updated_ms")
    return RecsOut(user_id=None, items=data["items"][:n], scores=data["scores"][:n], source=source,
                   updated_ms=updated_ms, age_ms=None if updated_ms is None else int(time.time() * 1000) - updated_ms,
                   model_version=data.get("model_version"))


RECS_PATH = "/v1/recommendations/{user_id}"
_RECS_PREFIX = RECS_PATH.split("{")[0]


class FastRecommendations:
    """Pure ASGI middleware answering ``GET /v1/recommendations/{user_id}``, the hot read, without FastAPI's
    dependency injection and response validation: the same key check and rate limit (:func:`_admit`),
    tags check, reader (personal, else trending, else popular), answers and error shapes, serialised
    with orjson. The FastAPI route of that URL stays declared: it is what the OpenAPI document
    describes, and it answers every request this one hands on: other paths and methods, and any query
    it would have to reject (a bad or repeated ``n``, a repeated ``tags``, an over-long id), so that
    FastAPI's own 422 answers them. It sits inside the metrics middleware and labels its requests with
    that route's template. :func:`create_app` installs it unless ``fast_path=False``.

    >>> [m.cls.__name__ for m in create_app(Settings()).user_middleware]
    ['_RequestMetrics', 'FastRecommendations']
    """

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app, self.api = app, api
        self.route = next(route for route in api.routes if isinstance(route, APIRoute) and route.path == RECS_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "GET" or not path.startswith(_RECS_PREFIX):
            await self.app(scope, receive, send)
            return
        user_id = path[len(_RECS_PREFIX):]
        query = _recs_query(scope["query_string"])
        if query is None or not 0 < len(user_id) <= MAX_ID or "/" in user_id or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        state = self.api.state
        client = scope.get("client")
        authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        try:
            _admit(state.keys, state.limiter, "read", client[0] if client else None,
                   _bearer_token(authorization.decode("latin-1") if authorization is not None else None))
            reader: AsyncRecsReader = state.reader
            recs = await reader.get(user_id, n=query[0], tags=_tags(query[1]))
            if recs.source == "unavailable":
                raise ApiError(503, "redis_unavailable", recs.error or "Redis is unavailable")
        except ApiError as exc:
            await _send_json(send, exc.status, {"error": exc.error, "detail": exc.detail}, exc.headers)
            return
        await _send_json(send, 200, {
            "user_id": recs.user_id, "items": recs.items, "scores": [float(score) for score in recs.scores],
            "source": recs.source, "updated_ms": recs.updated_ms, "age_ms": recs.age_ms,
            "model_version": recs.model_version})  # fmt: skip


def _recs_query(raw: bytes) -> tuple[int | None, str | None] | None:
    """``n`` and ``tags`` of a query string, or None if FastAPI's validation should judge it.

    >>> [_recs_query(q) for q in (b"", b"n=10&tags=a,b&x=1", b"n=0", b"n=1001", b"n=x", b"n=1&n=2", b"tags=")]
    [(None, None), (10, 'a,b'), None, None, None, None, (None, '')]
    """
    n: int | None = None
    tags: str | None = None
    seen = set()
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):  # as Starlette reads it
        if name in seen:
            return None
        seen.add(name)
        if name == "n":
            if not (value.isascii() and value.isdigit() and len(value) <= len(str(MAX_N))):
                return None
            n = int(value)
            if not 1 <= n <= MAX_N:
                return None
        elif name == "tags":
            tags = value
    return n, tags


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    content = orjson.dumps(body)
    raw = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})


class Heartbeats:
    """Which workers' heartbeats (``<prefix>:worker:<id>``) are under ``HEARTBEAT_FRESH_MS`` old.

    Finding the workers takes a SCAN of the keyspace, which holds a key per user: it is done at most
    every ``RESCAN_S`` seconds (or ``RESCAN_IDLE_S`` while none of the known workers is fresh); in between,
    a readiness check reads the known workers' keys only.
    """

    RESCAN_S = 60.0
    RESCAN_IDLE_S = 5.0

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.prefix = settings.worker_key("")
        self.known: list[str] = []
        self.scanned_at = float("-inf")

    async def fresh(self, client: Any) -> list[str]:
        since = self.clock() - self.scanned_at
        fresh = [] if since >= self.RESCAN_S else await self._fresh(client, self.known)
        if not fresh and since >= min(self.RESCAN_IDLE_S, self.RESCAN_S):
            self.known = sorted({_text(key)[len(self.prefix):]
                                 async for key in client.scan_iter(match=self.prefix + "*", count=1000)})
            self.scanned_at = self.clock()
            fresh = await self._fresh(client, self.known)
        return fresh

    async def _fresh(self, client: Any, workers: list[str]) -> list[str]:
        now_ms = int(time.time() * 1000)
        fresh = []
        for worker in workers:
            raw = await client.get(self.prefix + worker)
            try:
                beat = orjson.loads(raw) if raw is not None else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(beat, dict) and now_ms - int(beat.get("heartbeat_ms") or 0) <= HEARTBEAT_FRESH_MS:
                fresh.append(worker)
        return fresh


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _event_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(EVENT_SCHEMA_PATH.read_text(encoding="utf-8"))
    return {key: value for key, value in schema.items() if key not in ("$schema", "$id")}


def create_app(
    settings: Settings,
    *,
    reader_factory: ReaderFactory = AsyncRecsReader,
    producer_factory: ProducerFactory = EventProducer,
    fast_path: bool = True,
) -> FastAPI:
    """The ASGI app; its lifespan starts the Redis reader and the event producer (the factories: for tests).
    ``fast_path`` off: ``GET /v1/recommendations`` is answered by its FastAPI route (the same answers, more CPU)."""

    async def start_producer(app: FastAPI) -> EventProducer:
        """The started producer; started now if it is not (the broker was away): raises if it cannot be."""
        producer: EventProducer | None = app.state.producer
        if producer is None:
            producer = producer_factory(settings)
            await producer.start()
            app.state.producer = producer
        return producer

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.reader, app.state.producer = reader_factory(settings), None
        try:
            await start_producer(app)
        except (KafkaError, OSError) as exc:  # reads still work; posting events starts it again
            logger.warning("broker unavailable, events will be refused until it is back: %r", exc)
        try:
            yield
        finally:
            try:
                if app.state.producer is not None:
                    await app.state.producer.stop()
            except Exception as exc:  # undelivered events at shutdown: said, not hidden
                logger.error("events not delivered at shutdown: %r", exc)
            finally:
                await app.state.reader.close()

    app = FastAPI(
        title="streamrec", version=__version__, lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks: unused (metrics are Prometheus', /metrics), and looking for their
        # providers costs ~20 µs per request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        description="Recommendations cached by the streamrec workers, and the events they learn from.",
    )  # fmt: skip
    app.state.keys = ApiKeys.from_settings(settings)
    app.state.limiter = (RateLimiter(settings.serve_rate_limit, settings.serve_rate_burst)
                         if settings.serve_rate_limit > 0 else None)
    read, write = Depends(_require("read")), Depends(_require("write"))
    sending = asyncio.Lock()
    heartbeats = Heartbeats(settings)
    if fast_path:  # added before the metrics middleware: inside it, so its requests are counted
        app.add_middleware(FastRecommendations, api=app)
    http_metrics = install_metrics(app, dependencies=[read], responses=_errors(401, 403))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.get(RECS_PATH, response_model=RecsOut, dependencies=[read],
             responses=_errors(401, 403, 429, 503))
    async def recommendations(
        request: Request,
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
        n: Annotated[int | None, Query(ge=1, le=MAX_N, description="at most this many items (default: all)")] = None,
        tags: Annotated[str | None, Query(description="for an unknown user, communities to take trending lists "
                                                      "from, comma-separated, in order")] = None,
    ) -> RecsOut:
        """The user's list; for an unknown user, the list trending in the first of `tags` that has one; else
        the popular list (`source`: personal, popular_tag, popular or none). Redis down: 503."""
        reader: AsyncRecsReader = request.app.state.reader
        recs = await reader.get(user_id, n=n, tags=_tags(tags))
        if recs.source == "unavailable":
            raise ApiError(503, "redis_unavailable", recs.error or "Redis is unavailable")
        return _recs_out(recs)

    @app.get("/v1/popular", response_model=RecsOut, dependencies=[read], responses=_errors(401, 403, 429, 503))
    async def popular(
        request: Request, n: Annotated[int | None, Query(ge=1, le=MAX_N)] = None
    ) -> RecsOut:
        """The popular-recently list (`source`: popular, or none before a worker wrote one)."""
        return await _read_list(request, settings.popular_key, "popular", n)

    @app.get("/v1/trending/{tag}", response_model=RecsOut, dependencies=[read], responses=_errors(401, 403, 429, 503))
    async def trending(
        request: Request,
        tag: Annotated[str, Path(min_length=1, max_length=MAX_TAG)],
        n: Annotated[int | None, Query(ge=1, le=MAX_N)] = None,
    ) -> RecsOut:
        """The list trending in one community tag (`source`: popular_tag, or none if it has none)."""
        return await _read_list(request, settings.tag_popular_key(tag), "popular_tag", n)

    event_ref = {"$ref": "#/components/schemas/Event"}
    body_schema = {"oneOf": [event_ref, {"type": "array", "items": event_ref, "minItems": 1,
                                         "maxItems": MAX_BATCH_EVENTS}]}

    @app.post("/v1/events", status_code=202, response_model=EventsOut, dependencies=[write],
              responses=_errors(400, 401, 403, 413, 429, 503),
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}})
    async def post_events(request: Request) -> EventsOut:
        """One event or a JSON array of up to 2,000, each validated on its own by the worker's contract: the
        valid ones are sent to `<prefix>.events` (key = user_id) and are on the broker when this answers 202;
        each result says `accepted` or the rejection `reason`. The broker down: 503 (send them again: the
        worker applies a repeated `event_id` once)."""
        body = await _read_body(request, settings.serve_max_body_bytes)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "not_json", str(exc)[:200]) from None
        items = data if isinstance(data, list) else [data]
        if not items:
            raise ApiError(400, "empty", "the array holds no events")
        if len(items) > MAX_BATCH_EVENTS:
            raise ApiError(413, "too_many_events", f"{len(items)} events, limit {MAX_BATCH_EVENTS} per request")
        results, encoded = [], []
        for index, item in enumerate(items):
            event_id = item.get("event_id") if isinstance(item, dict) else None
            event_id = event_id if isinstance(event_id, str) else None
            try:
                encoded.append(encode_event(validate_event(item)))
            except InvalidEvent as exc:
                results.append(EventResult(index=index, event_id=event_id, status="rejected", reason=exc.reason,
                                           detail=exc.detail))
                continue
            results.append(EventResult(index=index, event_id=event_id, status="accepted"))
        try:
            # One request's events sent and flushed at a time: a flush reports the delivery errors of every
            # message sent since the last one, so a failure must not be answered to another request.
            async with sending:
                if encoded:
                    producer = await start_producer(request.app)
                    for key, value in encoded:
                        await producer.send_encoded(key, value)
                    await producer.flush()
        except (KafkaError, OSError) as exc:
            raise ApiError(503, "broker_unavailable", f"events not confirmed by the broker: {exc!r}") from None
        http_metrics.count_events(len(encoded), (r.reason for r in results if r.status == "rejected"))
        return EventsOut(accepted=len(encoded), rejected=len(items) - len(encoded), results=results)

    @app.get("/healthz", response_model=HealthOut)
    async def healthz() -> HealthOut:
        """The process is up (no dependency checked)."""
        return HealthOut(status="ok")

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
    async def readyz(request: Request) -> JSONResponse:
        """Redis answers and at least one worker's heartbeat is under 30 s old; else 503 with the check that
        failed (`redis` or `worker_heartbeat`)."""
        reader: AsyncRecsReader = request.app.state.reader
        try:
            await reader.client.ping()
            workers = await heartbeats.fresh(reader.client)
        except REDIS_ERRORS as exc:
            return JSONResponse(ReadyOut(ready=False, failed="redis", detail=str(exc)).model_dump(), status_code=503)
        if not workers:
            detail = f"no worker heartbeat ({settings.worker_key('*')}) in the last {HEARTBEAT_FRESH_MS // 1000} s"
            return JSONResponse(ReadyOut(ready=False, failed="worker_heartbeat", detail=detail).model_dump(),
                                status_code=503)
        return JSONResponse(ReadyOut(ready=True, workers=workers).model_dump())

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["Event"] = _event_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    from streams.tools.dashboard import install_dashboard  # GET / (the live dashboard) and GET /v1/stream

    install_dashboard(app, settings, _require("read"))
    return app


def openapi_document() -> str:
    """The OpenAPI document of the app, as committed in ``docs/openapi.json`` (settings do not change it)."""
    return json.dumps(create_app(Settings()).openapi(), indent=2, ensure_ascii=False) + "\n"


# --- the command ------------------------------------------------------------------------------


def app_from_env() -> FastAPI:
    """The app of the ``STREAMREC_*`` environment: what each process imports with ``--workers`` above 1.

    >>> app_from_env().title
    'streamrec'
    """
    return create_app(Settings.from_env())


def run(args: argparse.Namespace) -> int:
    if args.openapi:
        sys.stdout.write(openapi_document())
        return 0
    settings = Settings.from_env()
    host = args.host or settings.serve_host
    port = args.port or settings.serve_port
    workers = args.workers or settings.serve_workers
    cert, key = args.tls_cert or settings.serve_tls_cert, args.tls_key or settings.serve_tls_key
    if not ApiKeys.from_settings(settings).configured and not is_loopback(host):
        print(f"streamrec serve: refusing to bind {host} without API keys: set STREAMREC_API_KEYS_READ / "
              "STREAMREC_API_KEYS_WRITE, or bind 127.0.0.1", file=sys.stderr)
        return 2
    if bool(cert) != bool(key):
        print("streamrec serve: --tls-cert and --tls-key (STREAMREC_SERVE_TLS_CERT / _KEY) go together",
              file=sys.stderr)
        return 2
    unreadable = [path for path in (cert, key) if path and not FilePath(path).is_file()]
    if unreadable:
        print(f"streamrec serve: no such TLS file: {unreadable[0]}", file=sys.stderr)
        return 2
    if workers < 1:
        print(f"streamrec serve: --workers must be >= 1, got {workers}", file=sys.stderr)
        return 2
    import uvicorn

    options: dict[str, Any] = {"host": host, "port": port, "log_level": settings.log_level.lower(),
                               "access_log": settings.serve_access_log}
    if cert:
        options.update(ssl_certfile=cert, ssl_keyfile=key)
    if workers > 1:  # each worker process builds its app from the environment, which it inherits
        uvicorn.run("streams.tools.serve:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0
