"""The dashboard's history and fan-out (no broker, no browser), its event stream as bytes, and its routes
through httpx's ASGI transport (the page, the static files, the keys of ``/v1/stream``)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import orjson
import pytest

from streams.settings import Settings
from streams.tools.dashboard import MetricsHistory, _end_streams_on_signals, _stream, sse_message
from tests.unit.streams.tools.test_serve import LOCAL, REMOTE, fakes, serve  # noqa: F401  (fixtures)


def window(kind: str, id_: str, start: int, views: int = 1, likes: int = 0, shares: int = 0, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "id": id_, "window_start_ms": start, "window_end_ms": start + 10_000, "revision": 0,
            "views": views, "likes": likes, "shares": shares, "unique_users": 1, **extra}


def health(worker: str, end: int, **extra: Any) -> dict[str, Any]:
    return {"type": "health", "worker_id": worker, "window_start_ms": end - 5_000, "window_end_ms": end, **extra}


def drain(sub: Any) -> list[tuple[str, Any]]:
    items = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        items.append(None if item is None else (item[0], orjson.loads(item[1])))
    return items


def test_revisions_of_a_window_are_summed_and_rates_recomputed():
    history = MetricsHistory()
    history.add([window("tag", "dance", 0, views=4, likes=1), window("tag", "dance", 0, views=0, likes=1, shares=2),
                 window("tag", "dance", 10_000, views=2), window("creator", "c1", 0, views=3)])
    kept = {(r["type"], r["id"], r["window_start_ms"]): r for r in history.snapshot()}
    assert {k: (r["views"], r["likes"], r["shares"], r["like_rate"], r["share_rate"]) for k, r in kept.items()} == {
        ("tag", "dance", 0): (4, 2, 2, 0.5, 0.5),
        ("tag", "dance", 10_000): (2, 0, 0, 0.0, 0.0),
        ("creator", "c1", 0): (3, 0, 0, 0.0, 0.0),
    }
    assert all("unique_users" not in r for r in kept.values())  # not additive across revisions


def test_windows_older_than_keep_ms_before_the_newest_are_dropped():
    history = MetricsHistory(keep_ms=30_000)
    history.add([window("tag", "a", start) for start in range(0, 100_000, 10_000)])
    assert [r["window_start_ms"] for r in history.snapshot()] == [60_000, 70_000, 80_000, 90_000]


def test_only_the_newest_item_windows_are_kept():
    history = MetricsHistory(item_windows=2)
    history.add([window("item", "i1", 0, tags=["a"]), window("item", "i1", 10_000, tags=["a"]),
                 window("item", "i2", 20_000, tags=["b"])])
    history.add([window("item", "i3", 0, tags=["a"])])  # late, older than both kept windows
    assert sorted((r["id"], r["window_start_ms"]) for r in history.snapshot()) == [("i1", 10_000), ("i2", 20_000)]


def test_the_number_of_windows_kept_is_bounded():
    history = MetricsHistory(max_keys=3)
    history.add([window("creator", f"c{k}", 0) for k in range(10)])
    assert [r["id"] for r in history.snapshot()] == ["c7", "c8", "c9"]


def test_health_is_kept_per_worker_for_keep_ms_and_fences_and_junk_are_left_out():
    history = MetricsHistory(keep_ms=10_000)
    history.add([health("w1", end) for end in range(5_000, 40_000, 5_000)] + [health("w2", 5_000)])
    history.add([{"type": "fence", "worker_id": "w1", "topic": "t", "offsets": {}, "ts_ms": 1}, {"type": "tag"},
                 {"type": "mystery"}, window("tag", "x", 0, views="many")])
    assert [(r["worker_id"], r["window_end_ms"]) for r in history.snapshot()] == [
        ("w2", 5_000), ("w1", 25_000), ("w1", 30_000), ("w1", 35_000)]
    assert history.records == 8


def test_a_subscriber_gets_the_history_then_the_status_then_new_records_as_they_are():
    history = MetricsHistory()
    history.add([window("tag", "a", 0, views=2)])
    sub = history.subscribe()
    late = window("tag", "a", 0, views=1)
    history.add([late, {"type": "fence", "worker_id": "w", "topic": "t", "offsets": {}, "ts_ms": 1}])
    history.set_status("ok", "following t.metrics")
    history.set_status("ok", "following t.metrics")  # no change: not sent again
    got = drain(sub)
    assert [event for event, _ in got] == ["history", "status", "records", "status"]
    assert [r["views"] for r in got[0][1]["records"]] == [2]
    assert got[1][1] == {"state": "starting", "detail": "connecting to the broker"}
    assert got[2][1]["records"] == [late]  # as the topic has it, unique_users and all
    assert got[3][1] == {"state": "ok", "detail": "following t.metrics"}
    # a page that opens now gets the sum
    assert [r["views"] for r in history.snapshot()] == [3]


def test_a_subscriber_too_far_behind_is_ended_and_the_others_go_on():
    history = MetricsHistory(max_pending=3)
    slow, fast = history.subscribe(), history.subscribe()  # each holds the history and the status
    history.add([window("tag", "a", 0)])
    assert [event for event, _ in drain(fast)] == ["history", "status", "records"]
    history.add([window("tag", "a", 10_000)])  # slow already holds 3 events: ended
    assert drain(slow) == [None] and slow not in history.subscribers
    assert [event for event, _ in drain(fast)] == ["records"] and fast in history.subscribers


def test_close_ends_every_stream():
    history = MetricsHistory()
    subs = [history.subscribe() for _ in range(3)]
    history.close()
    assert all(drain(sub)[-1] is None for sub in subs) and not history.subscribers


async def test_the_stream_sends_server_sent_events_and_unsubscribes_at_its_end():
    history = MetricsHistory()
    sub = history.subscribe()
    history.add([health("w1", 5_000)])
    stream = _stream(history, sub)
    chunks = [await anext(stream) for _ in range(4)]
    history.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert chunks[0] == b"retry: 3000\n\n"
    assert [chunk.split(b"\n")[0] for chunk in chunks[1:]] == [b"event: history", b"event: status", b"event: records"]
    assert all(chunk.endswith(b"\n\n") and chunk.count(b"\n") == 3 for chunk in chunks[1:])  # one data line each
    assert orjson.loads(chunks[3].split(b"data: ", 1)[1])["records"][0]["worker_id"] == "w1"
    assert sub not in history.subscribers
    assert sse_message("status", b"{}") == b"event: status\ndata: {}\n\n"


async def test_a_stop_signal_ends_the_streams_before_the_servers_own_handler_runs():
    history = MetricsHistory()
    sub = history.subscribe()
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: seen.append(number))
    try:
        restore = _end_streams_on_signals(history)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0)
        assert seen == [signal.SIGTERM] and drain(sub)[-1] is None
        restore()
        assert signal.getsignal(signal.SIGTERM) is not None and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- routes ------------------------------------------------------------------------------------


async def test_the_page_and_its_files_are_served_with_a_strict_policy(serve):  # noqa: F811
    async with serve(client=REMOTE, api_keys_read="r1") as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert page.headers["x-content-type-options"] == "nosniff"
        for path in ("static/dashboard.js", "static/dashboard.css", "static/vendor/uPlot-1.6.32.iife.min.js",
                     "static/vendor/uPlot-1.6.32.min.css"):
            assert f'"{path}"' in page.text and (await http.get("/" + path)).status_code == 200
        assert "http" not in page.text.replace("http-equiv", "")  # nothing from another site
        assert (await http.get("/static/../dashboard.py")).status_code == 404


async def test_the_stream_takes_a_read_key_from_the_query_a_cookie_or_the_header(serve):  # noqa: F811
    async with serve(client=REMOTE, api_keys_read="r1", api_keys_write="w1") as http:
        for how in ({}, {"params": {"key": "nope"}}, {"headers": {"Cookie": "streamrec_key=nope"}}):
            assert (await http.get("/v1/stream/status", **how)).status_code == 401
        for how in ({"params": {"key": "r1"}}, {"headers": {"Cookie": "streamrec_key=w1"}},
                    {"headers": {"Authorization": "Bearer r1"}}):
            answer = await http.get("/v1/stream/status", **how)
            assert answer.status_code == 200 and answer.json()["state"] == "starting"
    async with serve(client=REMOTE) as http:  # no keys: localhost only, as for the API
        assert (await http.get("/v1/stream/status")).status_code == 403
    async with serve(client=LOCAL) as http:
        assert (await http.get("/v1/stream/status")).status_code == 200


def test_the_stream_is_in_the_openapi_document():
    from streams.tools.serve import create_app

    paths = create_app(Settings()).openapi()["paths"]
    assert "text/event-stream" in paths["/v1/stream"]["get"]["responses"]["200"]["content"]
    assert "/" not in paths
