"""``streamrec demo`` / ``make demo``: the whole product on the embedded services, live.

It starts a Tansu broker and a redis-server, a real worker process, and plays synthetic
short-video traffic (creators, communities, Zipf popularity, users with tastes, the
view -> like -> share funnel, watch time, a sprinkle of malformed messages). A spotlight
user starts binge-watching a community that is new to them; the screen shows their cached
list moving toward it. It ends after ``--events`` events (or Ctrl-C) with a summary, and
stops everything it started.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.client import AsyncRecsReader, EventProducer, Recommendations
from streams.dev import DevServices
from streams.kafka import aiokafka_options, topic_partitions
from streams.monitor import MetricsBoard
from streams.settings import Settings
from streams.synthetic import SyntheticWorld, WorldConfig, malformed_payloads
from streams.worker_process import WorkerProcess

__all__ = ["DemoOptions", "run_demo"]


@dataclass(frozen=True)
class DemoOptions:
    events: int = 60_000
    rate: float = 2_000.0
    users: int = 5_000
    items: int = 3_000
    seed: int = 7
    plain: bool = False
    malformed_every: int = 500  # one malformed message per this many events


@dataclass
class DemoState:
    produced: int = 0
    malformed: int = 0
    started: float = field(default_factory=time.monotonic)
    ready_s: float = 0.0
    spotlight_user: str = ""
    spotlight_tag: str = ""
    spotlight_share: list[tuple[int, float]] = field(default_factory=list)  # (events produced, share of list)
    recs: Recommendations | None = None
    board: MetricsBoard = field(default_factory=MetricsBoard)


def run_demo(options: DemoOptions) -> int:
    """Run the demo; returns the process exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
    print(f"starting the embedded broker and Redis (logs in {workdir}) ...", file=sys.stderr)
    with DevServices(state_dir=workdir) as services:
        settings = Settings.from_env(
            broker_url=services.broker_url,
            redis_url=services.redis_url,
            topic_prefix="demo",
            redis_prefix="demo",
            app_id="streamrec-demo",
            worker_id="demo-worker",
            metrics_window_s=5.0,
            metrics_grace_s=1.0,
        )
        worker = WorkerProcess(settings, workdir / "worker.log").start()
        state = DemoState()
        try:
            print("starting a worker ...", file=sys.stderr)
            state.ready_s = worker.wait_ready()
            print(f"worker ready in {state.ready_s:.1f} s; playing {options.events:,} events "
                  f"at {options.rate:,.0f}/s", file=sys.stderr)
            try:
                asyncio.run(_play(settings, options, state))
            except KeyboardInterrupt:
                print("\ninterrupted: stopping ...", file=sys.stderr)
            _print_summary(options, state, worker)
        finally:
            worker.stop()
    return 0


async def _play(settings: Settings, options: DemoOptions, state: DemoState) -> None:
    world = SyntheticWorld(WorldConfig(users=options.users, items=options.items, seed=options.seed))
    rng = random.Random(options.seed)
    state.spotlight_user = world.user_ids[0]
    fans = set(world.user_top_communities(state.spotlight_user, 3))
    state.spotlight_tag = next(t for t in world.communities if t not in fans)
    bad = malformed_payloads(max(options.events // options.malformed_every, 1), seed=options.seed)
    reader = AsyncRecsReader(settings)
    watcher = asyncio.create_task(_watch_metrics(settings, state))
    display = asyncio.create_task(_display(options, state, reader))
    try:
        async with EventProducer(settings) as producer:
            started = time.perf_counter()
            binge_at = {options.events // 3, 2 * options.events // 3}
            for event in world.events(options.events, rate_per_s=options.rate):
                await producer.send(event)
                state.produced += 1
                if state.produced in binge_at:  # the spotlight user discovers a new community
                    now_ms = int(time.time() * 1000)
                    for binge in world.engage(state.spotlight_user, state.spotlight_tag, 15, now_ms):
                        await producer.send(binge)
                if state.produced % options.malformed_every == 0 and bad:
                    key, value, _ = bad[rng.randrange(len(bad))]
                    await producer.send_raw(key, value)
                    state.malformed += 1
                if state.produced % 200 == 0:
                    ahead = state.produced / options.rate - (time.perf_counter() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            await producer.flush()
        await _wait_caught_up(state, timeout=30)
    finally:
        display.cancel()
        watcher.cancel()
        await asyncio.gather(display, watcher, return_exceptions=True)
        state.recs = await reader.get(state.spotlight_user, n=10)
        await reader.close()


async def _wait_caught_up(state: DemoState, timeout: float) -> None:
    """Until the worker has applied every valid event or dead-lettered every bad one (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = state.board.totals["events_processed"] + state.board.totals["events_dead_lettered"]
        if done >= state.produced + state.malformed:
            return
        await asyncio.sleep(0.5)


async def _watch_metrics(settings: Settings, state: DemoState) -> None:
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = await topic_partitions(settings, settings.metrics_topic)
        consumer.assign([TopicPartition(settings.metrics_topic, p) for p in partitions])
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    state.board.add(orjson.loads(m.value))
    finally:
        await consumer.stop()


async def _display(options: DemoOptions, state: DemoState, reader: AsyncRecsReader) -> None:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.panel import Panel
    from rich.table import Table

    world_tags: dict[str, list[str]] = {}

    def screen() -> Any:
        elapsed = time.monotonic() - state.started
        board = state.board
        health = next(iter(board.health.values()), {})
        head = Table.grid(padding=(0, 3))
        head.add_row(
            f"produced [bold]{state.produced:,}[/]/{options.events:,}",
            f"applied [bold]{int(board.totals['events_processed']):,}[/]",
            f"dead-lettered [bold]{int(board.totals['events_dead_lettered']):,}[/]",
            f"worker {health.get('events_per_s', 0):,.0f} ev/s",
            f"freshness p50 {health.get('freshness_p50_ms') or '-'} ms / p99 {health.get('freshness_p99_ms') or '-'} ms",
            f"{elapsed:,.0f} s",
        )
        trending = Table(title="trending per community (latest window)", expand=True)
        trending.add_column("community")
        trending.add_column("top items")
        for tag, items in board.trending_by_tag():
            trending.add_row(tag, ", ".join(items))
        recs = state.recs
        spot = Table(title=f"{state.spotlight_user} binges '{state.spotlight_tag}' at 1/3 and 2/3 of the run: "
                           f"their cached top-10", expand=True)
        spot.add_column("#", justify="right")
        spot.add_column("item")
        spot.add_column("tags")
        if recs is not None:
            for rank, item in enumerate(recs.items, 1):
                tags = world_tags.get(item, [])
                mark = "[bold green]" if state.spotlight_tag in tags else ""
                spot.add_row(str(rank), item, f"{mark}{', '.join(tags)}")
        return Group(Panel(head, title="streamrec demo"), trending, spot)

    world = SyntheticWorld(WorldConfig(users=options.users, items=options.items, seed=options.seed))
    console = Console(stderr=True)

    async def poll_spotlight() -> float:
        state.recs = await reader.get(state.spotlight_user, n=10)
        for item in state.recs.items:
            world_tags.setdefault(item, world.item_tags(item))
        share = sum(state.spotlight_tag in world_tags[i] for i in state.recs.items) / max(len(state.recs.items), 1)
        state.spotlight_share.append((state.produced, share))
        return share

    if options.plain:
        while True:
            share = await poll_spotlight()
            console.print(f"produced {state.produced:,}  applied {int(state.board.totals['events_processed']):,}  "
                          f"dead-lettered {int(state.board.totals['events_dead_lettered']):,}  "
                          f"'{state.spotlight_tag}' in {state.spotlight_user}'s top-10: {share:.0%}")
            await asyncio.sleep(2.0)
    with Live(screen(), console=console, refresh_per_second=4) as live:
        while True:
            await poll_spotlight()
            live.update(screen())
            await asyncio.sleep(0.5)


def _print_summary(options: DemoOptions, state: DemoState, worker: WorkerProcess) -> None:
    board = state.board
    elapsed = time.monotonic() - state.started
    fresh = [(h.get("freshness_p50_ms"), h.get("freshness_p99_ms")) for h in board.health.values()]
    before = [s for n, s in state.spotlight_share if n < options.events // 3]
    after = [s for n, s in state.spotlight_share if n >= 2 * options.events // 3]
    lines = [
        "",
        "streamrec demo summary",
        f"  events produced       {state.produced:,} valid + {state.malformed:,} malformed in {elapsed:.1f} s",
        f"  applied by the worker {int(board.totals['events_processed']):,}",
        f"  dead-lettered         {int(board.totals['events_dead_lettered']):,}",
        f"  worker start-to-ready {state.ready_s:.1f} s",
        f"  freshness p50 / p99   {fresh[-1][0] if fresh else '-'} / {fresh[-1][1] if fresh else '-'} ms (last window)",
        f"  spotlight user        {state.spotlight_user}: share of '{state.spotlight_tag}' in their top-10 "
        f"{(max(before) if before else 0):.0%} before the binge -> {(after[-1] if after else 0):.0%} at the end",
        f"  final list            {', '.join(state.recs.items) if state.recs else '-'}",
    ]
    print("\n".join(lines), file=sys.stderr)
