"""Fault injection against real services, each checked against an exact oracle (tests/integration/oracle.py).

Scenarios: worker SIGKILLed three times mid-stream; rebalance 1 -> 2 -> 1 workers while
producing; Redis down for 30 s; the same events delivered twice; events far in the future
and far in the past; a fuzz corpus of 1,000+ mutated payloads. Each test prints one
``RELIABILITY {...}`` line with its figures (and appends it to ``$STREAMREC_RELIABILITY_LOG``
when set): RELIABILITY.md reports them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from streams.client import RecsReader
from streams.tools.synthetic import SyntheticWorld, WorldConfig, malformed_payloads
from tests.integration.helpers import produce, produce_raw
from tests.integration.oracle import Expected, assert_oracle, health_records, wait_for_oracle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _now_ms() -> int:
    return int(time.time() * 1000)


def report(name: str, services: Any, **figures: Any) -> None:
    line = {"scenario": name, "broker": services.broker_kind, **figures}
    print("RELIABILITY", json.dumps(line))
    target = os.environ.get("STREAMREC_RELIABILITY_LOG")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(line) + "\n")


class Producer(threading.Thread):
    """Produces ``events`` (and interleaved malformed payloads) in chunks, paced, in the background."""

    def __init__(self, settings: Any, events: list[dict[str, Any]], bad: list[tuple[Any, bytes, str]] = (),
                 chunks: int = 30, pause_s: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.settings, self.events, self.bad = settings, events, list(bad)
        self.chunks, self.pause_s = chunks, pause_s
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n, b = len(self.events), len(self.bad)
            for k in range(self.chunks):
                self.send(self.events[k * n // self.chunks:(k + 1) * n // self.chunks])
                bad = self.bad[k * b // self.chunks:(k + 1) * b // self.chunks]
                if bad:
                    produce_raw(self.settings, [(key, value) for key, value, _ in bad])
                time.sleep(self.pause_s)
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def send(self, chunk: list[dict[str, Any]]) -> None:
        produce(self.settings, chunk)

    def finish(self, timeout: float = 120.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error


def stream(seed: int, n: int, rate_per_s: float = 2000.0) -> list[dict[str, Any]]:
    world = SyntheticWorld(WorldConfig(users=400, items=300, creators=50, communities=8, seed=seed))
    return list(world.events(n, start_ms=_now_ms(), rate_per_s=rate_per_s))


def test_worker_killed_three_times_mid_stream_loses_nothing_and_counts_nothing_twice(
    services, make_settings, start_worker
):
    settings = make_settings()
    events = stream(seed=21, n=24_000)
    bad = malformed_payloads(300, seed=4)
    worker = start_worker(settings, "w0")
    producer = Producer(settings, events, bad, chunks=60, pause_s=0.5)  # ~40 s: every kill lands mid-stream
    producer.start()
    recoveries = []
    for k in range(3):
        time.sleep(2.0)
        worker.kill()  # SIGKILL: no shutdown hook, no last checkpoint
        started = time.monotonic()
        worker = start_worker(settings, f"w{k + 1}")  # returns once the new worker reports ready
        recoveries.append(round(time.monotonic() - started, 1))
    producer.finish()
    expected = Expected.of(events, len(bad))
    started = time.monotonic()
    observed = wait_for_oracle(settings, expected)
    report("SIGKILL x3 mid-stream", services, produced=len(events), malformed=len(bad),
           applied=sum(c[0] + c[1] + c[2] for (t, _), c in observed.counts.items() if t == "item"),
           dead_lettered=len(observed.dead_letter_positions), dead_letter_copies=observed.dead_letter_messages,
           recovery_s=recoveries, catch_up_s=round(time.monotonic() - started, 1), worker_rss_mb=worker.memory_mb())
    assert_oracle(settings, observed, expected)
    assert max(recoveries) < 60


def test_one_of_two_workers_killed_three_times_mid_stream_loses_nothing_and_counts_nothing_twice(
    services, make_settings, start_worker
):
    """Two workers share the partitions and the item model; one is SIGKILLed three times while events
    flow. Its partitions move to the survivor and back at each restart: every event counted once."""
    settings = make_settings()
    survivor = start_worker(dataclasses.replace(settings, worker_id=settings.worker_id + "-a"), "a")
    victim_settings = dataclasses.replace(settings, worker_id=settings.worker_id + "-b")
    victim = start_worker(victim_settings, "b0")
    events = stream(seed=29, n=24_000)
    bad = malformed_payloads(200, seed=6)
    producer = Producer(settings, events, bad, chunks=60, pause_s=0.5)
    producer.start()
    recoveries = []
    for k in range(3):
        time.sleep(3.0)
        victim.kill()
        started = time.monotonic()
        victim = start_worker(victim_settings, f"b{k + 1}")
        recoveries.append(round(time.monotonic() - started, 1))
    producer.finish()
    expected = Expected.of(events, len(bad))
    observed = wait_for_oracle(settings, expected)
    report("two workers, one SIGKILLed x3", services, produced=len(events), malformed=len(bad),
           applied=sum(c[0] + c[1] + c[2] for (t, _), c in observed.counts.items() if t == "item"),
           dead_lettered=len(observed.dead_letter_positions), recovery_s=recoveries)
    assert_oracle(settings, observed, expected)
    assert survivor.alive()


def test_rebalance_one_two_one_workers_while_producing(services, make_settings, start_worker):
    settings = make_settings()
    second = dataclasses.replace(settings, worker_id=settings.worker_id + "-b")
    events = stream(seed=22, n=20_000)
    first = start_worker(settings, "first")
    producer = Producer(settings, events, chunks=50, pause_s=0.5)  # ~30 s: still producing when "first" stops
    producer.start()
    time.sleep(2.0)
    started = time.monotonic()
    survivor = start_worker(second, "second")  # 1 -> 2: the partitions are split
    joined_s = round(time.monotonic() - started, 1)
    time.sleep(4.0)
    first.stop()  # 2 -> 1: the second worker takes every partition over
    before = int((survivor.status() or {}).get("events_total") or 0)
    producer.finish()
    expected = Expected.of(events)
    observed = wait_for_oracle(settings, expected)
    after = int((survivor.status() or {}).get("events_total") or 0)
    report("rebalance 1 -> 2 -> 1", services, produced=len(events),
           applied=sum(c[0] + c[1] + c[2] for (t, _), c in observed.counts.items() if t == "item"),
           second_worker_ready_s=joined_s, survivor_events=after, worker_rss_mb=survivor.memory_mb())
    assert_oracle(settings, observed, expected)
    assert after > before  # the survivor kept going alone
    assert survivor.alive()


def test_redis_down_for_30_seconds(services, make_settings, start_worker):
    settings = make_settings()
    worker = start_worker(settings, "w")
    pid = worker.process.pid
    world = SyntheticWorld(WorldConfig(users=400, items=300, creators=50, communities=8, seed=23))
    before = list(world.events(3000, start_ms=_now_ms(), rate_per_s=2000))
    produce(settings, before)
    time.sleep(3)
    reader = RecsReader(settings)
    services.redis_control.stop_redis()
    down_at = time.monotonic()
    during = list(world.events(6000, start_ms=_now_ms(), rate_per_s=2000))
    answers = []
    try:
        for k in range(6):
            produce(settings, during[k * 1000:(k + 1) * 1000])
            answers.append(reader.get(during[k * 1000]["user_id"]))  # never raises
            time.sleep(4)
        while time.monotonic() - down_at < 30:
            time.sleep(0.5)
        assert worker.alive() and worker.process.pid == pid  # no crash, no restart
    finally:
        services.redis_control.start_redis()
    up_at = time.monotonic()
    assert {a.source for a in answers} == {"unavailable"}
    # Every user with events during the outage gets a list that accounts for them all.
    engaged: dict[str, set[str]] = {}
    for e in before + during:
        engaged.setdefault(e["user_id"], set()).add(e["item_id"])
    users = sorted({e["user_id"] for e in during})
    deadline = time.monotonic() + 60
    missing = users
    reader = RecsReader(settings)
    while missing and time.monotonic() < deadline:
        time.sleep(1)
        lists = {u: reader.get(u) for u in users}
        missing = [u for u in users if lists[u].source != "personal"]
    recovered_s = round(time.monotonic() - up_at, 1)
    assert not missing
    for user in users:
        assert not set(lists[user].items) & engaged[user]
    expected = Expected.of(before + during)
    observed = wait_for_oracle(settings, expected)
    report("Redis down 30 s", services, produced=len(before) + len(during), outage_s=30,
           lists_rewritten=len(users), lists_back_after_s=recovered_s,
           applied=sum(c[0] + c[1] + c[2] for (t, _), c in observed.counts.items() if t == "item"))
    assert_oracle(settings, observed, expected)


def test_the_same_events_delivered_twice_are_applied_once(services, make_settings, start_worker):
    settings = make_settings()
    start_worker(settings, "w")
    events = stream(seed=24, n=6000)
    produce(settings, events)
    time.sleep(2)
    produce(settings, events[:3000])  # a batch replayed by a producer retry
    produce(settings, events[4000:])
    observed = wait_for_oracle(settings, Expected.of(events))
    report("duplicates", services, produced=len(events) + 3000 + 2000, distinct=len(events),
           applied=sum(c[0] + c[1] + c[2] for (t, _), c in observed.counts.items() if t == "item"))
    assert_oracle(settings, observed, Expected.of(events))


def test_clock_skew_future_events_dead_lettered_late_ones_counted(services, make_settings, start_worker):
    settings = make_settings(max_clock_skew_s=60)
    start_worker(settings, "w")
    now = _now_ms()
    events = stream(seed=25, n=2000)
    late = [dict(e, event_id=e["event_id"] + "-late", ts=e["ts"] - 2 * 86_400_000) for e in events[:500]]
    future = [dict(e, event_id=e["event_id"] + "-future", ts=now + 3_600_000) for e in events[500:700]]
    produce(settings, events + late)
    produce_raw(settings, [(e["user_id"].encode(), orjson.dumps(e)) for e in future])
    expected = Expected.of(events + late, malformed=len(future))
    observed = wait_for_oracle(settings, expected)
    report("clock skew", services, on_time=len(events), two_days_late=len(late), hour_ahead=len(future),
           dead_lettered=dict(observed.dead_letter_reasons))
    assert_oracle(settings, observed, expected)
    assert observed.dead_letter_reasons == {"future_ts": len(future)}


# --------------------------------------------------------------------------- fuzzing

EVENT_SCHEMA = json.loads((ROOT / "streams" / "schemas" / "event.schema.json").read_text())
_validator = jsonschema.Draft202012Validator(EVENT_SCHEMA)


def _strict_json(value: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(value.decode("utf-8"), parse_constant=no_constants)


def expected_valid(key: bytes | None, value: bytes) -> dict[str, Any] | None:
    """The event if (key, value) keeps the contract, by the JSON Schema and the key rule (not our validator)."""
    if not value or len(value) > 65536 or key is None:
        return None
    try:
        obj = _strict_json(value)
        user = key.decode("utf-8")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict) or not _validator.is_valid(obj) or obj.get("user_id") != user:
        return None
    return obj


def mutations(base: dict[str, Any], rng: random.Random) -> tuple[bytes | None, bytes]:
    key, value = base["user_id"].encode(), orjson.dumps(base)
    kind = rng.randrange(12)
    if kind == 0:  # byte flips
        data = bytearray(value)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        return key, bytes(data)
    if kind == 1:  # truncation
        return key, value[: rng.randrange(len(value))]
    if kind == 2:  # a field of the wrong type
        field = rng.choice(["event_id", "user_id", "item_id", "kind", "ts", "watch_ms", "tags", "creator_id"])
        return key, orjson.dumps({**base, field: rng.choice([1.5, "7", True, None, [1], {"a": 1}, -3])})
    if kind == 3:  # NaN / Infinity
        return key, value.replace(b'"ts":', b'"ts":' + rng.choice([b"NaN", b"Infinity", b"-Infinity"]) + b",\"x\":", 1)
    if kind == 4:  # huge strings
        field = rng.choice(["event_id", "item_id", "creator_id"])
        return key, orjson.dumps({**base, field: "x" * rng.choice([65, 129, 5000, 70_000])})
    if kind == 5:  # deep nesting
        depth = rng.choice([64, 600, 5000])
        return key, b'{"event_id":"d","nested":' + b"[" * depth + b"]" * depth + b"}"
    if kind == 6:  # oversized message
        return key, orjson.dumps({**base, "padding": "p" * 70_000})
    if kind == 7:  # invalid UTF-8 key
        return b"\xff\xfe" + key, value
    if kind == 8:  # invalid UTF-8 inside the value
        return key, value.replace(b'"view"', b'"vi\xc3\x28ew"').replace(b'"like"', b'"li\xffke"')
    if kind == 9:  # key of another user
        return b"someone-else", value
    if kind == 10:  # out of range numbers
        return key, orjson.dumps({**base, rng.choice(["ts", "watch_ms"]): rng.choice([-1, 2**53, 2**63 - 1])})
    return key, rng.choice([b"", b"null", b"[]", b"{}", b'"event"', b"{", b"\x00\x01"])


def test_fuzz_corpus_lands_in_the_dead_letter_topic_and_valid_events_still_apply(
    services, make_settings, start_worker
):
    settings = make_settings()
    worker = start_worker(settings, "w")
    rng = random.Random(5)
    valid = stream(seed=26, n=3000)
    corpus = []
    for n in range(1200):
        base = dict(rng.choice(valid), event_id=f"fz-{n}")  # ids of their own: no dedup interplay
        corpus.append(mutations(base, rng))
    still_valid = [e for e in (expected_valid(k, v) for k, v in corpus) if e is not None]
    bad = [(k, v) for k, v in corpus if expected_valid(k, v) is None]
    # interleave: a slice of valid events, a slice of the corpus, ...
    for k in range(10):
        produce(settings, valid[k * 300:(k + 1) * 300])
        produce_raw(settings, corpus[k * 120:(k + 1) * 120])
    expected = Expected.of(valid + still_valid, malformed=len(bad))
    observed = wait_for_oracle(settings, expected)
    report("fuzz corpus", services, mutated=len(corpus), still_valid=len(still_valid), invalid=len(bad),
           dead_lettered=len(observed.dead_letter_positions), reasons=dict(observed.dead_letter_reasons),
           valid_interleaved=len(valid), worker_restarts=0 if worker.alive() else 1)
    assert len(bad) >= 1000
    assert worker.alive()
    assert_oracle(settings, observed, expected)
    assert "internal_error" not in observed.dead_letter_reasons


class RetryingProducer(Producer):
    """A :class:`Producer` that retries a chunk while the broker is away (redelivered events are
    then deduplicated by ``event_id``: the oracle counts each once)."""

    def send(self, chunk: list[dict[str, Any]]) -> None:
        for _ in range(60):
            try:
                produce(self.settings, chunk)
                return
            except Exception:  # the broker is restarting
                time.sleep(1.0)
        raise RuntimeError("the broker did not come back within a minute")


def test_broker_restart_workers_reconnect_and_nothing_is_lost(services, make_settings, start_worker):
    kafka_dir = os.environ.get("STREAMREC_TEST_KAFKA_DIR")
    if services.broker_kind != "kafka" or not kafka_dir:
        pytest.skip("restarts the broker: needs Apache Kafka started by `make test-kafka` (the embedded "
                    "Tansu keeps everything in memory, so a restart would lose the topics themselves)")
    import shutil
    import subprocess

    settings = make_settings()
    worker = start_worker(settings, "w")
    events = stream(seed=27, n=12_000)
    producer = RetryingProducer(settings, events, chunks=40, pause_s=0.4)
    producer.start()
    time.sleep(4)
    port = settings.broker_url.rsplit(":", 1)[1]
    started = time.monotonic()
    bash = shutil.which("bash") or "/bin/bash"
    subprocess.run([bash, str(ROOT / ".ci" / "kafka.sh"), "restart", port, kafka_dir], check=True, timeout=180,
                   env={**os.environ, "PYTHON": sys.executable})
    restart_s = round(time.monotonic() - started, 1)
    producer.finish(timeout=240)
    expected = Expected.of(events)
    observed = wait_for_oracle(settings, expected, timeout=180)
    report("broker restart", services, produced=len(events), broker_down_s=restart_s,
           applied=sum(c[0] + c[1] + c[2] for (t, _), c in observed.counts.items() if t == "item"),
           worker_restarts=0 if worker.alive() else 1)
    assert worker.alive()
    assert_oracle(settings, observed, expected)


class PacedProducer(Producer):
    """A :class:`Producer` of ``rate`` new events a second for ``duration`` seconds, whatever the
    test does meanwhile (kills, outages); ``events`` holds every event produced."""

    def __init__(self, settings: Any, world: SyntheticWorld, rate: float, duration: float) -> None:
        super().__init__(settings, [])
        self.world, self.rate, self.duration = world, rate, duration

    def run(self) -> None:
        try:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < self.duration:
                chunk = list(self.world.events(int(self.rate), start_ms=_now_ms(), rate_per_s=self.rate))
                self.send(chunk)
                self.events.extend(chunk)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started - elapsed)))
        except BaseException as exc:  # surfaced by finish()
            self.error = exc


def test_soak_sustained_load_with_a_kill_and_a_redis_outage(services, make_settings, start_worker):
    """Opt-in (minutes): ``make soak`` or ``STREAMREC_SOAK_S=300``. Events at a steady rate for
    ``STREAMREC_SOAK_S`` seconds, produced throughout; the worker is SIGKILLed at a third (its
    successor recovers while events keep coming), Redis is down for 30 s at two thirds. Exact
    oracle at the end; the lag must come back to zero; RSS sampled throughout must level off."""
    duration = float(os.environ.get("STREAMREC_SOAK_S") or 0)
    if not duration:
        pytest.skip("opt-in soak run: set STREAMREC_SOAK_S=<seconds> (make soak)")
    rate = float(os.environ.get("STREAMREC_SOAK_RATE") or 5000)
    settings = make_settings(metrics_window_s=10.0, metrics_grace_s=2.0)
    worker = start_worker(settings, "w0")
    producer = PacedProducer(settings, SyntheticWorld(WorldConfig(users=50_000, items=20_000, seed=28)), rate, duration)
    rss: list[tuple[float, float]] = []
    started = time.monotonic()
    producer.start()
    killed = redis_down = False
    redis_stopped = 0.0  # when Redis was stopped; 0 when it runs
    recovery_s = None
    while (elapsed := time.monotonic() - started) < duration:
        if (value := worker.memory_mb("VmRSS")) is not None:
            rss.append((elapsed, value))
        if not killed and elapsed > duration / 3:
            killed = True
            worker.kill()
            t = time.monotonic()
            worker = start_worker(settings, "w1")  # the producer goes on meanwhile
            recovery_s = round(time.monotonic() - t, 1)
        if not redis_down and elapsed > 2 * duration / 3:
            redis_down = True
            services.redis_control.stop_redis()
            redis_stopped = time.monotonic()
        if redis_down and redis_stopped and time.monotonic() - redis_stopped > 30:
            services.redis_control.start_redis()
            redis_stopped = 0.0
        time.sleep(1.0)
    if redis_down and redis_stopped:
        services.redis_control.start_redis()
    producer.finish()
    expected = Expected.of(producer.events)
    caught_up = time.monotonic()
    observed = wait_for_oracle(settings, expected, timeout=600)
    catch_up_s = round(time.monotonic() - caught_up, 1)
    time.sleep(2 * settings.metrics_window_s)  # a health record after the catch-up
    lags = [r["consumer_lag"] for r in health_records(settings) if r.get("consumer_lag") is not None]
    after_restart = [v for t, v in rss if t > duration / 3 + (recovery_s or 0) + 10]
    half = len(after_restart) // 2
    report("soak", services, seconds=duration, rate=rate, produced=len(producer.events), recovery_s=recovery_s,
           catch_up_s=catch_up_s, lag_peak_messages=max(lags, default=None),
           lag_last_messages=lags[-1] if lags else None,
           rss_mb_first_half_max=round(max(after_restart[:half]), 1) if half else None,
           rss_mb_second_half_max=round(max(after_restart[half:]), 1) if half else None)
    assert_oracle(settings, observed, expected)
    assert lags and lags[-1] == 0  # the lag came back to zero
    if half:
        assert max(after_restart[half:]) < 1.5 * max(after_restart[:half])  # memory levels off
