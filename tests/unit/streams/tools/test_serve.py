"""``streamrec serve`` through httpx's ASGI transport: the real app, reader and producer, with Redis and
aiokafka's producer replaced at the module boundary (a dict-backed client; tests.unit.streams.test_client's
stand-in producer). Auth by scope, localhost-only without keys, bad input, Redis and broker down (503,
never 500), the committed OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import orjson
import pytest
import redis
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from streams.client import AsyncRecsReader, EventProducer
from streams.events import kafka_partition
from streams.settings import Settings
from streams.tools.serve import Heartbeats, create_app, openapi_document
from tests.unit.streams.test_client import FakeKafkaProducer

ROOT = Path(__file__).resolve().parents[4]
LOCAL = ("127.0.0.1", 40000)
REMOTE = ("203.0.113.9", 40000)
EVERYWHERE = "0.0.0.0"  # noqa: S104  the address serve must refuse to bind without keys


class FakeRedis:
    """The calls the reader and the app make, on a dict; ``down`` makes every call fail as a refused connection."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return [self.data.get(k) for k in keys]

    async def get(self, key: str | bytes) -> bytes | None:
        self._check()
        return self.data.get(key.decode() if isinstance(key, bytes) else key)

    async def ping(self) -> bool:
        self._check()
        return True

    async def scan_iter(self, match: str, count: int) -> AsyncIterator[bytes]:
        self._check()
        for key in list(self.data):
            if key.startswith(match.rstrip("*")):
                yield key.encode()

    async def aclose(self) -> None: ...


def a_list(items: list[str], source: str, updated_ms: int | None = None) -> bytes:
    return orjson.dumps({"items": items, "scores": [1.0 / (k + 1) for k in range(len(items))],
                         "updated_ms": updated_ms or int(time.time() * 1000) - 1500, "model_version": "bpr-x-1",
                         "source": source})


def event(k: int, **changes: Any) -> dict[str, Any]:
    return {"event_id": f"e{k}", "user_id": f"u{k % 3}", "item_id": f"i{k}", "kind": "view",
            "ts": 1_700_000_000_000, **changes}


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeRedis, FakeKafkaProducer]:
    kafka = FakeKafkaProducer()
    monkeypatch.setattr("streams.client.AIOKafkaProducer", lambda **options: kafka)
    return FakeRedis(), kafka


@pytest.fixture
def serve(fakes: tuple[FakeRedis, FakeKafkaProducer]) -> Any:
    """``async with serve(client=..., **settings) as http``: the app started (lifespan), an httpx client on it."""
    fake_redis, _ = fakes

    @asynccontextmanager
    async def start(
        client: tuple[str, int] = LOCAL, fast_path: bool = True, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(topic_prefix="t", redis_prefix="p", partitions=4, **overrides)
        app = create_app(settings, reader_factory=lambda s: AsyncRecsReader(s, client=fake_redis),  # type: ignore[arg-type]
                         producer_factory=lambda s: EventProducer(s, create_topics=False), fast_path=fast_path)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                yield http

    return start


def sent_events(kafka: FakeKafkaProducer) -> list[tuple[int | None, dict[str, Any]]]:
    return [(partition, e) for partition, value in kafka.sent for e in orjson.loads(value)]


# --- reading -----------------------------------------------------------------------------------


async def test_recommendations_personal_then_trending_then_popular(serve, fakes):
    fake_redis, _ = fakes
    fake_redis.data.update({"p:rec:u1": a_list(["i1", "i2", "i3"], "personal"),
                            "p:popular:tag:dance": a_list(["d1", "d2"], "popular_tag"),
                            "p:popular": a_list(["top1", "top2"], "popular")})
    async with serve() as http:
        mine = (await http.get("/v1/recommendations/u1", params={"n": 2})).json()
        assert mine["items"] == ["i1", "i2"] and mine["source"] == "personal" and mine["model_version"] == "bpr-x-1"
        assert 1000 <= mine["age_ms"] < 60_000 and len(mine["scores"]) == 2
        new = (await http.get("/v1/recommendations/new", params={"tags": "cooking, dance"})).json()
        assert (new["source"], new["items"]) == ("popular_tag", ["d1", "d2"])
        other = (await http.get("/v1/recommendations/new", params={"tags": "cooking"})).json()
        assert (other["source"], other["items"]) == ("popular", ["top1", "top2"])
        assert (await http.get("/v1/popular", params={"n": 1})).json()["items"] == ["top1"]
        trending = (await http.get("/v1/trending/dance")).json()
        assert (trending["source"], trending["items"]) == ("popular_tag", ["d1", "d2"])
        assert (await http.get("/v1/trending/knitting")).json()["source"] == "none"
        fake_redis.data.clear()
        empty = await http.get("/v1/recommendations/u1")
        assert empty.status_code == 200 and (empty.json()["source"], empty.json()["items"]) == ("none", [])


@pytest.mark.parametrize("path", ["/v1/recommendations/u1?tags=dance", "/v1/popular", "/v1/trending/dance", "/readyz"])
async def test_redis_down_is_503_with_a_reason_never_500(serve, fakes, path):
    fake_redis, _ = fakes
    fake_redis.down = True
    async with serve() as http:
        answer = await http.get(path)
    assert answer.status_code == 503
    body = answer.json()
    if path == "/readyz":
        assert (body["ready"], body["failed"]) == (False, "redis") and "refused" in body["detail"]
    else:
        assert body["error"] == "redis_unavailable" and "refused" in body["detail"]


async def test_readyz_needs_redis_and_a_fresh_worker_heartbeat(serve, fakes, monkeypatch):
    fake_redis, _ = fakes
    monkeypatch.setattr(Heartbeats, "RESCAN_IDLE_S", 0.0)  # look for workers again at every check
    async with serve() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        none = await http.get("/readyz")
        assert none.status_code == 503 and none.json()["failed"] == "worker_heartbeat"
        fake_redis.data["p:worker:old"] = orjson.dumps({"heartbeat_ms": int(time.time() * 1000) - 120_000})
        assert (await http.get("/readyz")).status_code == 503
        fake_redis.data["p:worker:w1"] = orjson.dumps({"heartbeat_ms": int(time.time() * 1000), "ready": True})
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["workers"] == ["w1"]


async def test_readyz_scans_for_workers_only_now_and_then(fakes, monkeypatch):
    """The keyspace holds a key per user: a readiness check reads the known workers' keys, and scans for
    workers at most every RESCAN_S seconds (RESCAN_IDLE_S while none of the known ones is fresh)."""
    fake_redis, _ = fakes
    scans = 0
    scan_iter = fake_redis.scan_iter

    def counted(match: str, count: int) -> AsyncIterator[bytes]:
        nonlocal scans
        scans += 1
        return scan_iter(match, count)

    monkeypatch.setattr(fake_redis, "scan_iter", counted)
    clock = [1000.0]
    heartbeats = Heartbeats(Settings(redis_prefix="p"), clock=lambda: clock[0])
    assert await heartbeats.fresh(fake_redis) == [] and scans == 1
    fake_redis.data["p:worker:w1"] = orjson.dumps({"heartbeat_ms": int(time.time() * 1000)})
    assert await heartbeats.fresh(fake_redis) == [] and scans == 1  # none known, scanned under RESCAN_IDLE_S ago
    clock[0] += Heartbeats.RESCAN_IDLE_S
    assert await heartbeats.fresh(fake_redis) == ["w1"] and scans == 2
    fake_redis.data["p:worker:w2"] = orjson.dumps({"heartbeat_ms": int(time.time() * 1000)})
    clock[0] += Heartbeats.RESCAN_IDLE_S
    assert await heartbeats.fresh(fake_redis) == ["w1"] and scans == 2  # w1 is fresh: no scan
    clock[0] += Heartbeats.RESCAN_S
    assert await heartbeats.fresh(fake_redis) == ["w1", "w2"] and scans == 3


# --- posting events --------------------------------------------------------------------------------


async def test_events_are_validated_one_by_one_and_the_valid_ones_sent_keyed_by_user(serve, fakes):
    _, kafka = fakes
    batch = [event(1), event(2, kind="poke"), "nope", event(3, ts=1.5), event(4, tags=["dance"])]
    async with serve() as http:
        answer = await http.post("/v1/events", json=batch)
        single = await http.post("/v1/events", json=event(5))
    assert answer.status_code == 202
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert [(r["index"], r["status"], r["reason"]) for r in body["results"]] == [
        (0, "accepted", None), (1, "rejected", "bad_kind"), (2, "rejected", "not_object"),
        (3, "rejected", "wrong_type"), (4, "accepted", None)]
    assert body["results"][1]["event_id"] == "e2" and "poke" in body["results"][1]["detail"]
    assert single.status_code == 202 and single.json()["accepted"] == 1
    sent = sent_events(kafka)
    assert sorted(e["event_id"] for _, e in sent) == ["e1", "e4", "e5"]
    for partition, e in sent:  # as EventProducer sends them: the partition of the user_id key
        assert partition == kafka_partition(e["user_id"].encode(), 4)
    assert next(e for _, e in sent if e["event_id"] == "e4")["tags"] == ["dance"]


@pytest.mark.parametrize("body, status, error", [
    (b"{not json", 400, "not_json"),
    (b"[]", 400, "empty"),
    (orjson.dumps([event(k) for k in range(2001)]), 413, "too_many_events"),
])
async def test_bad_bodies_are_refused_with_a_reason(serve, fakes, body, status, error):
    _, kafka = fakes
    async with serve(serve_max_body_bytes=10_000_000) as http:
        answer = await http.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert kafka.sent == []


async def test_body_size_is_bounded(serve, fakes):
    _, kafka = fakes
    big = orjson.dumps([event(k) for k in range(10)])
    async with serve(serve_max_body_bytes=len(big) - 1) as http:
        declared = await http.post("/v1/events", content=big)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield big[:50]
            yield big[50:]

        streamed = await http.post("/v1/events", content=chunks())
        fits = await http.post("/v1/events", content=orjson.dumps(event(1)))
    assert (declared.status_code, declared.json()["error"]) == (413, "too_large")
    assert (streamed.status_code, streamed.json()["error"]) == (413, "too_large")
    assert fits.status_code == 202 and len(sent_events(kafka)) == 1


async def test_broker_failure_is_503(serve, fakes):
    _, kafka = fakes
    kafka.fail = True
    async with serve() as http:
        answer = await http.post("/v1/events", json=[event(1)])
        kafka.fail = False
    assert (answer.status_code, answer.json()["error"]) == (503, "broker_unavailable")


async def test_a_broker_away_at_start_refuses_events_but_serves_lists(serve, fakes, monkeypatch):
    fake_redis, kafka = fakes
    fake_redis.data["p:popular"] = a_list(["top1"], "popular")
    started = kafka.start
    away = [True]

    async def start() -> None:
        if away[0]:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
        await started()

    monkeypatch.setattr(kafka, "start", start)
    async with serve() as http:
        assert (await http.get("/v1/popular")).json()["items"] == ["top1"]
        refused = await http.post("/v1/events", json=event(1))
        assert (refused.status_code, refused.json()["error"]) == (503, "broker_unavailable")
        assert "bootstrap" in refused.json()["detail"]
        away[0] = False  # the broker is back: the next post starts the producer
        assert (await http.post("/v1/events", json=event(2))).status_code == 202
    assert [e["event_id"] for _, e in sent_events(kafka)] == ["e2"]


async def test_a_delivery_failure_is_answered_to_the_request_whose_events_failed(serve, fakes, monkeypatch):
    """Concurrent posts: the one whose events the broker refused gets 503, the other 202 (and its events are sent)."""
    _, kafka = fakes
    send = kafka.send

    async def refuse_doomed(topic: str, value: bytes, **options: Any) -> asyncio.Future[Any]:
        delivery = await send(topic, value, **options)
        if b'"doomed"' in value:
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(KafkaTimeoutError())
        return delivery

    async def slow_flush() -> None:  # as aiokafka's: other requests run while it waits for the broker
        await asyncio.sleep(0.02)

    monkeypatch.setattr(kafka, "send", refuse_doomed)
    monkeypatch.setattr(kafka, "flush", slow_flush)
    kafka.slow = asyncio.Event()
    async with serve() as http:
        fine = asyncio.create_task(http.post("/v1/events", json=[event(2, user_id="fine"), event(3, user_id="fine")]))
        await asyncio.sleep(0.02)
        doomed = asyncio.create_task(http.post("/v1/events", json=[event(1, user_id="doomed")]))
        await asyncio.sleep(0.02)
        kafka.slow.set()
        answers = await asyncio.gather(fine, doomed)
    assert [a.status_code for a in answers] == [202, 503]
    assert {e["event_id"] for _, e in sent_events(kafka) if e["user_id"] == "fine"} == {"e2", "e3"}


@pytest.mark.parametrize("path", ["/v1/recommendations/u1?n=0", "/v1/recommendations/u1?n=x", "/v1/popular?n=1001",
                                  "/v1/recommendations/u1?tags=" + ",".join(f"t{k}" for k in range(33)),
                                  "/v1/recommendations/u1?tags=" + "x" * 65, "/v1/recommendations/" + "u" * 129])
async def test_bad_query_parameters_are_422(serve, path):
    async with serve() as http:
        answer = await http.get(path)
    assert answer.status_code == 422 and answer.json()


# --- the fast path of GET /v1/recommendations ------------------------------------------------

PARITY_PATHS = [
    "/v1/recommendations/u1", "/v1/recommendations/u1?n=2", "/v1/recommendations/u1?n=1000&other=x",
    "/v1/recommendations/new?tags=cooking,%20dance&n=1", "/v1/recommendations/new?tags=", "/v1/recommendations/%C3%A9t%C3%A9",
    "/v1/recommendations/nobody?tags=knitting", "/v1/recommendations/u1?n=0", "/v1/recommendations/u1?n=x",
    "/v1/recommendations/u1?n=1001", "/v1/recommendations/u1?n=", "/v1/recommendations/u1?n=1&n=2",
    "/v1/recommendations/u1?n=%2B5", "/v1/recommendations/u1?n=05", "/v1/recommendations/u1?tags=a&tags=dance",
    "/v1/recommendations/u1?tags=" + ",".join(f"t{k}" for k in range(33)), "/v1/recommendations/u1?tags=" + "x" * 65,
    "/v1/recommendations/" + "u" * 128, "/v1/recommendations/" + "u" * 129, "/v1/recommendations/",
    "/v1/recommendations/u1/more", "/v1/recommendations",
]  # fmt: skip
PARITY_HEADERS = [{}, {"Authorization": "Bearer r1"}, {"Authorization": "bearer   w1 "}, {"Authorization": "Bearer r3"},
                  {"Authorization": "Basic cjE6"}, {"Authorization": "Bearer"}]


def comparable(answer: httpx.Response) -> tuple[Any, ...]:
    """An answer without what depends on the moment it was made (``age_ms``)."""
    json_body = answer.content and answer.headers.get("content-type") == "application/json"
    body = answer.json() if json_body else answer.text
    if isinstance(body, dict) and isinstance(body.get("age_ms"), int):
        body["age_ms"] = "an int"
    headers = {name: answer.headers.get(name) for name in ("content-type", "www-authenticate", "allow")}
    return answer.status_code, headers, body


@pytest.mark.parametrize("client, keys", [(LOCAL, {}), (REMOTE, {}), (REMOTE, {"api_keys_read": "r1", "api_keys_write": "w1"})])
async def test_the_fast_path_answers_as_the_fastapi_route_does(serve, fakes, client, keys):
    fake_redis, _ = fakes
    fake_redis.data.update({"p:rec:u1": a_list([f"i{k}" for k in range(20)], "personal"),
                            "p:rec:été": a_list(["x"], "personal"),
                            "p:popular:tag:dance": a_list(["d1", "d2"], "popular_tag"),
                            "p:popular": a_list(["top1", "top2"], "popular")})
    answers: dict[bool, list[tuple[Any, ...]]] = {}
    for fast_path in (True, False):
        async with serve(client=client, fast_path=fast_path, **keys) as http:
            answers[fast_path] = [comparable(await http.request(method, path, headers=headers))
                                  for path in PARITY_PATHS for headers in PARITY_HEADERS for method in ("GET", "HEAD")]
            fake_redis.down = True
            answers[fast_path].append(comparable(await http.get("/v1/recommendations/u1?tags=dance",
                                                                headers=PARITY_HEADERS[1])))
            fake_redis.down = False
    assert answers[True] == answers[False]
    statuses = {answer[0] for answer in answers[True]}
    assert statuses == ({200, 404, 405, 422, 503} if client == LOCAL else {403, 404, 405} if not keys
                        else {200, 401, 404, 405, 422, 503})


async def test_the_fast_path_answers_without_the_fastapi_route(serve, fakes, monkeypatch):
    fake_redis, _ = fakes
    fake_redis.data["p:rec:u1"] = a_list(["i1", "i2"], "personal")

    def framework_route(*args: Any) -> None:
        raise AssertionError("answered by the FastAPI route")

    monkeypatch.setattr("streams.tools.serve._recs_out", framework_route)
    async with serve() as http:
        answer = await http.get("/v1/recommendations/u1?n=1&tags=dance")
        assert answer.status_code == 200 and answer.json()["items"] == ["i1"]
        assert answer.headers["content-length"] == str(len(answer.content))
        fake_redis.down = True
        assert (await http.get("/v1/recommendations/u1")).json()["error"] == "redis_unavailable"


async def test_the_fast_path_counts_against_the_rate_limit_once_per_request(serve):
    async with serve(client=REMOTE, api_keys_read="r1", serve_rate_limit=0.01, serve_rate_burst=3) as http:
        key = {"Authorization": "Bearer r1"}
        got = [(await http.get(path, headers=key)).status_code
               for path in ("/v1/recommendations/u1", "/v1/recommendations/u1?n=0", "/v1/popular",
                            "/v1/recommendations/u1")]
    assert got == [200, 422, 200, 429]


# --- security --------------------------------------------------------------------------------


async def test_without_keys_only_localhost_is_served(serve):
    async with serve(client=LOCAL) as http:
        assert (await http.get("/v1/popular")).status_code == 200
        assert (await http.post("/v1/events", json=event(1))).status_code == 202
    async with serve(client=("::1", 1)) as http:
        assert (await http.get("/v1/popular")).status_code == 200
    async with serve(client=REMOTE) as http:
        for answer in (await http.get("/v1/popular"), await http.post("/v1/events", json=event(1))):
            assert (answer.status_code, answer.json()["error"]) == (403, "localhost_only")
        assert (await http.get("/healthz")).status_code == 200


async def test_keys_by_scope(serve, fakes):
    _, kafka = fakes
    async with serve(client=REMOTE, api_keys_read="r1,r2", api_keys_write="w1") as http:
        missing = await http.get("/v1/popular")
        assert missing.status_code == 401 and missing.json()["error"] == "missing_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/v1/popular", headers={"Authorization": "Bearer r3"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "unknown_key")
        basic = await http.get("/v1/popular", headers={"Authorization": "Basic cjE6"})
        assert basic.status_code == 401
        reader = {"Authorization": "Bearer r2"}
        writer = {"Authorization": "Bearer w1"}
        assert (await http.get("/v1/recommendations/u1", headers=reader)).status_code == 200
        refused = await http.post("/v1/events", json=event(1), headers=reader)
        assert (refused.status_code, refused.json()["error"]) == (403, "read_only_key")
        assert (await http.post("/v1/events", json=event(2), headers=writer)).status_code == 202
        assert (await http.get("/v1/trending/dance", headers=writer)).status_code == 200  # write implies read
        assert (await http.post("/v1/events", json=event(3))).status_code == 401
    async with serve(client=LOCAL, api_keys_write="w1") as http:  # keys configured: localhost needs one too
        assert (await http.get("/v1/popular")).status_code == 401
    assert [e["event_id"] for _, e in sent_events(kafka)] == ["e2"]


def test_refuses_to_bind_a_public_address_without_keys(monkeypatch, capsys):
    from streams.tools.cli import main

    for name in ("STREAMREC_API_KEYS_READ", "STREAMREC_API_KEYS_WRITE", "STREAMREC_SERVE_HOST"):
        monkeypatch.delenv(name, raising=False)
    ran: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: ran.append(options))
    assert main(["serve", "--host", EVERYWHERE]) == 2
    err = capsys.readouterr().err.strip()
    assert "refusing to bind 0.0.0.0 without API keys" in err and len(err.splitlines()) == 1 and ran == []
    assert main(["serve"]) == 0 and ran[-1]["host"] == "127.0.0.1" and ran[-1]["port"] == 8080
    monkeypatch.setenv("STREAMREC_API_KEYS_READ", "k1")
    assert main(["serve", "--host", EVERYWHERE, "--port", "9000"]) == 0
    assert (ran[-1]["host"], ran[-1]["port"]) == (EVERYWHERE, 9000)


async def test_a_client_over_its_rate_limit_gets_429_with_retry_after(serve):
    async with serve(client=REMOTE, api_keys_read="r1,r2", serve_rate_limit=0.01, serve_rate_burst=2) as http:
        first = {"Authorization": "Bearer r1"}
        assert [(await http.get("/v1/popular", headers=first)).status_code for _ in range(2)] == [200, 200]
        over = await http.get("/v1/recommendations/u1", headers=first)
        assert over.status_code == 429 and over.json()["error"] == "rate_limited"
        assert int(over.headers["retry-after"]) == 100 and "STREAMREC_SERVE_RATE_LIMIT" in over.json()["detail"]
        assert (await http.get("/v1/popular", headers={"Authorization": "Bearer r2"})).status_code == 200  # own bucket
        assert (await http.get("/v1/popular", headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await http.get("/healthz")).status_code == 200  # health checks are not limited
    async with serve(client=LOCAL, serve_rate_limit=0.01, serve_rate_burst=1) as http:  # no keys: by address
        assert (await http.post("/v1/events", json=event(1))).status_code == 202
        assert (await http.post("/v1/events", json=event(2))).status_code == 429


async def test_no_rate_limit_by_default(serve):
    async with serve(client=LOCAL) as http:
        assert {(await http.get("/v1/popular")).status_code for _ in range(300)} == {200}


def test_tls_workers_and_access_log_reach_uvicorn(monkeypatch, capsys, tmp_path):
    from streams.tools.cli import main

    for name in ("STREAMREC_API_KEYS_READ", "STREAMREC_API_KEYS_WRITE", "STREAMREC_SERVE_HOST",
                 "STREAMREC_SERVE_TLS_CERT", "STREAMREC_SERVE_TLS_KEY", "STREAMREC_SERVE_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-"), key.write_text("-")
    ran: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: ran.append((app, options)))
    assert main(["serve", "--tls-cert", str(cert), "--tls-key", str(key)]) == 0
    app, options = ran[-1]
    assert (options["ssl_certfile"], options["ssl_keyfile"]) == (str(cert), str(key))
    assert options["access_log"] is False and not isinstance(app, str)
    assert main(["serve", "--workers", "2"]) == 0
    app, options = ran[-1]
    assert (app, options["factory"], options["workers"]) == ("streams.tools.serve:app_from_env", True, 2)
    assert "ssl_certfile" not in options
    monkeypatch.setenv("STREAMREC_SERVE_TLS_CERT", str(cert))
    monkeypatch.setenv("STREAMREC_SERVE_TLS_KEY", str(key))
    monkeypatch.setenv("STREAMREC_SERVE_ACCESS_LOG", "true")
    assert main(["serve"]) == 0 and ran[-1][1]["ssl_keyfile"] == str(key) and ran[-1][1]["access_log"] is True
    capsys.readouterr()
    assert main(["serve", "--tls-key", str(tmp_path / "missing.pem")]) == 2
    assert capsys.readouterr().err.strip() == f"streamrec serve: no such TLS file: {tmp_path / 'missing.pem'}"
    monkeypatch.delenv("STREAMREC_SERVE_TLS_KEY")
    assert main(["serve"]) == 2  # a certificate without its key: a one-line error
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and len(ran) == 3


# --- the OpenAPI document ---------------------------------------------------------------------


async def test_the_committed_openapi_document_is_the_apps(serve):
    """Regenerate it with: streamrec serve --openapi > docs/openapi.json"""
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_document(), "run: streamrec serve --openapi > docs/openapi.json"
    async with serve() as http:
        served = (await http.get("/openapi.json")).json()
    assert served == orjson.loads(committed)
    assert {"/v1/recommendations/{user_id}", "/v1/popular", "/v1/trending/{tag}", "/v1/events", "/healthz",
            "/readyz"} <= set(served["paths"])
    assert served["components"]["schemas"]["Event"]["required"] == ["event_id", "user_id", "item_id", "kind", "ts"]
