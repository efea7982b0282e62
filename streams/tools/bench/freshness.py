"""``streamrec bench freshness``: how much traffic one worker takes while lists follow their events.

    streamrec bench freshness --json                                   # 100k users x 100k items (~8 min)
    streamrec bench freshness --rates 2000,5000 --hold-s 20 --users 20000 --items 10000

On the embedded broker and Redis (or ``--bootstrap`` / ``--redis-url``), one real worker
process (``streamrec worker``):

1. **warm-up**: ``--warmup`` events of the synthetic world (users in sessions: returning users,
   Zipf activity, the view -> like -> share funnel) are produced as fast as they go and learned,
   so the model and the catalog are full before anything is timed.
2. for each rate of ``--rates``, for ``--hold-s`` seconds: events of the same world, stamped
   ``ts = now``, are offered at that rate through the real client (``EventProducer``: 200 events
   per message, 5 ms linger, as apps send them). One event in ``--sample-every`` belongs to a
   brand-new user: that user's list can only exist because that event was applied, so its first
   appearance in Redis (``updated_ms >= ts``, the right user, the engaged item excluded) times the
   event: ``p50_ms`` ... ``max_ms`` are ``updated_ms - ts`` (the write time), over every probe.
   ``cpu_pct`` is the worker's CPU time over the hold (``/proc``), ``lag_end`` the events sent but
   not yet applied when the hold ends (by the worker's heartbeat, which is up to 1 s old),
   ``drain_s`` how long the worker then takes to apply everything sent (by its heartbeats: +- 1 s), and
   ``stages`` the worker's own account of the hold (health records: p50 and p99 ms at the broker, in
   the intake queue, learning, ranking, writing to Redis; CPU µs per event by stage; time in Python's
   garbage collector; messages per batch). The warm-up's own checkpoint is left ``--settle-s`` (15 s)
   to finish first.
3. ``sustained_rate``: the highest rate whose p99 stayed within ``--slo-ms`` (250) with every probe
   seen and the worker keeping up (``drain_s`` at most 2 s: the lag did not grow).

This module imports only the standard library at import time (the CLI builds its parser cheaply).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FreshnessOptions", "add_arguments", "main", "run_freshness"]

DEFAULT_RATES = (2_000, 5_000, 10_000, 20_000, 40_000)
#: The worker kept up if it applied everything within this long after the hold (its heartbeat, which
#: reports what is applied, comes once a second).
_KEEPING_UP_S = 2.0


@dataclass
class FreshnessOptions:
    users: int = 100_000
    items: int = 100_000
    rates: list[float] = field(default_factory=lambda: [float(r) for r in DEFAULT_RATES])
    hold_s: float = 60.0
    warmup: int = 300_000
    slo_ms: float = 250.0
    sample_every: int = 20
    bootstrap: str | None = None
    redis_url: str | None = None
    json: bool = False
    seed: int = 0
    worker_log: str | None = None
    settle_s: float = 15.0  # idle seconds between the warm-up and the first hold


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = FreshnessOptions()
    parser.add_argument("--users", type=int, default=d.users, help="synthetic users (default 100000)")
    parser.add_argument("--items", type=int, default=d.items, help="synthetic items (default 100000)")
    parser.add_argument("--rates", default=",".join(str(int(r)) for r in d.rates),
                        help="offered events/s, one hold each (default 2000,5000,10000,20000,40000)")
    parser.add_argument("--hold-s", type=float, default=d.hold_s, help="seconds each rate is held (default 60)")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="events learned before timing (300000)")
    parser.add_argument("--slo-ms", type=float, default=d.slo_ms, help="freshness p99 target, ms (default 250)")
    parser.add_argument("--sample-every", type=int, default=d.sample_every,
                        help="one event in this many is a probe from a new user (default 20)")
    parser.add_argument("--bootstrap", default=None, help="use this Kafka (HOST:PORT) instead of an embedded broker")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of an embedded redis-server")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--worker-log", default=None, help="copy the worker's log here at the end")
    parser.add_argument("--settle-s", type=float, default=d.settle_s,
                        help="idle seconds after the warm-up, for its checkpoint to finish (default 15)")


def options_from_args(args: argparse.Namespace) -> FreshnessOptions:
    try:
        rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--rates must be numbers separated by commas, got {args.rates!r}") from None
    return FreshnessOptions(users=args.users, items=args.items, rates=rates, hold_s=args.hold_s,
                            warmup=args.warmup, slo_ms=args.slo_ms, sample_every=args.sample_every,
                            bootstrap=args.bootstrap, redis_url=args.redis_url, json=args.json, seed=args.seed,
                            worker_log=args.worker_log, settle_s=args.settle_s)


def log(message: str) -> None:
    print(f"[bench freshness] {message}", file=sys.stderr, flush=True)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status(settings: Any) -> dict[str, Any]:
    import orjson

    from streams.io.redis import sync_redis

    client = sync_redis(settings)
    try:
        raw = client.get(settings.worker_key(settings.worker_id))
    finally:
        client.close()
    return orjson.loads(raw) if raw else {}


def _wait_applied(settings: Any, worker: Any, n: int, timeout_s: float) -> float:
    """Seconds until the worker's heartbeat shows ``n`` events applied."""
    started = time.monotonic()
    while int(_status(settings).get("events_total") or 0) < n:
        if not worker.alive():
            raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the worker applied fewer than {n:,} events in {timeout_s:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def _health_between(settings: Any, since_ms: float, until_ms: float) -> list[dict[str, Any]]:
    import orjson
    from aiokafka import AIOKafkaConsumer

    from streams.io.kafka import aiokafka_options, assign_all_partitions

    async def read() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=32 * 1024 * 1024,
                                    fetch_max_bytes=64 * 1024 * 1024)
        await consumer.start()
        try:
            tps = await assign_all_partitions(consumer, settings, settings.metrics_topic, from_beginning=True)
            ends = await consumer.end_offsets(tps)
            records: list[dict[str, Any]] = []
            while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                for batch in (await consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                    for record in batch:
                        if record.key and record.key.startswith(b"health:"):
                            records.append(orjson.loads(record.value))
            return records
        finally:
            await consumer.stop()

    return [r for r in asyncio.run(read()) if since_ms <= r["window_end_ms"] <= until_ms + 1_000]


def _summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    latency: dict[str, float] = {}
    medians: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}
    events = 0
    gc_ms = gc_max_ms = 0.0
    batch_sizes = []
    for r in records:
        gc_ms += r.get("gc_ms") or 0.0
        gc_max_ms = max(gc_max_ms, r.get("gc_pause_max_ms") or 0.0)
        if r.get("batch_messages_mean"):
            batch_sizes.append(r["batch_messages_mean"])
        for stage, value in (r.get("latency_ms") or {}).items():
            latency[stage] = max(latency.get(stage, 0.0), value["p99"])
            medians.setdefault(stage, []).append(value["p50"])
        n = int(r.get("events_processed") or 0)
        events += n
        for stage, us in (r.get("cpu_us_per_event") or {}).items():
            cpu[stage] = cpu.get(stage, 0.0) + us * n
    return {"p50_ms": {s: round(statistics.median(v), 1) for s, v in medians.items()}, "p99_ms": latency,
            "gc_ms": round(gc_ms, 1), "gc_pause_max_ms": gc_max_ms,
            "batch_messages_median": statistics.median(batch_sizes) if batch_sizes else None,
            "cpu_us_per_event": {s: round(v / events, 1) for s, v in cpu.items()} if events else {}}


def run_freshness(opts: FreshnessOptions) -> dict[str, Any]:
    """Warm up, hold every rate, stop everything started; returns the result dict."""
    from streams.settings import Settings
    from streams.tools.bench.pipeline import (
        BenchOptions,
        _freshness,
        _messages,
        _produce_all,
        _start_services,
        _stop_services,
    )
    from streams.tools.synthetic import SyntheticWorld, WorldConfig
    from streams.tools.worker_process import WorkerProcess

    if opts.users <= 0 or opts.items <= 0 or opts.hold_s <= 0 or not opts.rates or min(opts.rates) <= 0:
        raise ValueError("--users, --items, --hold-s and every rate must be > 0")
    if opts.settle_s < 0:
        raise ValueError("--settle-s must be >= 0")
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-freshness-"))
    started: list[Any] = []
    worker: Any = None
    try:
        broker_url, redis_url, broker = _start_services(opts.bootstrap, opts.redis_url, workdir, started)
        tag = "fresh" + uuid.uuid4().hex[:8]
        settings = Settings.from_env(broker_url=broker_url, redis_url=redis_url, topic_prefix=tag, redis_prefix=tag,
                                     app_id=tag, worker_id=f"{tag}-w", web_enabled=False, metrics_window_s=2.0,
                                     metrics_grace_s=0.5)
        result: dict[str, Any] = {"users": opts.users, "items": opts.items, "slo_ms": opts.slo_ms,
                                  "hold_s": opts.hold_s, "warmup_events": opts.warmup, "broker": broker,
                                  "partitions": settings.partitions, "top_n": settings.top_n,
                                  "n_factors": settings.n_factors}
        world = SyntheticWorld(WorldConfig(users=opts.users, items=opts.items, seed=opts.seed))
        worker = WorkerProcess(settings, workdir / "worker.log")
        cwd = os.getcwd()
        os.chdir(workdir)  # Faust creates <app_id>-data in the current directory
        try:
            worker.start()
        finally:
            os.chdir(cwd)
        worker.wait_ready()
        pid = worker.process.pid
        applied = 0
        if opts.warmup:
            import orjson

            log(f"warm-up: {opts.warmup:,} events ({opts.users:,} users, {opts.items:,} items)")
            start_ms = int(time.time() * 1000) - int(opts.warmup / 20.0)
            encoded = [(e["user_id"].encode(), orjson.dumps(e))
                       for e in world.events(opts.warmup, start_ms=start_ms, rate_per_s=20_000)]
            asyncio.run(_produce_all(settings, _messages(settings, encoded, 200)))
            applied = opts.warmup
            seconds = _wait_applied(settings, worker, applied, 120.0 + opts.warmup / 1000.0)
            log(f"warm-up learned ({seconds:.1f} s after the last send)")
            # The warm-up's checkpoint (every user it touched) and item snapshot run in slices between
            # batches: let them finish so that the first hold measures steady traffic, not the warm-up's tail.
            time.sleep(opts.settle_s)
        curve = []
        for rate in opts.rates:
            log(f"{rate:,.0f} events/s for {opts.hold_s:.0f} s")
            cpu0, since_ms = _cpu_seconds(pid), time.time() * 1000
            end: dict[str, float] = {}

            def on_sent(sent: int) -> None:  # the hold's end: CPU, time, what is applied by then, and the drain
                end.update(cpu=_cpu_seconds(pid), ms=time.time() * 1000,
                           applied=float(_status(settings).get("events_total") or 0))
                end["drain_s"] = _wait_applied(settings, worker, applied + sent, 120.0 + sent / 1000.0)

            fresh_opts = BenchOptions(freshness_seconds=opts.hold_s, freshness_max_events=10**9,
                                      sample_every=opts.sample_every, batch_events=200)
            fresh = asyncio.run(_freshness(settings, world, f"{tag}r{int(rate)}", rate, fresh_opts, on_sent))
            until_ms = end["ms"]
            held_s = max((until_ms - since_ms) / 1000.0, 1e-3)
            cpu = end["cpu"] - cpu0
            sent = fresh["freshness_events"]
            lag_end = max(0, applied + sent - int(end["applied"]))
            drain_s = end["drain_s"]
            applied += sent
            stages = _summarise(_health_between(settings, since_ms, until_ms))
            point = {
                "offered_rate": rate, "achieved_rate": round(fresh["achieved_rate"], 1),
                "p50_ms": fresh["freshness_p50_ms"], "p95_ms": fresh["freshness_p95_ms"],
                "p99_ms": fresh["freshness_p99_ms"], "max_ms": fresh["freshness_max_ms"],
                "probes": fresh["freshness_samples"], "probes_missing": fresh["freshness_missing"],
                "cpu_pct": round(100.0 * cpu / held_s, 1), "lag_end": lag_end, "drain_s": round(drain_s, 2),
                "stages": stages,
            }  # fmt: skip
            point["kept_up"] = (point["p99_ms"] is not None and point["p99_ms"] <= opts.slo_ms
                                and point["probes_missing"] == 0 and drain_s <= _KEEPING_UP_S)
            curve.append(point)
            log(f"  p50/p99/max {point['p50_ms']}/{point['p99_ms']}/{point['max_ms']} ms, CPU {point['cpu_pct']} %, "
                f"lag at the end {lag_end:,}, drained in {drain_s:.1f} s; stages p99 {stages['p99_ms']}")
        result["curve"] = curve
        kept = [p["offered_rate"] for p in curve if p["kept_up"]]
        result["sustained_rate"] = max(kept) if kept else 0.0
        result["worker_rss_mb"] = worker.memory_mb("VmHWM")
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


def _table(r: dict[str, Any]) -> str:
    lines = [
        f"streamrec freshness benchmark: {r['users']:,} users x {r['items']:,} items, one worker, "
        f"{r['hold_s']:.0f} s per rate ({r['broker']}); SLO p99 <= {r['slo_ms']:.0f} ms",
        f"{'offered/s':>10} {'achieved/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU %':>6} "
        f"{'lag end':>8} {'drain s':>7}  kept up",
    ]
    for p in r["curve"]:
        lines.append(f"{p['offered_rate']:>10,.0f} {p['achieved_rate']:>10,.0f} {p['p50_ms'] or 0:>8.0f} "
                     f"{p['p99_ms'] or 0:>8.0f} {p['max_ms'] or 0:>8.0f} {p['cpu_pct']:>6.1f} {p['lag_end']:>8,} "
                     f"{p['drain_s']:>7.1f}  {'yes' if p['kept_up'] else 'no'}")
    lines.append(f"sustained_rate: {r['sustained_rate']:,.0f} events/s")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import orjson

    try:
        opts = options_from_args(args)
    except ValueError as exc:
        log(str(exc))
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = run_freshness(opts)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return 1
    print(orjson.dumps(result).decode() if opts.json else _table(result))
    return 0
