"""The live dashboard of ``streamrec serve``: ``GET /`` (the page) and ``GET /v1/stream`` (server-sent events).

One group-less consumer of ``<prefix>.metrics`` per server process, started when the first page
connects, feeds a :class:`MetricsHistory`: the recent past, bounded, which a page that opens gets at
once, then every new record as it arrives. The page (``streams/tools/static/``) draws it with the
vendored uPlot; nothing is fetched from another site.

Events of ``/v1/stream`` (each ``data`` is one line of JSON):

* ``history``: ``{"records": [...]}``, first on every connection: the recent past (the page starts
  from it afresh). Revisions of one window are summed into one record, so ``views``, ``likes`` and
  ``shares`` of all records of an id still add up to the topic's.
* ``records``: ``{"records": [...]}``: new records of the topic, as they are (fence records left out).
* ``status``: ``{"state": "ok" | "waiting" | "unreachable" | "starting", "detail": ...}``: the broker,
  as this server's consumer sees it.

Keys: with ``STREAMREC_API_KEYS_READ`` / ``_WRITE`` set, the stream needs a read (or write) key. A
browser's EventSource cannot send headers, so besides ``Authorization: Bearer`` the key is taken from
the ``streamrec_key`` cookie (the page sets it from ``/#key=<key>``: a URL fragment never reaches a
server or its logs) or from ``?key=`` (appears in access logs: for tools only). The page and its
static files hold no data and are served to anyone the server answers.

>>> history = MetricsHistory(keep_ms=60_000)
>>> history.add([{"type": "tag", "id": "dance", "window_start_ms": 0, "window_end_ms": 10_000, "revision": 0,
...               "views": 5, "likes": 2, "shares": 0},
...              {"type": "tag", "id": "dance", "window_start_ms": 0, "window_end_ms": 10_000, "revision": 1,
...               "views": 3, "likes": 0, "shares": 1}])
>>> [(r["id"], r["views"], r["likes"], r["shares"]) for r in history.snapshot()]
[('dance', 8, 2, 1)]
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import orjson
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from streams.settings import Settings

__all__ = ["MetricsHistory", "Subscription", "MetricsFeed", "install_dashboard", "STATIC_DIR", "KEY_COOKIE"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The cookie the page keeps a key in for ``/v1/stream`` (EventSource cannot send an Authorization header).
KEY_COOKIE = "streamrec_key"
KEEPALIVE_S = 15.0
#: Security headers of the page: its own scripts and styles only, nothing from another origin.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_COUNTS = ("views", "likes", "shares")


# --- history and fan-out -------------------------------------------------------------------------


class Subscription:
    """One connected page: ``(event, data)`` to send it, ``None`` once its stream must end."""

    def __init__(self, max_pending: int) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(max_pending + 1)
        self.max_pending = max_pending

    def push(self, event: str, data: bytes) -> bool:
        """Queue an event; False when the page is too far behind (its stream ends; it reconnects afresh)."""
        if self.queue.qsize() >= self.max_pending:
            return False
        self.queue.put_nowait((event, data))
        return True


class MetricsHistory:
    """The recent past of the metrics topic, bounded, and the pages that follow it.

    Kept: tag and creator windows whose end is within ``keep_ms`` of the newest window seen (revisions
    of one window summed into one record), item windows of the newest ``item_windows`` window starts
    (what trends *now*), and each worker's health records within ``keep_ms`` of its newest one; at most
    ``max_keys`` windows in all (the oldest go first). Fence records are left out.

    >>> history = MetricsHistory(keep_ms=20_000)
    >>> sub = history.subscribe()
    >>> history.add([{"type": "health", "worker_id": "w1", "window_start_ms": 0, "window_end_ms": 5_000}])
    >>> [sub.queue.get_nowait()[0] for _ in range(sub.queue.qsize())]
    ['history', 'status', 'records']
    """

    def __init__(self, keep_ms: int = 600_000, item_windows: int = 2, max_keys: int = 100_000,
                 max_pending: int = 1_000) -> None:
        self.keep_ms = keep_ms
        self.item_windows = item_windows
        self.max_keys = max_keys
        self.max_pending = max_pending
        self.windows: OrderedDict[tuple[str, str, int], dict[str, Any]] = OrderedDict()
        self.health: dict[str, deque[dict[str, Any]]] = {}
        self.newest_end_ms = 0
        self.item_starts: list[int] = []  # the newest item window starts, ascending
        self.subscribers: set[Subscription] = set()
        self.status: dict[str, Any] = {"state": "starting", "detail": "connecting to the broker"}
        self.records = 0

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        """Keep ``records`` (decoded values of the topic) and send them to every subscriber."""
        batch = []
        for record in records:
            if not isinstance(record, dict) or not self._keep(record):
                continue
            self.records += 1
            batch.append(orjson.dumps(record))
        if batch:
            self._prune()
            self._publish("records", b'{"records":[' + b",".join(batch) + b"]}")

    def snapshot(self) -> list[dict[str, Any]]:
        """What a page gets when it connects: the kept windows, then the health records, oldest first."""
        health = sorted((r for rs in self.health.values() for r in rs), key=lambda r: r.get("window_end_ms", 0))
        return [*sorted(self.windows.values(), key=lambda r: r["window_start_ms"]), *health]

    def history_event(self) -> bytes:
        """The data of the ``history`` event: :meth:`snapshot` as ``{"records": [...]}``."""
        return b'{"records":[' + b",".join(orjson.dumps(r) for r in self.snapshot()) + b"]}"

    def subscribe(self) -> Subscription:
        """A new page: its subscription gets the history, the status, then what comes."""
        sub = Subscription(self.max_pending)
        sub.push("history", self.history_event())
        sub.push("status", orjson.dumps(self.status))
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    def set_status(self, state: str, detail: str = "") -> None:
        """The feed's state (``ok``, ``waiting``, ``unreachable``); subscribers are told of changes."""
        status = {"state": state, "detail": detail}
        if status != self.status:
            self.status = status
            self._publish("status", orjson.dumps(status))

    def close(self) -> None:
        """End every subscriber's stream (the server is stopping)."""
        for sub in list(self.subscribers):
            self._drop(sub)

    def _publish(self, event: str, data: bytes) -> None:
        for sub in list(self.subscribers):
            if not sub.push(event, data):
                self._drop(sub)

    def _drop(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    def _keep(self, record: dict[str, Any]) -> bool:
        kind = record.get("type")
        if kind == "health" and isinstance(record.get("worker_id"), str):
            self.health.setdefault(record["worker_id"], deque()).append(record)
            return True
        if kind not in ("tag", "creator", "item"):
            return False  # fences and anything unknown
        try:
            start, end = int(record["window_start_ms"]), int(record["window_end_ms"])
            key = (kind, str(record["id"]), start)
            counts = [int(record.get(name) or 0) for name in _COUNTS]
        except (KeyError, TypeError, ValueError):
            return False
        self.newest_end_ms = max(self.newest_end_ms, end)
        if kind == "item":
            if start not in self.item_starts:
                if len(self.item_starts) >= self.item_windows and start < self.item_starts[0]:
                    return True  # too old to trend now: sent on, not kept
                self.item_starts = sorted([*self.item_starts, start])[-self.item_windows:]
        kept = self.windows.get(key)
        if kept is None:
            kept = self.windows[key] = {name: value for name, value in record.items() if name != "unique_users"}
            kept.update(zip(_COUNTS, counts))
        else:
            for name, value in zip(_COUNTS, counts):
                kept[name] += value
        views, likes, shares = kept["views"], kept["likes"], kept["shares"]
        kept["like_rate"], kept["share_rate"] = (likes / views, shares / views) if views else (None, None)
        return True

    def _prune(self) -> None:
        oldest_end = self.newest_end_ms - self.keep_ms
        oldest_item = self.item_starts[0] if self.item_starts else 0
        stale = [key for key, r in self.windows.items()
                 if r["window_end_ms"] < oldest_end or (key[0] == "item" and key[2] < oldest_item)]
        for key in stale:
            del self.windows[key]
        while len(self.windows) > self.max_keys:
            self.windows.popitem(last=False)
        for worker, records in list(self.health.items()):
            newest = max(int(r.get("window_end_ms") or 0) for r in records)
            while records and int(records[0].get("window_end_ms") or 0) < newest - self.keep_ms:
                records.popleft()
            while len(records) > 10_000:
                records.popleft()


# --- the consumer --------------------------------------------------------------------------------


class MetricsFeed:
    """Follows ``<prefix>.metrics`` into a :class:`MetricsHistory` (no consumer group: it never disturbs the
    workers); from ``keep_ms`` ago at start. The broker away or the topic missing: said in the history's
    status, tried again every ``retry_s``."""

    def __init__(self, settings: Settings, history: MetricsHistory, retry_s: float = 3.0) -> None:
        self.settings, self.history, self.retry_s = settings, history, retry_s
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run(), name="streamrec-dashboard-feed")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                from streams.tools.reach import kafka_address, short_reason

                self.history.set_status("unreachable", f"metrics topic unreachable: Kafka at "
                                                       f"{kafka_address(self.settings)}: {short_reason(exc)}")
            await asyncio.sleep(self.retry_s)

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from streams.io.kafka import aiokafka_options, assign_all_partitions

        topic = self.settings.metrics_topic
        consumer = AIOKafkaConsumer(**aiokafka_options(self.settings), enable_auto_commit=False,
                                    auto_offset_reset="earliest", request_timeout_ms=10_000)
        try:
            await asyncio.wait_for(consumer.start(), 15)
            tps = await asyncio.wait_for(assign_all_partitions(consumer, self.settings, topic, from_beginning=False),
                                         15)
            if not tps:
                self.history.set_status("waiting", f"topic {topic} does not exist yet (is a worker running?)")
                return
            await self._seek_recent(consumer, tps)
            self.history.set_status("ok", f"following {topic}")
            silent_s = 0.0
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
                records = [_decode(m.value) for messages in batches.values() for m in messages]
                if records:
                    silent_s = 0.0
                    self.history.add(r for r in records if r is not None)
                    continue
                silent_s += 0.5
                if silent_s >= 5.0:  # a consumer waits for a lost broker without a word: ask it
                    silent_s = 0.0
                    await self._probe()
        finally:
            await consumer.stop()

    async def _seek_recent(self, consumer: Any, tps: list[Any]) -> None:
        import time

        since_ms = int(time.time() * 1000) - self.history.keep_ms
        try:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        except KafkaError:  # a broker without timestamp lookups: from the beginning, bounded by the history
            await consumer.seek_to_beginning(*tps)
            return
        for tp in tps:
            at = found.get(tp)
            if at is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, at.offset)

    async def _probe(self) -> None:
        from aiokafka.client import AIOKafkaClient

        from streams.io.kafka import aiokafka_options

        client = AIOKafkaClient(**aiokafka_options(self.settings), request_timeout_ms=3_000)
        try:
            await asyncio.wait_for(client.bootstrap(), 5)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            from streams.tools.reach import kafka_address, short_reason

            self.history.set_status("unreachable", f"metrics topic unreachable: Kafka at "
                                                   f"{kafka_address(self.settings)}: {short_reason(exc)}")
        else:
            self.history.set_status("ok", f"following {self.settings.metrics_topic}")
        finally:
            await client.close()


def _decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        record = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


# --- the routes ----------------------------------------------------------------------------------


def sse_message(event: str, data: bytes) -> bytes:
    """One server-sent event; ``data`` is one line (compact JSON).

    >>> sse_message("status", b'{"state":"ok"}')
    b'event: status\\ndata: {"state":"ok"}\\n\\n'
    """
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


async def _stream(history: MetricsHistory, sub: Subscription) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 3000\n\n"
        while True:
            try:
                item = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield b": keepalive\n\n"
                continue
            if item is None:
                return
            yield sse_message(*item)
    finally:
        history.unsubscribe(sub)


def install_dashboard(app: FastAPI, settings: Settings, check_read: Callable[..., Any]) -> MetricsHistory:
    """Add ``GET /``, ``/static/...`` and ``GET /v1/stream`` to ``app``; its lifespan then also stops the
    feed. ``check_read(request, credentials)`` is the app's read-scope check (raises when refused)."""
    history = MetricsHistory()
    feed = MetricsFeed(settings, history)
    app.state.dashboard = history
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        restore = _end_streams_on_signals(history)
        try:
            async with inner(app_) as state:
                yield state
        finally:
            restore()
            history.close()
            await feed.stop()

    app.router.lifespan_context = lifespan
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/v1/stream", response_class=StreamingResponse, responses={
        200: {"content": {"text/event-stream": {}}, "description": "server-sent events: history, records, status"},
        401: {"description": "a key is needed"}, 403: {"description": "not served to this client"}})
    async def stream(request: Request, key: str | None = None) -> StreamingResponse:
        """The metrics topic live, as server-sent events (`history`, then `records` and `status`); read key:
        `Authorization: Bearer`, the `streamrec_key` cookie, or `?key=`."""
        await check_read(request, _credentials(request, key))
        feed.start()
        return StreamingResponse(_stream(history, history.subscribe()), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/stream/status", responses={401: {"description": "a key is needed"},
                                             403: {"description": "not served to this client"}})
    async def stream_status(request: Request, key: str | None = None) -> JSONResponse:
        """The state of the metrics feed, `{"state", "detail"}` (`state`: starting, ok, waiting for the
        topic, unreachable); the same keys as `/v1/stream`."""
        await check_read(request, _credentials(request, key))
        return JSONResponse(history.status)

    return history


def _credentials(request: Request, key: str | None) -> Any:
    """The key of a stream request: ``?key=``, else the cookie, else ``Authorization: Bearer``."""
    from fastapi.security import HTTPAuthorizationCredentials

    given = key or request.cookies.get(KEY_COOKIE)
    header = request.headers.get("authorization", "")
    if not given and header[:7].lower() == "bearer ":
        given = header[7:].strip()
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=given) if given else None


def _end_streams_on_signals(history: MetricsHistory) -> Callable[[], None]:
    """uvicorn waits for open responses before it stops, and an event stream never ends by itself: on
    SIGINT / SIGTERM the streams are ended, then uvicorn's own handler runs. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if not callable(handler):
            continue

        def chained(number: int, frame: Any, handler: Callable[[int, Any], Any] = handler) -> None:
            loop.call_soon_threadsafe(history.close)
            handler(number, frame)

        previous[sig] = handler
        signal.signal(sig, chained)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
