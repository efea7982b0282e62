"""``streamrec bench scale``: what 1, 2, 4 ... workers sharing one item model give, run after run.

One file: its phases share one run's state (the stream, the workers, their CPU samples) and are
read top to bottom against this docstring, which defines every number it reports.

    streamrec bench scale --workers 1 2 4                       # 150k events per run (minutes)
    streamrec bench scale --workers 1 2 --events 20000 --holdout 4000 --users 3000 --items 1000 --json
    streamrec bench scale --workers 1 2 4 --restart             # W >= 2 again, one worker killed mid-run

One broker and one Redis for the whole invocation (embedded unless ``--bootstrap`` /
``--redis-url``) and one synthetic stream (``SyntheticWorld(WorldConfig(users, items, seed))``:
the first ``--events`` events train, the next ``--holdout`` are held back), generated once and
packed as :class:`~streams.client.EventProducer` packs events (``streams.tools.bench.pipeline._messages``).
For each W of ``--workers`` in order (with ``--restart``, each W >= 2 again with worker 1
restarted), on a fresh topic prefix, Redis prefix and consumer group, with health records every
2 s (``metrics_window_s=2``, ``metrics_grace_s=0.5``):

1. **start**: W ``streamrec worker`` processes (``<tag>-w0`` ...), all ready, then the consumer
   group stable with W members (DescribeGroups twice in a row; where the broker reports member
   assignments, every member holding events partitions; Tansu does not), then 1 s more.
2. **learning**: the training events are produced at ``--rate`` events/s (all workers together: a
   steady load below every run's capacity, so that quality is measured in steady operation; 0: as
   fast as they go) while the workers consume. Each worker's CPU time (``/proc/<pid>/stat`` utime +
   stime) is read just before the first send and again when the events applied reach ``N``: the
   sum of the heartbeats' ``events_total`` (``<prefix>:worker:<id>``, polled every 50 ms).
   Heartbeats come once a second, so the end is then dated precisely, as ``bench pipeline`` does:
   the latest ``updated_ms`` of the lists of the users of each partition's last event (the last
   writes those events caused; the heartbeat time if one is missing). ``learn_events_per_s`` and
   ``learn_cpu_s_per_1k_events`` (the workers' CPU seconds over the phase per 1,000 events) come
   from this phase. How evenly the workers progressed: ``events_per_worker`` (at the end),
   ``events_per_worker_at_half`` (when the sum first reached ``N / 2``).
   **Restart**: once the events applied reach ``N / 2``, worker 1 is SIGKILLed and a new process
   with the same worker id started (production goes on). The killed process counts with the CPU
   of its last sample; its heartbeat is ignored from then on. What it applied up to its last
   checkpoint fence (the offsets in its last fence record, as events: messages hold
   ``batch_events`` events each, in order) is added to the live heartbeats' ``events_total``:
   events it applied after that fence are applied again by the partitions' next owner, and
   counted there. ``killed_events_total`` is its last heartbeat's count (it can lag the fence: no
   heartbeat is written while a long batch runs), ``killed_fenced_events`` the fenced count, and
   ``successor_ready_s`` runs from the new process's start to its first ready heartbeat.
3. **quality**: 2 s after the end, and once no heartbeat shows ``pending_users > 0``, every
   held-back user's list is read (pipelined MGETs); ``hr_at_50`` = the share of held-back events
   whose user has a list and whose item is not in the user's training history, that are in the
   list (``hr_evaluated_events`` of them).
4. **popular lists**: ``models.Popularity`` (the settings' half-life and kind weights, the events'
   ``ts`` and tags) learns the training events offline; its top-N must be the set of items of
   ``<prefix>:popular``, and its ``top_n_for_tags([tag])`` that of ``<prefix>:popular:tag:<tag>``
   for every tag seen in training. ``popular_overlap`` = |common items| / top_n for the global
   list, ``popular_min_overlap`` the lowest of all lists (denominator: the longer of the two);
   ``popular_lists_consistent`` = every overlap is 1.0. (Exact: the worker's counts are the same
   events' weights summed in another order and forward-decayed from another base time, so they
   differ by rounding only; a tie at rank N within rounding would show as 0.98.) The lists are
   read again for up to 5 s while they differ: the writer refreshes them once a second.
   ``popular_score_ratio_min`` / ``_max``: the global list's scores over the offline scores of the
   same items (1.0 up to the lists' 5-decimal rounding when every event was counted once; above
   after a kill when the killed worker had published the item deltas of events past its last
   fence, which its successor applies again: RELIABILITY.md, factors may move twice).
5. **freshness**: ``streams.tools.bench.pipeline._freshness`` at ``--freshness-rate`` for ``--freshness-seconds``
   on the same workers; its sampled users are new, so each lands on whichever worker owns it.
6. **capacity**: ``--capacity-rounds`` backlogs of ``--capacity-events`` further events each
   (other worlds of the same shape, seeds + 1, + 2, ...), one after the other, each produced as
   fast as it goes and timed and CPU-measured as in phase 2: every worker busy, so
   ``events_per_s`` (aggregate) and ``cpu_s_per_1k_events`` are the throughput and the CPU per
   event at full load, the medians of the rounds (each round's in ``*_rounds``).
7. **health records**: after the workers are stopped, the run's metrics topic is read (a
   group-less consumer over all partitions from the beginning): ``item_staleness_p50_ms`` = the
   median of the records' ``item_staleness_p50_ms``, ``item_staleness_p99_ms`` = the largest of
   their ``item_staleness_p99_ms``, ``item_staleness_max_ms`` (null without other workers);
   ``exchange_bytes_per_event`` = the sum over workers (and incarnations) of ``item_bytes_sent_total``
   in their last record before the freshness phase, per training event, and the same for
   ``item_rows_applied_total`` and ``item_bytes_applied_total`` (a lone worker logs its deltas
   too: a restarted worker replays them). The fence records give each worker's partitions
   (``partitions_per_worker``) and ``partition_moves`` (partitions fenced by more than one worker
   before the freshness phase: rebalances during training); ``popular_writers`` are the workers
   whose last record says they write the popular lists (``killed_wrote_popular_lists``: the
   killed process did).

``quality_vs_1`` = ``hr_at_50`` / the W = 1 figure of the same invocation (null without a W = 1 run).
Everything started is stopped at the end, also on errors and Ctrl-C. Like :mod:`streams.tools.bench.pipeline`, this
module imports only the standard library at import time (the CLI builds its parser cheaply).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["ScaleOptions", "add_arguments", "main", "run_scale"]

#: Fields of every run's result (``--json`` prints one object per run with at least these).
RESULT_KEYS = (
    "workers", "restarted", "events", "events_per_s", "cpu_s_per_1k_events", "freshness_p50_ms",
    "freshness_p99_ms", "item_staleness_p50_ms", "item_staleness_p99_ms", "item_staleness_max_ms", "hr_at_50",
    "hr_evaluated_events", "quality_vs_1", "popular_lists_consistent", "popular_overlap", "popular_min_overlap",
    "exchange_bytes_per_event", "item_rows_applied_per_event", "events_applied",
)  # fmt: skip

#: Event time of the training backlog: 20,000 events per second ending about now (as ``bench pipeline``).
BACKLOG_RATE = 20_000.0
#: Events per Kafka message, as EventProducer packs them by default.
BATCH_EVENTS = 200


@dataclass
class ScaleOptions:
    workers: list[int] = field(default_factory=lambda: [1, 2, 4])
    events: int = 150_000
    holdout: int = 30_000
    users: int = 20_000
    items: int = 5_000
    restart: bool = False
    rate: float = 10_000.0  # training events per second (0: as fast as they go)
    capacity_events: int = 150_000
    capacity_rounds: int = 3
    freshness_rate: float = 2_000.0
    freshness_seconds: float = 15.0
    bootstrap: str | None = None
    redis_url: str | None = None
    json: bool = False
    seed: int = 0
    timeout_s: float | None = None  # the throughput phase of one run; default scales with events
    worker_logs: str | None = None  # copy every worker's log into this directory at the end


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ScaleOptions()
    parser.add_argument("--workers", type=int, nargs="+", default=d.workers, metavar="W",
                        help="worker counts, one run each, in order (default 1 2 4)")
    parser.add_argument("--events", type=int, default=d.events, help="training events per run (default 150000)")
    parser.add_argument("--holdout", type=int, default=d.holdout,
                        help="the next events of the stream, held back for HR@50 (default 30000)")
    parser.add_argument("--users", type=int, default=d.users, help="synthetic users (default 20000)")
    parser.add_argument("--items", type=int, default=d.items, help="synthetic items (default 5000)")
    parser.add_argument("--restart", action="store_true",
                        help="also run each W >= 2 with worker 1 SIGKILLed and restarted halfway")
    parser.add_argument("--rate", type=float, default=d.rate,
                        help="training events per second, all workers together: a steady load (default 10000; "
                             "0: as fast as they go)")
    parser.add_argument("--capacity-events", type=int, default=d.capacity_events,
                        help="events of each full-load backlog after training, for events/s and CPU per event "
                             "(default 150000; 0: none)")
    parser.add_argument("--capacity-rounds", type=int, default=d.capacity_rounds,
                        help="backlogs, one after the other; events/s and CPU per event are their medians (3)")
    parser.add_argument("--freshness-rate", type=float, default=d.freshness_rate,
                        help="events/s of the freshness phase (default 2000)")
    parser.add_argument("--freshness-seconds", type=float, default=d.freshness_seconds,
                        help="duration of the freshness phase (default 15)")
    parser.add_argument("--bootstrap", default=None, help="use this Kafka (HOST:PORT) instead of an embedded broker")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of an embedded redis-server")
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--worker-logs", default=None, metavar="DIR", help="copy every worker's log here at the end")


def options_from_args(args: argparse.Namespace) -> ScaleOptions:
    names = [f.name for f in dataclasses.fields(ScaleOptions)]
    return ScaleOptions(**{n: getattr(args, n) for n in names if getattr(args, n, None) is not None})


def log(message: str) -> None:
    print(f"[bench scale] {message}", file=sys.stderr, flush=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    """Workers start in the work dir: Faust creates ``<app_id>-data`` in its current directory."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _pid(worker: Any) -> int | None:
    return worker.process.pid if worker.process is not None else None


def _cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of process ``pid`` (``/proc/<pid>/stat``), seconds; None if it is gone."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14 and 15 of stat


# --------------------------------------------------------------------------- the stream


@dataclass
class _Stream:
    """The training events (as messages) and what the checks need to know about them."""

    world: Any
    messages: list[tuple[Any, ...]]
    n: int
    batch_events: int
    events_in_partition: dict[int, int]
    last_user: dict[int, str]  # events partition -> the user of its last training event
    history: dict[str, set[str]]  # user -> items engaged with in training
    holdout: list[tuple[str, str]]  # (user, item) of the held-back events
    popular: list[str]  # the offline Popularity's top-N
    popularity: Any  # that offline models.Popularity (its scores: what the workers' counts must be)
    tag_popular: dict[str, list[str]]  # tag seen in training -> the offline top-N within it

    def events_through(self, partition: int, offset: int) -> int:
        """Training events in ``partition`` up to message ``offset`` (a fresh topic: offset k is the k-th message)."""
        return min((offset + 1) * self.batch_events, self.events_in_partition.get(partition, 0))


def _stream(opts: ScaleOptions, settings: Any) -> _Stream:
    import numpy as np
    import orjson

    from models import Popularity
    from models.base import event_weights
    from streams.events import kafka_partition
    from streams.tools.bench.pipeline import _messages
    from streams.tools.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(users=opts.users, items=opts.items, seed=opts.seed))
    start_ms = _now_ms() - int(opts.events / BACKLOG_RATE * 1000)
    encoded: list[tuple[bytes, bytes]] = []
    history: dict[str, set[str]] = {}
    holdout: list[tuple[str, str]] = []
    last_user: dict[int, str] = {}
    in_partition: Counter[int] = Counter()
    users, items, kinds, watch, stamps, tags = [], [], [], [], [], []
    dumps = orjson.dumps
    partitions = settings.partitions
    for k, event in enumerate(world.events(opts.events + opts.holdout, start_ms=start_ms, rate_per_s=BACKLOG_RATE)):
        user, item = event["user_id"], event["item_id"]
        if k >= opts.events:
            holdout.append((user, item))
            continue
        key = user.encode()
        encoded.append((key, dumps(event)))
        partition = kafka_partition(key, partitions)
        in_partition[partition] += 1
        last_user[partition] = user
        history.setdefault(user, set()).add(item)
        users.append(user)
        items.append(item)
        kinds.append(event["kind"])
        watch.append(event.get("watch_ms", -1))
        stamps.append(event["ts"])
        tags.append(tuple(event.get("tags") or ()))
    # The popular lists as the workers must have them: every training event, weighted as they weigh it.
    popularity = Popularity(half_life_s=settings.popular_half_life_s)
    weights = event_weights(kinds, np.array(watch, dtype=np.float64), kind_weights=settings.kind_weights,
                            watch_time_weight=settings.watch_time_weight,
                            watch_time_ref_ms=settings.watch_time_ref_ms)
    popularity.learn_batch(users, items, weights, ts_ms=np.array(stamps, dtype=np.int64), item_tags=tags)
    seen_tags = sorted({t for ts in tags for t in ts})
    return _Stream(
        world=world,
        messages=_messages(settings, encoded, BATCH_EVENTS),
        n=len(encoded),
        batch_events=BATCH_EVENTS,
        events_in_partition=dict(in_partition),
        last_user=last_user,
        history=history,
        holdout=holdout,
        popular=[i for i, _ in popularity.top_n("", settings.top_n)],
        popularity=popularity,
        tag_popular={t: [i for i, _ in popularity.top_n_for_tags([t], settings.top_n)] for t in seen_tags},
    )


# --------------------------------------------------------------------------- Kafka reads


async def _group(settings: Any) -> tuple[str, int, list[int] | None]:
    """The consumer group's state, member count, and events partitions per member (None if not reported)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    from streams.io.kafka import aiokafka_options

    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([settings.app_id])
    finally:
        await admin.close()
    for response in responses:
        for group in response.to_object()["groups"]:
            if group["group"] != settings.app_id:
                continue
            members = group["members"]
            owned: list[int] | None = []
            for member in members:
                raw = member.get("member_assignment") or b""
                try:
                    assignment = ConsumerProtocolMemberAssignment.decode(raw)
                except Exception:  # Tansu reports members without their assignments
                    owned = None
                    break
                assert owned is not None
                owned.append(sum(len(ps) for topic, ps in assignment.assignment if topic == settings.events_topic))
            return str(group["state"]), len(members), owned
    return "Unknown", 0, None


async def _read_keyed(settings: Any, topic: str, prefixes: tuple[bytes, ...], timeout_s: float = 120.0) -> list[Any]:
    """The values (decoded JSON) of every record of ``topic`` whose key starts with one of ``prefixes``,
    oldest first: a group-less consumer over all partitions from the beginning, up to the end as of now."""
    import orjson
    from aiokafka import AIOKafkaConsumer

    from streams.io.kafka import aiokafka_options, assign_all_partitions

    consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=32 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        tps = await assign_all_partitions(consumer, settings, topic, from_beginning=True)
        if not tps:
            return []
        # Reading until the position passes the end also reads a last record batch whose end a broker
        # misreports (Tansu 0.6: the base offset of the last batch + 1): fetches return whole batches.
        ends = await consumer.end_offsets(tps)
        values: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {topic} to its end within {timeout_s:.0f} s")
            for records in (await consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                values.extend(orjson.loads(r.value) for r in records if r.key and r.key.startswith(prefixes))
        return values
    finally:
        await consumer.stop()


def _fenced_events(settings: Any, stream: _Stream, worker_id: str, before_ms: int) -> int:
    """Training events covered by the fences ``worker_id`` wrote before ``before_ms``."""
    fences = asyncio.run(_read_keyed(settings, settings.metrics_topic, (f"fence:{worker_id}".encode(),)))
    latest: dict[int, int] = {}
    for fence in fences:
        if fence.get("worker_id") == worker_id and int(fence.get("ts_ms", 0)) <= before_ms:
            for partition, offset in fence.get("offsets", {}).items():
                latest[int(partition)] = max(latest.get(int(partition), -1), int(offset))
    return sum(stream.events_through(p, o) for p, o in latest.items())


# --------------------------------------------------------------------------- phases


def _start_workers(settings: Any, n: int, workdir: Path, live: list[Any]) -> tuple[list[Any], float, str]:
    """W ready workers, the group settled; the workers, seconds it took, and how settling was checked."""
    from streams.tools.worker_process import WorkerProcess

    started = time.monotonic()
    spawned_ms = _now_ms()
    workers = []
    with _cwd(workdir):
        for k in range(n):
            worker_id = f"{settings.app_id}-w{k}"
            worker = WorkerProcess(dataclasses.replace(settings, worker_id=worker_id), workdir / f"{worker_id}.log")
            live.append(worker)
            workers.append(worker.start())
    for worker in workers:
        worker.wait_ready(timeout=120.0, after_ms=spawned_ms)
    check = "describe_groups"
    stable = 0
    deadline = time.monotonic() + 90.0
    while stable < 2:
        try:
            state, members, owned = asyncio.run(_group(settings))
        except Exception as exc:  # a broker without DescribeGroups: a fixed wait instead
            log(f"cannot describe the consumer group ({type(exc).__name__}: {exc}); waiting 5 s instead")
            time.sleep(5.0)
            check = "fixed wait"
            break
        if owned is not None:
            check = "describe_groups with assignments"
        busy = min(n, settings.partitions)  # members beyond the partition count stay idle
        settled = state == "Stable" and members == n and (owned is None or sum(o > 0 for o in owned) == busy)
        stable = stable + 1 if settled else 0
        if time.monotonic() > deadline:
            raise RuntimeError(f"the consumer group did not settle with {n} members in 90 s "
                               f"(state {state}, {members} members, partitions per member {owned})")
        for worker in workers:
            if not worker.alive():
                raise RuntimeError(f"worker {worker.settings.worker_id} exited:\n{worker.log_tail()}")
        time.sleep(0.5)
    time.sleep(1.0)  # the assignment reached every worker: fences read, partitions fetched
    return workers, time.monotonic() - started, check


def _throughput(settings: Any, workers: list[Any], stream: _Stream, restart: bool, workdir: Path, live: list[Any],
                timeout_s: float, rate: float | None = None, already: int = 0) -> dict[str, Any]:
    """Produce ``stream``'s events (at ``rate`` events/s, or as fast as they go) while the workers consume
    them; ``already``: the events the workers applied before (their heartbeats count since start). See the
    module docstring (phases 2 and 6)."""
    import orjson

    from streams.io.redis import sync_redis
    from streams.tools.bench.pipeline import _produce_all
    from streams.tools.worker_process import WorkerFailed, WorkerProcess

    n = stream.n
    marks: dict[str, Any] = {}
    outcome: dict[str, Any] = {}
    began = threading.Event()

    def on_start() -> None:
        marks["cpu"] = [_cpu_seconds(_pid(w)) or 0.0 for w in workers]
        marks["start_ms"] = time.time() * 1000.0
        began.set()

    def produce() -> None:
        try:
            outcome["seconds"] = asyncio.run(_produce_all(settings, stream.messages, on_start, rate, BATCH_EVENTS))
        except BaseException as exc:  # re-raised by the watching thread
            outcome["error"] = exc
            began.set()

    producer = threading.Thread(target=produce, name="bench-scale-producer", daemon=True)
    producer.start()
    if not began.wait(120.0):
        raise RuntimeError("the producer did not start sending within 120 s")
    if "error" in outcome:
        raise outcome["error"]
    base = list(marks["cpu"])
    last = list(base)
    dead_cpu = 0.0
    keys = [settings.worker_key(w.settings.worker_id) for w in workers]
    client = sync_redis(settings)
    result: dict[str, Any] = {"restart_at_events": None, "killed_events_total": None, "killed_fenced_events": None,
                              "successor_ready_s": None}
    victim = 1
    killed_ms: int | None = None
    respawned_ms = 0
    respawned_at = 0.0
    fenced: int | None = None  # training events the killed process applied up to its last fence
    seen_total = [-1] * len(workers)  # each worker's events_total, and the heartbeat that first showed it
    changed_ms = [0] * len(workers)
    half: list[int] | None = None  # events_total per worker when the events applied first reached N / 2
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if "error" in outcome:
                raise outcome["error"]
            for k, worker in enumerate(workers):
                if not worker.alive():
                    raise WorkerFailed(f"worker {worker.settings.worker_id} exited with "
                                       f"{worker.process and worker.process.returncode}:\n{worker.log_tail()}")
                cpu = _cpu_seconds(_pid(worker))
                if cpu is not None:
                    last[k] = cpu
            statuses: list[dict[str, Any] | None] = []
            for k, raw in enumerate(client.mget(keys)):
                status = orjson.loads(raw) if raw is not None else None
                if status is not None and killed_ms is not None and k == victim \
                        and int(status.get("started_ms") or 0) < respawned_ms:
                    status = None  # the killed process's last heartbeat, until the successor's first
                statuses.append(status)
            totals = [int(s.get("events_total") or 0) if s else 0 for s in statuses]
            for k, (status, total) in enumerate(zip(statuses, totals)):
                if status is not None and total != seen_total[k]:
                    seen_total[k], changed_ms[k] = total, int(status["heartbeat_ms"])
            applied = sum(totals) + (fenced or 0) - already
            if half is None and applied >= n / 2:
                half = list(totals)
            if restart and killed_ms is None and applied >= n // 2:
                result["restart_at_events"] = applied
                result["killed_events_total"] = totals[victim]  # its last heartbeat (<= 1 s old)
                log(f"  {applied:,} events applied: SIGKILL {workers[victim].settings.worker_id}, starting it again")
                workers[victim].kill()
                killed_ms = _now_ms()
                dead_cpu += last[victim] - base[victim]
                successor = WorkerProcess(workers[victim].settings,
                                          workdir / f"{workers[victim].settings.worker_id}-restarted.log")
                respawned_ms = _now_ms()
                respawned_at = time.monotonic()
                with _cwd(workdir):
                    live.append(successor)
                    workers[victim] = successor.start()
                base[victim] = last[victim] = 0.0  # the successor's CPU counts from its start
                continue
            if killed_ms is not None and fenced is None and _now_ms() - killed_ms >= 500:
                fenced = _fenced_events(settings, stream, workers[victim].settings.worker_id, killed_ms)
                # What it applied after its last fence is applied again by the partitions' next owner: counts
                # and sets stay exact (fences), item deltas it already published for those events are not taken back.
                result["killed_fenced_events"] = fenced
                continue
            if killed_ms is not None and result["successor_ready_s"] is None and statuses[victim] \
                    and statuses[victim].get("ready"):
                result["successor_ready_s"] = round(time.monotonic() - respawned_at, 2)
            if applied >= n and (killed_ms is None or fenced is not None):
                break
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {w.settings.worker_id} ---\n{w.log_tail(15)}" for w in workers)
                raise WorkerFailed(f"{applied:,} of {n:,} events applied after {timeout_s:.0f} s:\n{tails}")
            time.sleep(0.05)
        detected_ms = _now_ms()
        cpu_s = dead_cpu + sum(c - b for c, b in zip(last, base))
        # The end, precisely: the last writes caused by each partition's last event.
        values = client.mget([settings.rec_key(u) for u in stream.last_user.values()])
        ends = [int(orjson.loads(v)["updated_ms"]) for v in values if v is not None]
        if ends and len(ends) == len(values):
            end_ms, end_source = float(max(ends)), "last_partition_writes"
        else:
            end_ms, end_source = float(max(int(s["heartbeat_ms"]) for s in statuses if s)), "heartbeat"
        producer.join(60.0)
        if "error" in outcome:
            raise outcome["error"]
        seconds = max(end_ms - marks["start_ms"], 1.0) / 1000.0
        result.update(
            events_per_s=n / seconds,
            process_seconds=round(seconds, 3),
            detected_after_end_ms=round(detected_ms - end_ms),
            end_source=end_source,
            producer_rate=n / outcome["seconds"] if outcome.get("seconds") else None,
            cpu_s=round(cpu_s, 2),
            cpu_s_per_1k_events=cpu_s / n * 1000.0,
            events_applied=applied,
            events_per_worker=totals,
            events_per_worker_at_half=half,
            # When each worker's heartbeat first showed its final events_total (+- 1 s: heartbeats are 1 s apart).
            worker_done_s=[round(max(ms - marks["start_ms"], 0.0) / 1000.0, 1) for ms in changed_ms],
            killed_ms=killed_ms,
        )
        return result
    finally:
        client.close()
        producer.join(60.0)


def _events_total(settings: Any, workers: list[Any]) -> int:
    """The events the workers applied since they started, by their heartbeats."""
    import orjson

    from streams.io.redis import sync_redis

    client = sync_redis(settings)
    try:
        raws = client.mget([settings.worker_key(w.settings.worker_id) for w in workers])
    finally:
        client.close()
    return sum(int(orjson.loads(raw).get("events_total") or 0) for raw in raws if raw is not None)


def _wait_final(settings: Any, workers: list[Any], timeout_s: float = 60.0) -> None:
    """2 s, then until every worker is ready (a successor too) and none has lists waiting for Redis."""
    import orjson

    from streams.io.redis import sync_redis

    time.sleep(2.0)
    client = sync_redis(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            raws = client.mget([settings.worker_key(w.settings.worker_id) for w in workers])
            statuses = [orjson.loads(r) if r is not None else None for r in raws]
            if all(s and s.get("ready") and not s.get("pending_users") for s in statuses):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"lists still pending after {timeout_s:.0f} s: {statuses}")
            time.sleep(0.2)
    finally:
        client.close()


def _hit_rate(settings: Any, stream: _Stream) -> dict[str, Any]:
    import orjson

    from streams.io.redis import sync_redis

    users = sorted({user for user, _ in stream.holdout})
    client = sync_redis(settings)
    try:
        pipe = client.pipeline(transaction=False)
        for lo in range(0, len(users), 1000):
            pipe.mget([settings.rec_key(u) for u in users[lo : lo + 1000]])
        values = [v for chunk in pipe.execute() for v in chunk]
    finally:
        client.close()
    lists = {u: set(orjson.loads(v)["items"]) for u, v in zip(users, values) if v is not None}
    evaluated = hits = 0
    for user, item in stream.holdout:
        listed = lists.get(user)
        if listed is None or item in stream.history.get(user, ()):
            continue
        evaluated += 1
        hits += item in listed
    return {
        "hr_at_50": hits / evaluated if evaluated else None,
        "hr_evaluated_events": evaluated,
        "holdout_users": len(users),
        "holdout_users_with_list": len(lists),
    }


def _popular_check(settings: Any, stream: _Stream, retry_s: float = 5.0) -> dict[str, Any]:
    import orjson

    from streams.io.redis import sync_redis

    tags = sorted(stream.tag_popular)
    keys = [settings.popular_key, *(settings.tag_popular_key(t) for t in tags)]
    expected = [stream.popular, *(stream.tag_popular[t] for t in tags)]
    client = sync_redis(settings)
    try:
        deadline = time.monotonic() + retry_s
        while True:
            overlaps = []
            lists = [orjson.loads(raw) if raw is not None else None for raw in client.mget(keys)]
            for want, data in zip(expected, lists):
                got = set(data["items"]) if data is not None else set()
                overlaps.append(len(got & set(want)) / max(len(want), len(got), 1))
            if min(overlaps) == 1.0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # the writer refreshes them once a second
    finally:
        client.close()
    # Beyond the ranking: the global list's scores over the offline ones (1.0 when the counts are right;
    # the lists hold scores rounded to 5 decimals).
    ratios: list[float] = []
    if lists[0] is not None:
        offline = stream.popularity.score("", lists[0]["items"]).tolist()
        ratios = [got / want for got, want in zip(lists[0]["scores"], offline) if want > 0]
    return {
        "popular_lists_consistent": min(overlaps) == 1.0,
        "popular_overlap": overlaps[0],
        "popular_min_overlap": min(overlaps),
        "tag_lists_compared": len(tags),
        "tag_lists_differing": sum(o < 1.0 for o in overlaps[1:]),
        "popular_score_ratio_min": round(min(ratios), 6) if ratios else None,
        "popular_score_ratio_max": round(max(ratios), 6) if ratios else None,
    }


def _health(settings: Any, n: int, before_ms: int, killed: tuple[str, int] | None) -> dict[str, Any]:
    """Staleness, exchange volume, partition split and popular writers from the run's metrics topic."""
    records = asyncio.run(_read_keyed(settings, settings.metrics_topic, (b"health:", b"fence:")))
    health = sorted((r for r in records if r.get("type") == "health"), key=lambda r: r["window_end_ms"])
    fences = sorted((r for r in records if r.get("type") == "fence"), key=lambda r: r["ts_ms"])

    def values(name: str) -> list[float]:
        return [r[name] for r in health if r.get(name) is not None]

    p50s, p99s = values("item_staleness_p50_ms"), values("item_staleness_p99_ms")
    maxes = values("item_staleness_max_ms")
    # Cumulative totals: the last record of each process before the freshness phase (a killed process's last).
    last: dict[tuple[str, bool], dict[str, Any]] = {}
    for record in health:
        if record["window_end_ms"] <= before_ms:
            successor = killed is not None and record["worker_id"] == killed[0] and record["window_end_ms"] > killed[1]
            last[(record["worker_id"], successor)] = record

    def per_event(name: str) -> float:
        return sum(int(r.get(name) or 0) for r in last.values()) / n

    owners: dict[int, set[str]] = {}
    partitions: dict[str, list[int]] = {}
    for fence in fences:
        if fence["ts_ms"] <= before_ms:
            partitions[fence["worker_id"]] = sorted(int(p) for p in fence["offsets"])
            for p in fence["offsets"]:
                owners.setdefault(int(p), set()).add(fence["worker_id"])
    final = {r["worker_id"]: r for r in last.values()}
    killed_record = last.get((killed[0], False)) if killed is not None else None
    return {
        "item_staleness_p50_ms": statistics.median(p50s) if p50s else None,
        "item_staleness_p99_ms": max(p99s) if p99s else None,
        "item_staleness_max_ms": max(maxes) if maxes else None,
        "staleness_records": len(p50s),
        "health_records": len(health),
        "exchange_bytes_per_event": per_event("item_bytes_sent_total"),
        "item_rows_applied_per_event": per_event("item_rows_applied_total"),
        "item_bytes_applied_per_event": per_event("item_bytes_applied_total"),
        "item_rows_unknown": sum(int(r.get("item_rows_unknown_total") or 0) for r in last.values()),
        "partitions_per_worker": {w: len(ps) for w, ps in sorted(partitions.items())},
        "partition_moves": sum(len(o) - 1 for o in owners.values()),
        "popular_writers": sorted(w for w, r in final.items() if r.get("writes_popular_lists")),
        "killed_wrote_popular_lists": bool(killed_record.get("writes_popular_lists")) if killed_record else None,
    }


def _stop(workers: list[Any]) -> None:
    """SIGTERM every worker at once (one by one, each stop would rebalance the others)."""
    threads = [threading.Thread(target=w.stop, daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60.0)


def _one_run(opts: ScaleOptions, n_workers: int, restart: bool, broker_url: str, redis_url: str, workdir: Path,
             stream: _Stream, backlogs: list[_Stream], live: list[Any]) -> dict[str, Any]:
    from streams.settings import Settings
    from streams.tools.bench.pipeline import BenchOptions, _freshness

    tag = "scale" + uuid.uuid4().hex[:8]
    settings = Settings.from_env(broker_url=broker_url, redis_url=redis_url, topic_prefix=tag, redis_prefix=tag,
                                 app_id=tag, worker_id=f"{tag}-w0", web_enabled=False, metrics_window_s=2.0,
                                 metrics_grace_s=0.5)
    name = f"W={n_workers}{' restart' if restart else ''}"
    result: dict[str, Any] = {"workers": n_workers, "restarted": restart, "events": stream.n,
                              "holdout": len(stream.holdout), "topic_prefix": tag, "top_n": settings.top_n}
    log(f"{name}: starting {n_workers} worker(s) ({tag})")
    workers, ready_s, check = _start_workers(settings, n_workers, workdir, live)
    result.update(ready_s=round(ready_s, 2), group_check=check)
    pace = f"at {opts.rate:,.0f} events/s" if opts.rate else "as fast as they go"
    log(f"{name}: ready and settled in {ready_s:.1f} s; producing {stream.n:,} training events {pace}")
    timeout = opts.timeout_s or 120.0 + stream.n / 1000.0 + (stream.n / opts.rate if opts.rate else 0.0)
    learn = _throughput(settings, workers, stream, restart, workdir, live, timeout, rate=opts.rate or None)
    for key in ("events_per_s", "process_seconds", "cpu_s", "cpu_s_per_1k_events", "producer_rate"):
        learn[f"learn_{key}"] = learn.pop(key)
    result.update(learn)
    log(f"{name}: learned at {result['learn_events_per_s']:,.0f} events/s, {result['learn_cpu_s_per_1k_events']:.3f} "
        f"CPU s per 1k events (per worker {result['events_per_worker']})")
    _wait_final(settings, workers)
    result.update(_hit_rate(settings, stream))
    log(f"{name}: HR@{settings.top_n} {result['hr_at_50']} over {result['hr_evaluated_events']:,} held-back events")
    result.update(_popular_check(settings, stream))
    log(f"{name}: popular lists consistent: {result['popular_lists_consistent']} "
        f"(min overlap {result['popular_min_overlap']:.3f} over {result['tag_lists_compared'] + 1} lists)")
    freshness_ms = _now_ms()
    if opts.freshness_seconds > 0:
        fresh_opts = BenchOptions(freshness_seconds=opts.freshness_seconds, batch_events=BATCH_EVENTS)
        fresh = asyncio.run(_freshness(settings, stream.world, tag, opts.freshness_rate, fresh_opts))
        result.update({k: fresh[k] for k in ("freshness_p50_ms", "freshness_p95_ms", "freshness_p99_ms",
                                             "freshness_samples", "freshness_missing")})
        result.update(freshness_offered_rate=fresh["offered_rate"], freshness_achieved_rate=fresh["achieved_rate"])
        log(f"{name}: freshness p50/p99 {result['freshness_p50_ms']}/{result['freshness_p99_ms']} ms at "
            f"{fresh['achieved_rate']:,.0f} events/s ({fresh['freshness_samples']} samples, "
            f"{fresh['freshness_missing']} missing)")
    else:
        result.update(freshness_p50_ms=None, freshness_p95_ms=None, freshness_p99_ms=None, freshness_samples=0)
    if backlogs and backlogs[0].n:
        rounds = []
        for k, backlog in enumerate(backlogs):  # several backlogs: a shared machine's noise shows, medians hold
            _wait_final(settings, workers)
            already = _events_total(settings, workers)
            log(f"{name}: capacity {k + 1}/{len(backlogs)}: a backlog of {backlog.n:,} events as fast as they go")
            rounds.append(_throughput(settings, workers, backlog, False, workdir, live,
                                      120.0 + backlog.n / 1000.0, already=already))
        for key in ("events_per_s", "cpu_s_per_1k_events"):
            result[key] = statistics.median(r[key] for r in rounds)
            result[f"{key}_rounds"] = [round(r[key], 4) for r in rounds]
        result["capacity_events"] = backlogs[0].n
        log(f"{name}: {result['events_per_s']:,.0f} events/s, {result['cpu_s_per_1k_events']:.4f} CPU s per 1k "
            f"events at full load (medians of {result['cpu_s_per_1k_events_rounds']})")
    else:
        result.update(events_per_s=None, cpu_s_per_1k_events=None, capacity_events=0)
    log(f"{name}: stopping the workers; reading the health records")
    _stop(workers)
    killed_ms = result.pop("killed_ms")
    killed = (workers[1].settings.worker_id, killed_ms) if killed_ms is not None else None
    result.update(_health(settings, stream.n, freshness_ms, killed))
    log(f"{name}: item staleness p50/p99/max {result['item_staleness_p50_ms']}/{result['item_staleness_p99_ms']}/"
        f"{result['item_staleness_max_ms']} ms; {result['exchange_bytes_per_event']:.1f} exchange bytes per event; "
        f"partitions {result['partitions_per_worker']}")
    return result


# --------------------------------------------------------------------------- driver


def run_scale(opts: ScaleOptions) -> list[dict[str, Any]]:
    """Every run, in order; one result dict per run. Stops everything it started."""
    from streams.settings import Settings
    from streams.tools.bench.pipeline import _start_services, _stop_services

    if opts.events <= 0 or opts.holdout < 0 or opts.users <= 0 or opts.items <= 0:
        raise ValueError("--events, --users and --items must be > 0, --holdout >= 0")
    if not opts.workers or min(opts.workers) < 1:
        raise ValueError("--workers needs worker counts >= 1")
    if opts.freshness_seconds > 0 and not opts.freshness_rate > 0:
        raise ValueError("--freshness-rate must be > 0")
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-scale-"))
    started: list[Any] = []  # services
    live: list[Any] = []  # every worker process started (stopped again at the end, whatever happens)
    results: list[dict[str, Any]] = []
    try:
        broker_url, redis_url, broker = _start_services(opts.bootstrap, opts.redis_url, workdir, started)
        template = Settings.from_env(broker_url=broker_url, redis_url=redis_url)
        if max(opts.workers) > template.partitions:
            log(f"note: more workers ({max(opts.workers)}) than partitions ({template.partitions}): some stay idle")
        log(f"generating {opts.events:,} + {opts.holdout:,} events ({opts.users:,} users, {opts.items:,} items) "
            f"and the offline popular lists")
        t = time.perf_counter()
        stream = _stream(opts, template)
        backlogs = [_stream(dataclasses.replace(opts, seed=opts.seed + 1 + k, events=opts.capacity_events,
                                                holdout=0), template)
                    for k in range(opts.capacity_rounds if opts.capacity_events else 0)]
        log(f"generated in {time.perf_counter() - t:.1f} s: {len(stream.messages):,} messages + "
            f"{len(backlogs)} backlogs")
        plan = [(w, False) for w in opts.workers]
        if opts.restart:
            plan = [run for w in opts.workers for run in ([(w, False), (w, True)] if w >= 2 else [(w, False)])]
        for n_workers, restart in plan:
            try:
                result = _one_run(opts, n_workers, restart, broker_url, redis_url, workdir, stream, backlogs, live)
            finally:
                _stop([w for w in live if w.alive()])
            result.update(users=opts.users, items=opts.items, partitions=template.partitions, broker=broker)
            results.append(result)
        baseline = next((r["hr_at_50"] for r in results if r["workers"] == 1 and not r["restarted"]), None)
        for result in results:
            hr = result["hr_at_50"]
            result["quality_vs_1"] = hr / baseline if baseline and hr is not None else None
        return results
    finally:
        _stop([w for w in live if w.alive()])
        if opts.worker_logs:
            target = Path(opts.worker_logs)
            target.mkdir(parents=True, exist_ok=True)
            for path in workdir.glob("*.log"):
                if path.name not in ("broker.log", "redis.log"):
                    shutil.copyfile(path, target / path.name)
        _stop_services(started)
        shutil.rmtree(workdir, ignore_errors=True)


def _table(results: list[dict[str, Any]]) -> str:
    def f(v: Any, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    first = results[0]
    lines = [
        f"streamrec scale benchmark: {first['events']:,} events (+{first['holdout']:,} held back), "
        f"{first['users']:,} users, {first['items']:,} items, {first['partitions']} partitions ({first['broker']})",
        f"{'workers':>7} {'restart':>7} {'events/s':>9} {'cpu s/1k':>8} {'fresh p50/p99 ms':>17} "
        f"{'stale p50/p99 ms':>17} {'HR@50':>6} {'vs W=1':>6} {'popular':>8} {'xchg B/ev':>9} {'split':>12}",
    ]
    for r in results:
        split = "/".join(str(v) for v in r["partitions_per_worker"].values())
        lines.append(
            f"{r['workers']:>7} {'yes' if r['restarted'] else 'no':>7} {f(r['events_per_s']):>9} "
            f"{f(r['cpu_s_per_1k_events'], '.3f'):>8} "
            f"{f(r['freshness_p50_ms']) + '/' + f(r['freshness_p99_ms']):>17} "
            f"{f(r['item_staleness_p50_ms']) + '/' + f(r['item_staleness_p99_ms']):>17} "
            f"{f(r['hr_at_50'], '.4f'):>6} {f(r['quality_vs_1'], '.3f'):>6} "
            f"{('ok' if r['popular_lists_consistent'] else 'DIFFER'):>8} {f(r['exchange_bytes_per_event'], '.1f'):>9} "
            f"{split:>12}"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import orjson

    opts = options_from_args(args)
    # A plain kill must still stop the broker, Redis and workers this run started (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        results = run_scale(opts)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except Exception as exc:  # one line: the message's first and last lines (a worker's log tail ends with its error)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = lines[0] + (f" ... {lines[-1]}" if len(lines) > 1 else "") if lines else ""
        log(f"failed: {type(exc).__name__}: {text}")
        return 1
    if opts.json:
        for result in results:
            print(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        print(_table(results))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m streams.tools.bench.scale")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
