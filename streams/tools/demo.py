"""``streamrec demo`` / ``make demo``: the whole product on the embedded services, live.

It starts a Tansu broker and a redis-server, a real worker process, and plays synthetic
short-video traffic (creators, communities, Zipf popularity, users with tastes, the
view -> like -> share funnel, watch time, a sprinkle of malformed messages). A spotlight
user starts binge-watching a community that is new to them; the screen shows their cached
list moving toward it. It ends after ``--events`` events (or Ctrl-C) with a summary, and
stops everything it started. Meanwhile ``streamrec serve`` runs too, on 127.0.0.1: its live dashboard
(``Dashboard: http://127.0.0.1:PORT/``, printed first) draws the same metrics topic in a browser.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from streams.client import AsyncRecsReader, EventProducer, Recommendations
from streams.io.kafka import aiokafka_options, assign_all_partitions
from streams.settings import Settings
from streams.tools.dev import DevServices, free_port, stop_process
from streams.tools.monitor import MetricsBoard
from streams.tools.synthetic import SyntheticWorld, WorldConfig, malformed_payloads
from streams.tools.worker_process import WorkerProcess

__all__ = ["DemoOptions", "run_demo"]


@dataclass(frozen=True)
class DemoOptions:
    events: int = 60_000
    rate: float = 2_000.0
    users: int = 3_000
    items: int = 1_000
    seed: int = 7
    plain: bool = False
    malformed_every: int = 500  # one malformed message per this many events
    dashboard_port: int = 0  # the dashboard's port on 127.0.0.1 (0: a free one)


@dataclass
class DemoState:
    produced: int = 0
    malformed: int = 0
    started: float = field(default_factory=time.monotonic)
    ready_s: float = 0.0
    spotlight_user: str = "viewer-1"
    binge_tags: tuple[str, str] = ("", "")
    phase: int = 0  # 0: a new user; 1: after binging the first tag; 2: after the second
    phase_shares: dict[int, tuple[float, float]] = field(default_factory=dict)  # phase -> (share of A, of B)
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
        dashboard = _start_dashboard(settings, options.dashboard_port, workdir / "serve.log")
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
            _print_summary(options, state)
        finally:
            worker.stop()
            if dashboard is not None:
                stop_process(dashboard, timeout=15)
    return 0


def _start_dashboard(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes] | None:
    """``streamrec serve`` on 127.0.0.1 (its page at ``/`` is the live dashboard); None without the serve extra."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        print("no dashboard: it needs the serve extra (pip install -e '.[serve]')", file=sys.stderr)
        return None
    port = port or free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, our own module, fixed arguments
            [sys.executable, "-m", "streams.tools.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **settings.to_env()}, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    print(f"Dashboard: http://127.0.0.1:{port}/", file=sys.stderr, flush=True)
    return process


async def _play(settings: Settings, options: DemoOptions, state: DemoState) -> None:
    world = SyntheticWorld(WorldConfig(users=options.users, items=options.items, seed=options.seed))
    by_size = sorted(world.communities, key=lambda t: -len(world.community_items(t)))
    state.binge_tags = (by_size[1], by_size[2])
    rng = random.Random(options.seed)  # noqa: S311 - seeded demo traffic, not a secret
    bad = malformed_payloads(max(options.events // options.malformed_every, 1), seed=options.seed)
    reader = AsyncRecsReader(settings)
    watcher = asyncio.create_task(_watch_metrics(settings, state))
    display = asyncio.create_task(_display(options, state, reader, world))
    try:
        async with EventProducer(settings) as producer:
            started = time.perf_counter()
            binge_at = {options.events // 3: 0, 2 * options.events // 3: 1}
            for event in world.events(options.events, rate_per_s=options.rate, start_ms=int(time.time() * 1000)):
                await producer.send(event)
                state.produced += 1
                if state.produced in binge_at:  # the spotlight viewer binges a community
                    tag = state.binge_tags[binge_at[state.produced]]
                    binges = world.engage(state.spotlight_user, tag, 8, 0)
                    now_ms = int(time.time() * 1000)  # a binge just finished: its last event is now
                    for binge in binges:
                        await producer.send({**binge, "ts": binge["ts"] - binges[-1]["ts"] + now_ms})
                    state.phase += 1
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
        await asyncio.sleep(1.0)  # one more look at the spotlight list
    finally:
        display.cancel()
        watcher.cancel()
        await asyncio.gather(display, watcher, return_exceptions=True)
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
        await assign_all_partitions(consumer, settings, settings.metrics_topic, from_beginning=True)
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    state.board.add(orjson.loads(m.value))
    finally:
        await consumer.stop()


async def _display(options: DemoOptions, state: DemoState, reader: AsyncRecsReader, world: SyntheticWorld) -> None:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.panel import Panel
    from rich.table import Table

    tag_a, tag_b = state.binge_tags

    def screen() -> Any:
        board = state.board
        health = next(iter(board.health.values()), {})
        head = Table.grid(padding=(0, 3))
        head.add_row(
            f"produced [bold]{state.produced:,}[/]/{options.events:,}",
            f"applied [bold]{int(board.totals['events_processed']):,}[/]",
            f"dead-lettered [bold]{int(board.totals['events_dead_lettered']):,}[/]",
            f"worker {health.get('events_per_s', 0):,.0f} ev/s",
            f"freshness p50 {health.get('freshness_p50_ms') or '-'} / p99 {health.get('freshness_p99_ms') or '-'} ms",
            f"{time.monotonic() - state.started:,.0f} s",
        )
        trending = Table(title="trending per community (latest window)", expand=True)
        trending.add_column("community")
        trending.add_column("top items by views")
        for tag, items in board.trending_by_tag():
            trending.add_row(tag, ", ".join(items))
        story = ("a new viewer: the popular list", f"binged '{tag_a}'", f"then discovered '{tag_b}'")[state.phase]
        spot = Table(title=f"{state.spotlight_user} ({story}): cached top-10, "
                           f"source {state.recs.source if state.recs else '-'}", expand=True)
        spot.add_column("#", justify="right")
        spot.add_column("item")
        spot.add_column("tags")
        for rank, item in enumerate(state.recs.items if state.recs else [], 1):
            tags = world.item_tags(item) if item in world.item_ids else []
            colour = "green" if tag_a in tags else "cyan" if tag_b in tags else ""
            spot.add_row(str(rank), item, f"[{colour}]{', '.join(tags)}[/]" if colour else ", ".join(tags))
        return Group(Panel(head, title="streamrec demo"), trending, spot)

    async def poll_spotlight() -> tuple[float, float]:
        state.recs = await reader.get(state.spotlight_user, n=10)
        items = state.recs.items
        shares = tuple(sum(t in world.item_tags(i) for i in items if i in world.item_ids) / max(len(items), 1)
                       for t in state.binge_tags)
        if state.recs.source == "personal" or state.phase == 0:
            state.phase_shares[state.phase] = (shares[0], shares[1])
        return shares[0], shares[1]

    console = Console(stderr=True)
    if options.plain:
        while True:
            share_a, share_b = await poll_spotlight()
            console.print(f"produced {state.produced:,}  applied {int(state.board.totals['events_processed']):,}  "
                          f"dead-lettered {int(state.board.totals['events_dead_lettered']):,}  "
                          f"{state.spotlight_user}'s top-10: {share_a:.0%} '{tag_a}', {share_b:.0%} '{tag_b}'")
            await asyncio.sleep(2.0)
    with Live(screen(), console=console, refresh_per_second=4) as live:
        while True:
            await poll_spotlight()
            live.update(screen())
            await asyncio.sleep(0.5)


def _print_summary(options: DemoOptions, state: DemoState) -> None:
    board = state.board
    elapsed = time.monotonic() - state.started
    health = [h for h in board.health.values() if h.get("freshness_p50_ms") is not None]
    tag_a, tag_b = state.binge_tags
    story = []
    for phase, label in ((0, "as a new viewer"), (1, f"after binging '{tag_a}'"), (2, f"after discovering '{tag_b}'")):
        if phase in state.phase_shares:
            a, b = state.phase_shares[phase]
            story.append(f"{label}: {a:.0%} '{tag_a}', {b:.0%} '{tag_b}'")
    lines = [
        "",
        "streamrec demo summary",
        f"  events produced       {state.produced:,} valid + {state.malformed:,} malformed in {elapsed:.1f} s",
        f"  applied by the worker {int(board.totals['events_processed']):,} (valid events plus the spotlight's binges)",
        f"  dead-lettered         {int(board.totals['events_dead_lettered']):,}",
        f"  worker start-to-ready {state.ready_s:.1f} s",
        f"  freshness p50 / p99   {health[-1]['freshness_p50_ms'] if health else '-'} / "
        f"{health[-1]['freshness_p99_ms'] if health else '-'} ms (event time to Redis write, last window)",
        f"  {state.spotlight_user}'s top-10   " + ("; ".join(story) or "-"),
        f"  final list            {', '.join(state.recs.items) if state.recs else '-'}",
    ]
    print("\n".join(lines), file=sys.stderr)
