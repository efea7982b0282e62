"""The ``streamrec`` command line.

    streamrec worker                      run a worker (all settings from STREAMREC_* variables)
    streamrec worker --processes N        N worker processes under one supervisor (0 or auto: one per core)
    streamrec produce --file events.jsonl produce events from JSON lines ('-' = stdin)
    streamrec produce --synthetic 10000   produce synthetic short-video traffic
    streamrec recs USER_ID [-n 10]        print a user's cached recommendations
    streamrec metrics                     tail the metrics topic as a live table
    streamrec dev up|down|status          the embedded broker and Redis
    streamrec demo [--events N]           everything at once, on the embedded services
    streamrec settings                    every setting with its variable and default
    streamrec serve [--host H --port P]   the HTTP API (streams.tools.serve)
    streamrec eval --data PATH --format F prequential HR@10 / NDCG@10 / recall@20 of the models
    streamrec bench pipeline [--events N]  end-to-end throughput, freshness, recall and memory
    streamrec bench scale --workers 1 2 4  the same stream on 1, 2, 4 workers: rate, CPU, staleness, HR@50
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

import orjson

from streams.errors import ServiceUnavailable, StreamrecError
from streams.events import InvalidEvent
from streams.settings import Settings, SettingsError, describe_settings
from streams.tools.dev import DevServicesError

__all__ = ["main", "build_parser"]

DEV_STATE_DIR = Path(".streamrec-dev")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrec", description="Streaming recommender: Kafka in, Redis out.")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a Faust worker")
    worker.add_argument("-l", "--loglevel", default=None, help="log level (default STREAMREC_LOG_LEVEL)")
    worker.add_argument("--processes", type=_processes, default=1, metavar="N",
                        help="worker processes on this machine under one supervisor that restarts them and stops "
                             "them all on Ctrl-C / SIGTERM (default 1: the worker runs in this process); "
                             "0 or auto: one per CPU core")
    worker.add_argument("--stop-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="with --processes: how long a stop waits for the workers' last checkpoint before "
                             "killing them (default 30)")

    produce = sub.add_parser("produce", help="produce events to <prefix>.events")
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="JSON lines file of events, '-' for stdin")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic short-video events")
    produce.add_argument("--users", type=int, default=10_000, help="synthetic users (default 10000)")
    produce.add_argument("--items", type=int, default=5_000, help="synthetic items (default 5000)")
    produce.add_argument("--seed", type=int, default=0)
    produce.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")

    recs = sub.add_parser("recs", help="print a user's cached recommendations")
    recs.add_argument("user_id")
    recs.add_argument("-n", type=int, default=10)
    recs.add_argument("--json", action="store_true", help="print JSON")
    recs.add_argument("--tag", action="append", default=[], metavar="TAG",
                      help="for an unknown user, the list trending in this community (repeatable)")

    metrics = sub.add_parser("metrics", help="tail the metrics topic as a live table")
    metrics.add_argument("--json", action="store_true", help="print the raw records as JSON lines")
    metrics.add_argument("--from-beginning", action="store_true")
    metrics.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")

    dev = sub.add_parser("dev", help="start or stop the embedded broker and Redis")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.add_argument("--dir", type=Path, default=DEV_STATE_DIR, help="state directory (default .streamrec-dev)")

    demo = sub.add_parser("demo", help="embedded broker + Redis + worker + synthetic traffic, live")
    demo.add_argument("--events", type=int, default=60_000, help="events to play (default 60000)")
    demo.add_argument("--rate", type=float, default=2_000.0, help="events per second (default 2000)")
    demo.add_argument("--users", type=int, default=3_000)
    demo.add_argument("--items", type=int, default=1_000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--plain", action="store_true", help="plain progress lines instead of a live screen")
    demo.add_argument("--dashboard-port", type=int, default=0,
                      help="port of the live dashboard on 127.0.0.1 (default: a free one)")

    sub.add_parser("settings", help="list every setting with its environment variable and default")

    serve = sub.add_parser("serve", help="the HTTP API: recommendations, events, health (streams.tools.serve)")
    serve.add_argument("--host", default=None, help="address to bind (default STREAMREC_SERVE_HOST, 127.0.0.1); "
                       "a non-loopback one needs STREAMREC_API_KEYS_READ or STREAMREC_API_KEYS_WRITE")
    serve.add_argument("--port", type=int, default=None, help="port (default STREAMREC_SERVE_PORT, 8080)")
    serve.add_argument("--tls-cert", default=None, help="PEM certificate file: serve HTTPS (STREAMREC_SERVE_TLS_CERT)")
    serve.add_argument("--tls-key", default=None, help="PEM private key file of --tls-cert (STREAMREC_SERVE_TLS_KEY)")
    serve.add_argument("--workers", type=int, default=None, help="processes (default STREAMREC_SERVE_WORKERS, 1)")
    serve.add_argument("--openapi", action="store_true", help="print the OpenAPI document and exit")

    from streams.tools.eval import add_arguments as add_eval_arguments  # light: models load when it runs

    add_eval_arguments(sub.add_parser("eval", help="prequential evaluation of the models on a dataset"))

    from streams.tools.bench.pipeline import add_arguments as add_bench_arguments  # light: stdlib only at import
    from streams.tools.bench.scale import add_arguments as add_scale_arguments  # light: stdlib only at import

    bench = sub.add_parser("bench", help="benchmarks on real services")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    add_bench_arguments(bench_sub.add_parser("pipeline", help="producer, raw consumer, worker, freshness, recall, RSS"))
    from streams.tools.bench.freshness import add_arguments as add_freshness_arguments

    add_freshness_arguments(bench_sub.add_parser(
        "freshness", help="one worker at rising rates: freshness p50/p99, CPU, lag, stages; sustained_rate"))
    add_scale_arguments(bench_sub.add_parser(
        "scale", help="1, 2, 4 ... workers on one stream: rate, CPU, freshness, item staleness, HR@50, popular lists"))
    return parser


def _processes(value: str) -> int:
    from streams.worker.supervisor import parse_processes

    try:
        return parse_processes(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: Exit status of a bad setting (like a bad option: argparse exits 2 too).
EXIT_BAD_SETTING = 2
#: Exit status of a service (Kafka, Redis, the embedded services) that cannot be reached or started.
EXIT_UNAVAILABLE = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. What a person can act on is one line on stderr, ``streamrec <command>: ...``,
    never a traceback: a bad setting exits 2, Kafka or Redis out of reach (or the embedded services
    failing) exits 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = {"bench": f"bench {getattr(args, 'bench_command', '')}", "dev": f"dev {getattr(args, 'action', '')}"
               }.get(args.command, args.command)  # fmt: skip
    try:
        return _COMMANDS[args.command](args)
    except SettingsError as exc:
        return _fail(command, f"bad setting: {exc}", EXIT_BAD_SETTING)
    except KeyboardInterrupt:
        return 130
    except StreamrecError as exc:
        if isinstance(exc, (ServiceUnavailable, DevServicesError)):
            return _fail(command, str(exc), EXIT_UNAVAILABLE)
        raise
    except Exception as exc:
        unavailable = _explain(args, exc)
        if unavailable is None:
            raise
        return _fail(command, str(unavailable), EXIT_UNAVAILABLE)


def _fail(command: str, message: str, status: int) -> int:
    """One line on stderr: a message's first line (and the log it points to, as the embedded services' do)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["failed"]
    logs = [line.strip("- ") for line in lines[1:] if line.startswith("--- ") and line.endswith(" ---")]
    print(f"streamrec {command}: {lines[0]}" + (f" (log: {logs[0]})" if logs else ""), file=sys.stderr)
    return status


def _explain(args: argparse.Namespace, exc: Exception) -> ServiceUnavailable | None:
    """A connection error of aiokafka or redis-py as a ServiceUnavailable naming the command's address."""
    from streams.tools.reach import explain

    try:
        settings = Settings.from_env(**_service_overrides(args))
    except SettingsError:
        return None
    return explain(exc, settings, kafka_setting="--bootstrap" if getattr(args, "bootstrap", None) else
                   "STREAMREC_BROKER_URL", redis_setting="--redis-url" if getattr(args, "redis_url", None) else
                   "STREAMREC_REDIS_URL")  # fmt: skip


def _service_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``bench --bootstrap / --redis-url``: the addresses given on the command line instead of the settings."""
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap", None):
        overrides["broker_url"] = args.bootstrap if "://" in args.bootstrap else f"kafka://{args.bootstrap}"
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    return overrides


def _worker(args: argparse.Namespace) -> int:
    if args.processes != 1:
        return _supervise(args)
    from streams.io.kafka import ensure_topics
    from streams.tools.reach import check_kafka, check_redis

    checked = Settings.from_env()
    check_kafka(checked)  # a one-line error in seconds, not a Faust worker retrying or a traceback
    check_redis(checked)
    from streams.worker.wiring import app, settings

    level = args.loglevel or settings.log_level
    # Create the topics with the configured partitions before Faust subscribes: a consumer
    # group that subscribes to a missing topic waits for a metadata refresh to be assigned it.
    asyncio.run(ensure_topics(settings))
    # Faust parses sys.argv, and its worker command turns the web server on unless told not to:
    # it follows STREAMREC_WEB_ENABLED (off by default) and binds STREAMREC_WEB_HOST.
    sys.argv = ["streamrec", "worker", "--loglevel", level]
    if settings.web_enabled:
        sys.argv += ["--with-web", "--web-bind", settings.web_host, "--web-host", settings.web_host,
                     "--web-port", str(settings.web_port)]
    else:
        sys.argv.append("--without-web")
    # Whole lines per write: the workers of `--processes N` share one stdout and stderr.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True, write_through=False)
    app.main()
    return 0


def _supervise(args: argparse.Namespace) -> int:
    """``streamrec worker --processes N``: N worker processes under one supervisor (streams.worker.supervisor)."""
    from streams.tools.reach import check_kafka, check_redis
    from streams.worker.supervisor import Supervisor, worker_command

    settings = Settings.from_env()  # a bad setting stops here (exit 2), before any worker starts
    check_kafka(settings)  # and so do Kafka or Redis out of reach (exit 1)
    check_redis(settings)
    logging.getLogger("streams.worker.supervisor").setLevel(logging.INFO)
    if args.processes > settings.partitions:
        logging.getLogger("streams.worker.supervisor").warning(
            "%d worker processes for %d partitions (STREAMREC_PARTITIONS): %d will stay idle",
            args.processes, settings.partitions, args.processes - settings.partitions)
    supervisor = Supervisor(
        args.processes, settings.effective_worker_id, worker_command(args.loglevel),
        web_port=settings.web_port if settings.web_enabled else None, stop_timeout_s=args.stop_timeout,
        metrics_port=settings.metrics_port or None,  # worker <id>-i serves /metrics on this port + i - 1
    )  # fmt: skip
    return supervisor.run()


def _read_jsonl(path: str) -> Iterator[dict[str, Any]]:
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    with stream:
        for number, line in enumerate(stream, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidEvent("not_json", f"line {number}: {exc}") from None


def _produce(args: argparse.Namespace) -> int:
    from streams.client import EventProducer
    from streams.tools.reach import check_kafka

    settings = Settings.from_env()
    check_kafka(settings)

    async def run() -> int:
        started = time.perf_counter()
        async with EventProducer(settings) as producer:
            if args.file:
                try:
                    for number, event in enumerate(_read_jsonl(args.file), 1):
                        try:
                            await producer.send(event)
                        except InvalidEvent as exc:
                            raise InvalidEvent(exc.reason, f"event {number}: {exc.detail}") from None
                except InvalidEvent as exc:
                    await producer.flush()
                    print(f"streamrec produce: invalid input, stopped after {producer.sent} events: {exc}", file=sys.stderr)
                    return 1
            else:
                from streams.tools.synthetic import SyntheticWorld, WorldConfig

                world = SyntheticWorld(WorldConfig(users=args.users, items=args.items, seed=args.seed))
                await _paced(producer, _synthetic_events(world, args.synthetic, args.rate), args.rate)
            await producer.flush()
        elapsed = time.perf_counter() - started
        print(f"produced {producer.sent} events to {settings.events_topic} in {elapsed:.2f} s "
              f"({producer.sent / max(elapsed, 1e-9):,.0f} events/s)", file=sys.stderr)
        return 0

    try:
        return asyncio.run(run())
    except FileNotFoundError as exc:
        print(f"streamrec produce: {exc}", file=sys.stderr)
        return 1


# Event-time rate of `produce --synthetic` without --rate: the events are stamped this far apart,
# the last one now (sent as fast as possible, they must not stamp into the future).
SYNTHETIC_STAMP_RATE = 1_000.0


def _synthetic_events(world: Any, n: int, rate: float | None) -> Iterator[dict[str, Any]]:
    """``n`` synthetic events stamped so that none is ahead of the clock when it is sent.

    A worker dead-letters events more than ``STREAMREC_MAX_CLOCK_SKEW_S`` (300 s) ahead of its
    clock (``future_ts``). With ``--rate`` the events are stamped at that rate from now on, as
    they are sent; without it (as fast as possible) at ``SYNTHETIC_STAMP_RATE`` up to now.
    """
    if rate:
        return world.events(n, rate_per_s=rate)
    now_ms = int(time.time() * 1000)
    return world.events(n, start_ms=now_ms - int(n * 1000 / SYNTHETIC_STAMP_RATE), rate_per_s=SYNTHETIC_STAMP_RATE)


async def _paced(producer: Any, events: Iterator[dict[str, Any]], rate: float | None) -> None:
    started = time.perf_counter()
    for count, event in enumerate(events):
        await producer.send(event)
        if rate and count % 100 == 0:
            ahead = count / rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)


def _recs(args: argparse.Namespace) -> int:
    from streams.client import RecsReader
    from streams.tools.reach import quick_redis, redis_address, redis_setting_for, short_reason

    settings = Settings.from_env()
    logging.getLogger("streams.client").setLevel(logging.ERROR)  # "unavailable" is said once, below
    # A cluster client reads the slot map as it is built: the reader builds it, and answers "unavailable".
    reader = RecsReader(settings, client=None if settings.redis_cluster else quick_redis(settings))
    recs = reader.get(args.user_id, n=args.n, tags=args.tag)
    reader.close()
    unavailable = None
    if recs.source == "unavailable":
        reason = short_reason(recs.error or "no answer")
        unavailable = ServiceUnavailable("Redis", redis_address(settings.redis_url), redis_setting_for(reason), reason)
    if args.json:
        print(orjson.dumps({"user_id": recs.user_id, "source": recs.source, "items": recs.items, "scores": recs.scores,
                            "updated_ms": recs.updated_ms, "model_version": recs.model_version,
                            "error": recs.error}).decode())
        if unavailable is not None:
            raise unavailable
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if unavailable is not None:
        raise unavailable
    age = f"{recs.age_ms / 1000:.1f} s ago" if recs.age_ms is not None else "never"
    table = Table(title=f"{args.user_id}: {recs.source} list, updated {age}, model {recs.model_version}")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for rank, (item, score) in enumerate(zip(recs.items, recs.scores), 1):
        table.add_row(str(rank), item, f"{score:.4f}")
    console.print(table)
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from streams.tools.monitor import tail_metrics
    from streams.tools.reach import check_kafka

    settings = Settings.from_env()
    check_kafka(settings)
    return asyncio.run(tail_metrics(settings, as_json=args.json, from_beginning=args.from_beginning,
                                    seconds=args.seconds))


def _dev(args: argparse.Namespace) -> int:
    from streams.tools import dev

    if args.action == "up":
        settings = Settings.from_env()
        broker_port = urlsplit("//" + settings.bootstrap_servers[0]).port or 9092
        redis_port = urlsplit(settings.redis_url).port or 6379
        try:
            info = dev.dev_up(args.dir, broker_port=broker_port, redis_port=redis_port)
        except dev.DevServicesError as exc:  # a busy port is the settings': say which to change
            first = str(exc).splitlines()[0]
            if "busy" not in first:
                raise
            setting = "STREAMREC_BROKER_URL" if "broker" in first.split(":", 1)[0] else "STREAMREC_REDIS_URL"
            raise dev.DevServicesError(f"{first} ({setting})") from None
        print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    elif args.action == "down":
        stopped = dev.dev_down(args.dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    else:
        print(orjson.dumps(dev.dev_status(args.dir), option=orjson.OPT_INDENT_2).decode())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streams.tools.demo import DemoOptions, run_demo

    Settings.from_env()  # a bad setting is said before the embedded services start
    return run_demo(DemoOptions(events=args.events, rate=args.rate, users=args.users, items=args.items,
                                seed=args.seed, plain=args.plain, dashboard_port=args.dashboard_port))


def _settings(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="streamrec settings (environment variables)")
    table.add_column("variable", no_wrap=True)  # whole names, also in a narrow terminal or a pipe
    table.add_column("default")
    table.add_column("meaning")
    for row in describe_settings():
        table.add_row(*row)
    Console().print(table)
    Settings.from_env()  # and a bad value in the environment is said (exit 2)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from streams.tools.eval import main as eval_main

    return eval_main(args)


def _serve(args: argparse.Namespace) -> int:
    from streams.tools.serve import run

    return run(args)


def _bench(args: argparse.Namespace) -> int:
    from streams.tools.reach import check_kafka, check_redis

    given = _service_overrides(args)  # services given on the command line must answer before anything starts
    if given:
        settings = Settings.from_env(**given)
        if args.bootstrap:
            check_kafka(settings, "--bootstrap")
        if args.redis_url:
            check_redis(settings, "--redis-url")
    if args.bench_command == "scale":
        from streams.tools.bench.scale import main as scale_main

        return scale_main(args)
    if args.bench_command == "freshness":
        from streams.tools.bench.freshness import main as freshness_main

        return freshness_main(args)
    from streams.tools.bench.pipeline import main as bench_main

    return bench_main(args)


_COMMANDS = {
    "worker": _worker,
    "produce": _produce,
    "recs": _recs,
    "metrics": _metrics,
    "dev": _dev,
    "demo": _demo,
    "settings": _settings,
    "eval": _eval,
    "bench": _bench,
    "serve": _serve,
}

if __name__ == "__main__":
    sys.exit(main())
