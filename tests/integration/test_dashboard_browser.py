"""The live dashboard in a real headless Chromium: ``streamrec serve`` (a process) on the test's broker, Redis
and worker, fed real events; the page's data points are compared with the metrics topic read here.

Chromium is driven by selenium through Debian's chromedriver: it hands over the browser's console log
with its severities (what "no console errors" is checked on) and takes the screenshot, in a few lines.
The screenshot is kept in ``.ci/work/artifacts/dashboard.png``."""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from streams.tools.dev import free_port
from tests.integration.helpers import consume, metric_records, produce, produce_raw, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".ci" / "work" / "artifacts"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                    reason="needs Debian's chromium and chromium-driver (.ci/install-system.sh)")
TAGS = ("dance", "cooking", "cats", "travel")
CREATORS = ("c0", "c1", "c2", "c3", "c4")


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,2600"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def dashboard(driver: Any) -> dict[str, Any]:
    return driver.execute_script("return window.streamrecDashboard || {}")


def tag_sums(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    sums: dict[str, dict[str, int]] = defaultdict(lambda: {"views": 0, "likes": 0, "shares": 0})
    for r in records:
        if r["type"] == "tag":
            for name in ("views", "likes", "shares"):
                sums[r["id"]][name] += r[name]
    return dict(sums)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@needs_chromium
def test_the_page_draws_what_the_metrics_topic_carries(make_settings, start_worker, serve, browser):
    settings = make_settings()
    worker = start_worker(settings)
    server = serve(settings, STREAMREC_API_KEYS_READ="r-key")

    now = int(time.time() * 1000)
    events = [{"event_id": f"e{k}", "user_id": f"u{k % 40}", "item_id": f"i{k % 60}",
               "kind": ("view", "view", "like", "view", "share")[k % 5], "ts": now - 8_000 + 10 * k,
               "creator_id": CREATORS[k % 60 % 5], "tags": [TAGS[k % 60 % 4]]} for k in range(600)]
    produce(settings, events)
    produce_raw(settings, [(b"u1", b"not json"), (b"u2", b"[1, 2]")])
    expected: dict[str, dict[str, int]] = defaultdict(lambda: {"views": 0, "likes": 0, "shares": 0})
    for e in events:
        expected[e["tags"][0]][e["kind"] + "s"] += 1

    # The page, with a read key in its fragment: it keeps it in a cookie for the event stream.
    browser.get(server.url + "/#key=r-key")
    assert browser.execute_script("return window.location.hash") == ""  # the key is off the URL bar

    def page_counts_all_events() -> dict[str, Any] | None:
        state = dashboard(browser)
        return state if state.get("totals", {}).get("tag") == expected and state["series"]["health"] else None

    state = wait_for(page_counts_all_events, timeout=90, interval=0.5)
    assert state["status"]["state"] == "ok"

    # The metrics topic read here, independently: the page's sums per tag are its sums.
    metrics = metric_records(consume(settings, settings.metrics_topic, lambda rs: tag_sums(metric_records(rs))
                                     == expected, timeout=60))
    assert tag_sums(metrics) == state["totals"]["tag"] == expected
    # ... and its tag series hold one point per window, each the sum of that window's records.
    per_window: dict[tuple[str, int], int] = defaultdict(int)
    for r in metrics:
        if r["type"] == "tag":
            per_window[(r["id"], r["window_start_ms"])] += r["views"]
    for tag, series in state["series"]["tag"].items():
        assert dict(zip([int(t * 1000) for t in series["t"]], series["views"])) == {
            start: views for (id_, start), views in per_window.items() if id_ == tag}

    # Health: the page's points of the worker are the topic's health records, in order (the topic read later
    # may hold newer ones).
    state = dashboard(browser)
    health = sorted((r for r in metric_records(consume(settings, settings.metrics_topic, lambda rs: False, timeout=3))
                     if r["type"] == "health" and r["worker_id"] == settings.worker_id),
                    key=lambda r: r["window_end_ms"])
    page = state["series"]["health"][settings.worker_id]
    assert len(page["t"]) >= 1
    topic = health[:len(page["t"])]
    assert page["t"] == [r["window_end_ms"] / 1000 for r in topic]
    assert page["events_per_s"] == [r["events_per_s"] for r in topic]
    assert page["freshness_p99_ms"] == [r["freshness_p99_ms"] for r in topic]
    reasons = {reason for r in topic for reason in r["dead_letter_reasons"]}

    # The charts drew those points: events/s, the tag chart (top tags), dead letters by reason.
    charts = state["charts"]
    assert charts["events_per_s"]["points"] == sum(v is not None for v in page["events_per_s"]) > 0
    assert sorted(charts["tag_counts"]["labels"]) == sorted(TAGS)
    for label, ys in zip(charts["tag_counts"]["labels"], charts["tag_counts"]["data"][1:]):
        assert sum(v for v in ys if v is not None) == expected[label]["views"]
    assert set(charts["dead_letters"]["labels"]) == reasons
    if reasons:
        assert charts["dead_letters"]["points"] > 0
    assert state["trending"] and all(items for _, items in state["trending"])
    assert [w["worker"] for w in state["workers"]] == [settings.worker_id]
    assert browser.find_elements("css selector", "figure[data-chart=events_per_s] canvas")

    assert console_errors(browser) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    assert worker.alive()


def test_the_stream_needs_a_read_key_when_keys_are_set(make_settings, serve):
    settings = make_settings()
    server = serve(settings, STREAMREC_API_KEYS_READ="r-key", STREAMREC_API_KEYS_WRITE="w-key")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        page = http.get("/")
        assert page.status_code == 200 and "streamrec" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/static/dashboard.js").status_code == 200
        assert http.get("/v1/stream").status_code == 401
        assert http.get("/v1/stream", params={"key": "nope"}).status_code == 401
        for how in ({"params": {"key": "r-key"}}, {"headers": {"Authorization": "Bearer w-key"}},
                    {"headers": {"Cookie": "streamrec_key=r-key"}}):
            with http.stream("GET", "/v1/stream", **how) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                lines = answer.iter_lines()
                head = [next(lines) for _ in range(4)]
                assert head[:3] == ["retry: 3000", "", "event: history"]
                assert head[3].startswith('data: {"records":[')


@needs_chromium
def test_a_broker_out_of_reach_is_said_on_the_page_and_the_api_keeps_working(make_settings, serve, browser):
    settings = make_settings(broker_url=f"kafka://127.0.0.1:{free_port()}")
    server = serve(settings)
    browser.get(server.url + "/")
    wait_for(lambda: browser.find_element("id", "status").text == "metrics topic unreachable, retrying", timeout=60)
    assert httpx.get(server.url + "/v1/stream/status").json()["state"] == "unreachable"
    assert httpx.get(server.url + "/v1/popular").json()["source"] == "none"
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert console_errors(browser) == []
