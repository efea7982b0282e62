"""``streamrec bench pipeline``: end-to-end throughput, freshness and memory in one run.

One file: the phases of one end-to-end run, whose producer, freshness probe and service start-up
``bench freshness`` and ``bench scale`` reuse rather than copy.

    streamrec bench pipeline                         # 1M events, 100k users, 100k items (minutes)
    streamrec bench pipeline --events 30000 --users 5000 --items 3000 --json

Phases (all on one fresh topic prefix / Redis prefix / consumer group):

1. **produce**: ``N`` synthetic events (:class:`~streams.tools.synthetic.SyntheticWorld`), encoded
   with orjson up front, then sent with aiokafka as fast as it goes (``send`` without awaiting
   each delivery, linger + large batches, one flush at the end): ``producer_rate``.
2. **ceiling**: a plain aiokafka consumer (all partitions assigned, from the beginning,
   ``getmany`` with a large ``max_records``) reads and ``orjson.loads`` every event: ``raw_rate``.
3. **pipeline**: a real worker (``streamrec worker`` child process) consumes the same events.
   The clock starts when the worker is ready (``ready_ms`` of its heartbeat) or took its first
   batch of events (``first_batch_ms``), whichever came first, and stops at the last write caused by the last event of each
   partition (the ``updated_ms`` of those users' lists, once the heartbeat's ``events_total``
   reached ``N``): ``pipeline_rate``; ``ratio = pipeline_rate / raw_rate``.
   ``time_to_first_event_ms`` is the first write (the popular list) minus ``ready_ms``.
4. **freshness**: paced events at ``--load`` x ``pipeline_rate`` with ``ts = now`` on the same
   worker. One event in ``--sample-every`` belongs to a brand-new user, so that user's list can
   only exist because that event was applied; Redis is polled (pipelined MGET of the oldest
   2,000 pending probes, every ~50 ms) until the list appears with ``updated_ms >= ts``. ``freshness_*_ms`` = ``updated_ms - ts``
   (when the worker wrote it); ``observed_*_ms`` = first seen by the poller - ``ts``. Each list
   is also checked not to contain the item the user engaged with.
5. **top-N recall** (offline, in this process: the worker's model lives in another process):
   ``models.BPRMF`` (defaults) learns the first 200k events in batches of 2,000; for 500 users
   the pooled search of ``top_n_batch`` is compared with brute force (``pooled_search_min_items=None``),
   histories excluded: mean recall@top_n.
6. ``worker_rss_mb``: the worker's peak RSS (``VmHWM``), read before it is stopped.

Everything started here (broker, Redis, worker) is stopped at the end, also on errors/Ctrl-C.
This module imports only the standard library at import time (the CLI builds its parser cheaply).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

__all__ = ["BenchOptions", "add_arguments", "main", "run_bench"]

RESULT_KEYS = (
    "raw_rate", "pipeline_rate", "ratio", "freshness_p50_ms", "freshness_p95_ms", "freshness_p99_ms",
    "offered_rate", "events", "users", "items", "topn_recall", "worker_rss_mb", "producer_rate", "broker",
)  # fmt: skip


@dataclass
class BenchOptions:
    events: int = 1_000_000
    users: int = 100_000
    items: int = 100_000
    load: float = 0.5
    bootstrap: str | None = None
    redis_url: str | None = None
    json: bool = False
    seed: int = 0
    batch_events: int = 200
    freshness_seconds: float = 20.0
    freshness_max_events: int = 200_000
    sample_every: int = 20
    recall_events: int = 200_000
    recall_users: int = 500
    timeout_s: float | None = None  # pipeline phase; default scales with events
    worker_log: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchOptions()
    parser.add_argument("--events", type=int, default=d.events, help="events to produce (default 1000000)")
    parser.add_argument("--users", type=int, default=d.users, help="synthetic users (default 100000)")
    parser.add_argument("--items", type=int, default=d.items, help="synthetic items (default 100000)")
    parser.add_argument("--load", type=float, default=d.load, help="freshness load, fraction of pipeline_rate (0.5)")
    parser.add_argument("--bootstrap", default=None, help="use this Kafka (HOST:PORT) instead of an embedded broker")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of an embedded redis-server")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--batch-events", type=int, default=d.batch_events,
                        help="events per Kafka message, as EventProducer packs them (1: one event per message; 200)")
    parser.add_argument("--freshness-seconds", type=float, default=d.freshness_seconds,
                        help="duration of the freshness phase (default 20)")
    parser.add_argument("--freshness-max-events", type=int, default=d.freshness_max_events,
                        help="at most this many events in the freshness phase (default 200000)")
    parser.add_argument("--sample-every", type=int, default=d.sample_every,
                        help="one freshness event in this many is a sampled fresh user (default 20)")
    parser.add_argument("--recall-events", type=int, default=d.recall_events,
                        help="events learned for the offline top-N recall (default 200000)")
    parser.add_argument("--recall-users", type=int, default=d.recall_users, help="users of the recall check (500)")
    parser.add_argument("--worker-log", default=None, help="copy the worker's log here at the end")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    values = {f.name: getattr(args, f.name) for f in fields(BenchOptions) if getattr(args, f.name, None) is not None}
    return BenchOptions(**values)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- phases


def _generate(opts: BenchOptions) -> tuple[Any, list[tuple[bytes, bytes]], list[dict[str, Any]]]:
    """The world, the encoded events, and the decoded prefix kept for the recall phase."""
    import orjson

    from streams.tools.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(users=opts.users, items=opts.items, seed=opts.seed))
    # A backlog as a busy app makes it: 20,000 events per second of event time, ending about now
    # (so the freshness events, ts = now, come after them, and 1M events fill 5 metric windows).
    rate = 20_000.0
    start_ms = _now_ms() - int(opts.events / rate * 1000)
    keep = min(opts.recall_events, opts.events)
    encoded: list[tuple[bytes, bytes]] = []
    kept: list[dict[str, Any]] = []
    dumps = orjson.dumps
    for n, event in enumerate(world.events(opts.events, start_ms=start_ms, rate_per_s=rate)):
        encoded.append((event["user_id"].encode(), dumps(event)))
        if n < keep:
            kept.append(event)
    return world, encoded, kept


def _producer(settings: Any, linger_ms: int, batch_bytes: int) -> Any:
    from aiokafka import AIOKafkaProducer

    from streams.io.kafka import aiokafka_options

    return AIOKafkaProducer(**aiokafka_options(settings), acks=1, linger_ms=linger_ms, max_batch_size=batch_bytes,
                            max_request_size=max(batch_bytes * 2, 1_048_576), enable_idempotence=False)


def _messages(settings: Any, encoded: list[tuple[bytes, bytes]], batch_events: int) -> list[tuple[Any, ...]]:
    """(key, value, partition, headers) of every message, packed as :class:`~streams.client.EventProducer` does."""
    from streams.events import BATCH_HEADER, join_batch, kafka_partition

    if batch_events <= 1:
        return [(key, value, None, None) for key, value in encoded]
    buffers: dict[int, list[bytes]] = {}
    messages: list[tuple[Any, ...]] = []
    for key, value in encoded:
        partition = kafka_partition(key, settings.partitions)
        buffer = buffers.setdefault(partition, [])
        buffer.append(value)
        if len(buffer) >= batch_events:
            messages.append((None, join_batch(buffer), partition, [BATCH_HEADER]))
            buffers[partition] = []
    for partition, buffer in buffers.items():
        if buffer:
            messages.append((None, join_batch(buffer), partition, [BATCH_HEADER]))
    return messages


async def _produce_all(
    settings: Any, messages: list[tuple[Any, ...]], on_start: Callable[[], None] | None = None,
    rate: float | None = None, events_per_message: int = 1,
) -> float:
    """Send ``messages`` as fast as they go (or ``rate`` events/s, messages holding ``events_per_message``
    events each); seconds from the first send to the end of the flush.

    ``on_start`` is called just before the first send (topics exist, the producer is connected).
    """
    from streams.io.kafka import ensure_topics

    await ensure_topics(settings)
    producer = _producer(settings, linger_ms=20, batch_bytes=1_000_000)
    await producer.start()
    try:
        topic = settings.events_topic
        send = producer.send
        if on_start is not None:
            on_start()
        started = time.perf_counter()
        for n, (key, value, partition, headers) in enumerate(messages):
            if rate:
                ahead = n * events_per_message / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await send(topic, value=value, key=key, partition=partition, headers=headers)  # delivery: flush()
        await producer.flush()
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _consume_raw(settings: Any, n: int, timeout_s: float) -> tuple[float, dict[int, bytes]]:
    """Seconds to read and decode ``n`` events; the key of the last record of every partition."""
    import orjson
    from aiokafka import AIOKafkaConsumer

    from streams.io.kafka import aiokafka_options, assign_all_partitions

    topic = settings.events_topic
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        if not await assign_all_partitions(consumer, settings, topic, from_beginning=True):
            raise RuntimeError(f"topic {topic} has no partitions")
        last: dict[int, tuple[int, bytes]] = {}
        count = 0
        loads = orjson.loads
        started = time.perf_counter()
        deadline = started + timeout_s
        while count < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"raw consumer read only {count} of {n} events in {timeout_s:.0f} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=100_000)
            for tp, records in batches.items():
                value = None
                for record in records:
                    value = loads(record.value)
                    count += len(value) if record.headers else 1  # a batch message (header) or one event
                if records:
                    tail = records[-1]
                    if tail.offset >= last.get(tp.partition, (-1, b""))[0]:
                        user = value[-1]["user_id"] if tail.headers else value["user_id"]
                        last[tp.partition] = (tail.offset, user.encode())
        elapsed = time.perf_counter() - started
        return elapsed, {p: key for p, (_, key) in last.items()}
    finally:
        await consumer.stop()


def _run_pipeline(worker: Any, settings: Any, n: int, last_keys: dict[int, bytes], timeout_s: float) -> dict[str, Any]:
    """Start the worker on the produced events; poll Redis until it has processed ``n``."""
    import orjson

    from streams.io.redis import sync_redis
    from streams.tools.worker_process import WorkerFailed

    client = sync_redis(settings)
    try:
        worker.start()
        deadline = time.monotonic() + timeout_s
        first_write_ms: int | None = None
        ready_ms: int | None = None
        ready_s: float | None = None
        status: dict[str, Any] | None = None
        next_status = 0.0
        popular_key = settings.popular_key
        worker_key = settings.worker_key(settings.worker_id)
        while True:
            if not worker.alive():
                raise WorkerFailed(f"worker exited with {worker.process.returncode}:\n{worker.log_tail()}")
            if time.monotonic() > deadline:
                raise WorkerFailed(f"worker processed {status and status.get('events_total')} of {n} events in "
                                   f"{timeout_s:.0f} s:\n{worker.log_tail()}")
            if first_write_ms is None:
                raw = client.get(popular_key)  # written by the first refresh, after the first batch
                if raw is not None:
                    first_write_ms = int(orjson.loads(raw)["updated_ms"])
            now = time.monotonic()
            if now >= next_status:
                next_status = now + 0.05
                raw = client.get(worker_key)
                if raw is not None:
                    status = orjson.loads(raw)
                    if status.get("ready_ms") and ready_ms is None:
                        ready_ms = int(status["ready_ms"])
                        ready_s = time.monotonic() - worker.started_at
                        log(f"worker ready after {ready_s:.1f} s")
                    if int(status.get("events_total") or 0) >= n:
                        break
            time.sleep(0.01 if first_write_ms is None else 0.05)
        assert status is not None and ready_ms is not None
        # The end: the last write caused by the last event of each partition.
        keys = [settings.rec_key(k.decode()) for k in last_keys.values()]
        values = client.mget(keys) if keys else []
        ends = [int(orjson.loads(v)["updated_ms"]) for v in values if v is not None]
        end_ms = max(ends) if len(ends) == len(keys) and ends else int(status["heartbeat_ms"])
        if first_write_ms is None:
            first_write_ms = end_ms
        first_batch_ms = int(status.get("first_batch_ms") or first_write_ms)
        start_ms = min(ready_ms, first_write_ms, first_batch_ms)
        seconds = max(end_ms - start_ms, 1) / 1000.0
        return {
            "pipeline_seconds": round(seconds, 3),
            "pipeline_rate": n / seconds,
            "time_to_first_event_ms": first_write_ms - ready_ms,
            "worker_ready_s": round(ready_s or 0.0, 2),
            "pipeline_end_source": "last_partition_writes" if len(ends) == len(keys) and ends else "heartbeat",
        }
    finally:
        client.close()


async def _freshness(settings: Any, world: Any, tag: str, rate: float, opts: BenchOptions,
                     on_sent: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Offer ``rate`` events/s with probes (see the module docstring, phase 4); ``on_sent(events sent)`` is
    called once the last event is sent, before the remaining probes are awaited."""
    import numpy as np
    import orjson

    from streams.io.redis import async_redis

    total = max(1, min(int(rate * opts.freshness_seconds), opts.freshness_max_events))
    every = max(1, opts.sample_every)
    # Ordinary traffic from the same world (fresh event ids), every ``every``-th event a brand-new user.
    from streams.events import encode_event

    # Validated and encoded before the clock starts, ts a fixed-width placeholder set as each is sent:
    # the load generator shares the machine with the worker, so it must cost little per event.
    events = []
    for k, event in enumerate(world.events(total)):
        if k % every == 0:
            event["user_id"] = f"{tag}-fresh-{k // every}"
        event["ts"] = _TS_PLACEHOLDER
        key, value = encode_event(event)
        events.append((key, value, event["user_id"], event["item_id"]))
    sampled: dict[str, tuple[str, int, str]] = {}  # redis key -> (user, send_ms, item)
    pending: dict[str, tuple[str, int, str]] = {}
    write_lat: list[int] = []
    observed_lat: list[float] = []
    excluded_ok = 0
    wrong_user = 0
    done_sending = asyncio.Event()
    client = async_redis(settings)

    async def poll() -> None:
        nonlocal excluded_ok, wrong_user
        while True:
            if pending:
                # The oldest probes first, a bounded number per round: a poller whose cost grew with the
                # backlog would take the CPU the worker needs to work it off (they share the machine).
                keys = list(itertools.islice(pending, _POLL_KEYS))
                pipe = client.pipeline(transaction=False)
                for lo in range(0, len(keys), 500):
                    pipe.mget(keys[lo : lo + 500])
                results = await pipe.execute()
                seen_ms = time.time() * 1000
                values = [v for chunk in results for v in chunk]
                for key, raw in zip(keys, values):
                    if raw is None:
                        continue
                    data = orjson.loads(raw)
                    user, send_ms, item = pending[key]
                    if int(data["updated_ms"]) < send_ms:
                        continue
                    del pending[key]
                    write_lat.append(int(data["updated_ms"]) - send_ms)
                    observed_lat.append(seen_ms - send_ms)
                    excluded_ok += item not in data["items"]
                    wrong_user += data.get("user_id") != user
            elif done_sending.is_set():
                return
            await asyncio.sleep(0.05)

    from streams.client import EventProducer

    # The real client, packing events as apps would (``--batch-events``; linger 5 ms counts in freshness).
    producer = EventProducer(settings, batch_events=opts.batch_events, create_topics=False)
    await producer.start()
    poller = asyncio.create_task(poll())
    try:
        started = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            send_ms = _now_ms()
            stamp = b'"ts":%d' % send_ms
            while sent < due:
                key, value, user, item = events[sent]
                await producer.send_encoded(key, value.replace(_TS_FIELD, stamp, 1))
                if sent % every == 0:
                    redis_key = settings.rec_key(user)
                    sampled[redis_key] = pending[redis_key] = (user, send_ms, item)
                sent += 1
            await asyncio.sleep(0.002)
        await producer.flush()
        elapsed = time.perf_counter() - started
        if on_sent is not None:
            on_sent(total)
        done_sending.set()
        wait_until = time.monotonic() + 30.0
        while pending and time.monotonic() < wait_until and not poller.done():
            await asyncio.sleep(0.05)
        if poller.done():
            poller.result()  # re-raise a polling error
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await producer.stop()
        await client.aclose()

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values else None

    return {
        "offered_rate": rate,
        "achieved_rate": total / max(elapsed, 1e-9),
        "freshness_events": total,
        "freshness_seconds": round(elapsed, 2),
        "freshness_samples": len(sampled),
        "freshness_missing": len(pending),
        "freshness_p50_ms": pct(write_lat, 50),
        "freshness_p95_ms": pct(write_lat, 95),
        "freshness_p99_ms": pct(write_lat, 99),
        "freshness_max_ms": max(write_lat) if write_lat else None,
        "observed_p50_ms": pct(observed_lat, 50),
        "observed_p95_ms": pct(observed_lat, 95),
        "observed_p99_ms": pct(observed_lat, 99),
        "freshness_excludes_item": excluded_ok,
        "freshness_wrong_user": wrong_user,
    }


_POLL_KEYS = 2_000  # probe lists read per polling round (every 50 ms)
_TS_PLACEHOLDER = 9_999_999_999_999  # 13 digits, as every ms timestamp until 2286
_TS_FIELD = b'"ts":%d' % _TS_PLACEHOLDER


def _topn_recall(kept: list[dict[str, Any]], n_users: int, top_n: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from models import BPRMF
    from models.base import event_weights

    model = BPRMF()
    pooled_min = model.pooled_search_min_items
    history: dict[str, set[str]] = {}
    started = time.perf_counter()
    for lo in range(0, len(kept), 2000):
        batch = kept[lo : lo + 2000]
        users = [e["user_id"] for e in batch]
        items = [e["item_id"] for e in batch]
        watch = np.array([e.get("watch_ms", -1) for e in batch], dtype=np.float64)
        weights = event_weights([e["kind"] for e in batch], watch)
        model.learn_batch(users, items, weights, item_tags=[e.get("tags") for e in batch])
        for u, i in zip(users, items):
            history.setdefault(u, set()).add(i)
    learn_s = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    all_users = sorted(history)
    pick = rng.choice(len(all_users), size=min(n_users, len(all_users)), replace=False)
    users = [all_users[k] for k in sorted(pick.tolist())]
    exclude = [history[u] for u in users]
    pooled_path = pooled_min is not None and model.n_items >= pooled_min
    approx = model.top_n_batch(users, top_n, exclude)
    model.pooled_search_min_items = None  # the brute force path
    exact = model.top_n_batch(users, top_n, exclude)
    model.pooled_search_min_items = pooled_min
    recalls = []
    for a, e in zip(approx, exact):
        truth = {item for item, _ in e}
        if truth:
            recalls.append(len(truth & {item for item, _ in a}) / len(truth))
    method = (f"offline: models.BPRMF (defaults) learned the first {len(kept)} events in batches of 2000; "
              f"top_n_batch ({'shared pool, proven per user' if pooled_path else 'catalog below pooled_search_min_items'}) vs brute "
              f"force (pooled_search_min_items=None) for {len(users)} users, histories excluded; mean recall@{top_n}")
    return {
        "topn_recall": float(np.mean(recalls)) if recalls else 1.0,
        "topn_recall_method": method,
        "topn_recall_pooled_search_used": pooled_path,
        "topn_recall_learn_s": round(learn_s, 2),
    }


# --------------------------------------------------------------------------- driver


def _start_services(
    bootstrap: str | None, redis_url: str | None, workdir: Path, started: list[Any]
) -> tuple[str, str, str]:
    """The broker URL, the Redis URL and a description of the broker: the given ones, or an embedded
    broker and redis-server started in ``workdir`` (appended to ``started``, for the caller to stop)."""
    from streams.tools.dev import free_port, start_broker, start_redis

    if bootstrap:
        broker_url = bootstrap if "://" in bootstrap else f"kafka://{bootstrap}"
        broker = f"external {broker_url}"
    else:
        log("starting the embedded broker (Tansu)")
        proc = start_broker(free_port(), workdir)
        started.append(proc)
        broker_url = f"kafka://127.0.0.1:{proc.port}"
        broker = "tansu (embedded, memory storage)"
    if not redis_url:
        log("starting the embedded redis-server")
        proc = start_redis(free_port(), workdir)
        started.append(proc)
        redis_url = f"redis://127.0.0.1:{proc.port}/0"
    return broker_url, redis_url, broker


def _stop_services(started: list[Any]) -> None:
    """Stop what :func:`_start_services` started, last first; a failure to stop one does not skip the others."""
    for proc in reversed(started):
        try:
            proc.stop()
        except Exception as exc:  # keep stopping the others
            log(f"could not stop {proc.name}: {exc}")


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Run every phase; returns the result dict. Stops everything it started."""
    from streams.settings import Settings
    from streams.tools.worker_process import WorkerProcess

    if opts.events <= 0 or opts.users <= 0 or opts.items <= 0:
        raise ValueError("--events, --users and --items must be > 0")
    if not 0 < opts.load:
        raise ValueError("--load must be > 0")
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    started: list[Any] = []  # ServiceProcess objects
    worker: WorkerProcess | None = None
    result: dict[str, Any] = {"events": opts.events, "users": opts.users, "items": opts.items, "load": opts.load,
                              "batch_events": opts.batch_events}
    try:
        broker_url, redis_url, result["broker"] = _start_services(opts.bootstrap, opts.redis_url, workdir, started)
        tag = "bench" + uuid.uuid4().hex[:8]
        settings = Settings.from_env(broker_url=broker_url, redis_url=redis_url, topic_prefix=tag, redis_prefix=tag,
                                     app_id=tag, worker_id=f"{tag}-w", web_enabled=False)
        result.update(topic_prefix=tag, partitions=settings.partitions, top_n=settings.top_n)

        log(f"generating {opts.events:,} events ({opts.users:,} users, {opts.items:,} items)")
        t = time.perf_counter()
        world, encoded, kept = _generate(opts)
        log(f"generated in {time.perf_counter() - t:.1f} s")

        messages = _messages(settings, encoded, opts.batch_events)
        del encoded
        seconds = asyncio.run(_produce_all(settings, messages))
        result["producer_rate"] = opts.events / seconds
        result["messages"] = len(messages)
        log(f"produced {opts.events:,} events in {len(messages):,} messages in {seconds:.2f} s "
            f"({result['producer_rate']:,.0f} events/s)")
        last_keys: dict[int, bytes] = {}
        del messages

        timeout = opts.timeout_s or 120.0 + opts.events / 1000.0
        seconds, last_keys = asyncio.run(_consume_raw(settings, opts.events, timeout))
        result["raw_rate"] = opts.events / seconds
        log(f"raw consumer: {opts.events:,} events in {seconds:.2f} s ({result['raw_rate']:,.0f} events/s)")

        # The worker runs in the work dir: Faust creates <app_id>-data in its current directory.
        worker = WorkerProcess(settings, workdir / "worker.log")
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            log("starting the worker")
            pipeline = _run_pipeline(worker, settings, opts.events, last_keys, timeout)
        finally:
            os.chdir(cwd)
        result.update(pipeline)
        result["ratio"] = result["pipeline_rate"] / result["raw_rate"]
        log(f"pipeline: {opts.events:,} events in {pipeline['pipeline_seconds']:.2f} s "
            f"({result['pipeline_rate']:,.0f} events/s, ratio {result['ratio']:.3f}); "
            f"first event {pipeline['time_to_first_event_ms']} ms after ready")

        rate = max(1.0, opts.load * result["pipeline_rate"])
        log(f"freshness: {rate:,.0f} events/s for up to {opts.freshness_seconds:.0f} s")
        result.update(asyncio.run(_freshness(settings, world, tag, rate, opts)))
        log(f"freshness p50/p95/p99 {result['freshness_p50_ms']}/{result['freshness_p95_ms']}/"
            f"{result['freshness_p99_ms']} ms (observed {result['observed_p50_ms']}/{result['observed_p95_ms']}/"
            f"{result['observed_p99_ms']} ms), {result['freshness_samples']} samples, "
            f"{result['freshness_missing']} missing")

        assert worker.process is not None
        result["worker_rss_mb"] = worker.memory_mb("VmHWM")
        worker.stop()
        worker = None

        log(f"top-N recall: learning {len(kept):,} events offline")
        result.update(_topn_recall(kept, opts.recall_users, settings.top_n, opts.seed))
        log(f"top-N recall {result['topn_recall']:.4f}")
        return result
    except Exception:
        if worker is not None:
            print(f"--- worker log tail ---\n{worker.log_tail()}", file=sys.stderr)
        raise
    finally:
        if worker is not None:
            worker.stop()
        if opts.worker_log and (workdir / "worker.log").exists():
            shutil.copyfile(workdir / "worker.log", opts.worker_log)
        _stop_services(started)
        shutil.rmtree(workdir, ignore_errors=True)


def _summary(r: dict[str, Any]) -> str:
    def f(v: Any, spec: str = ",.0f") -> str:
        return "n/a" if v is None else format(v, spec)

    return "\n".join([
        f"streamrec pipeline benchmark: {r['events']:,} events, {r['users']:,} users, {r['items']:,} items "
        f"({r['broker']}, {r['partitions']} partitions)",
        f"  producer        {f(r['producer_rate'])} events/s",
        f"  raw consumer    {f(r['raw_rate'])} events/s (aiokafka getmany + orjson.loads: the ceiling)",
        f"  pipeline        {f(r['pipeline_rate'])} events/s in {r['pipeline_seconds']:.2f} s "
        f"(ratio {r['ratio']:.3f} of raw; first event {r['time_to_first_event_ms']} ms after ready)",
        f"  freshness       at {f(r['offered_rate'])} events/s offered ({f(r['achieved_rate'])} achieved): "
        f"write p50/p95/p99 {f(r['freshness_p50_ms'], '.1f')}/{f(r['freshness_p95_ms'], '.1f')}/"
        f"{f(r['freshness_p99_ms'], '.1f')} ms; observed in Redis {f(r['observed_p50_ms'], '.1f')}/"
        f"{f(r['observed_p95_ms'], '.1f')}/{f(r['observed_p99_ms'], '.1f')} ms "
        f"({r['freshness_samples']} fresh users, {r['freshness_missing']} missing, "
        f"{r['freshness_excludes_item']} lists exclude the engaged item)",
        f"  top-N recall    {r['topn_recall']:.4f}  [{r['topn_recall_method']}]",
        f"  worker peak RSS {f(r['worker_rss_mb'], '.1f')} MB",
    ])  # fmt: skip


def main(args: argparse.Namespace) -> int:
    import orjson

    opts = options_from_args(args)
    # A plain kill must still stop the broker, Redis and worker this run started (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = run_bench(opts)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        return 1
    if opts.json:
        print(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        print(_summary(result))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m streams.tools.bench.pipeline")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
