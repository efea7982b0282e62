"""HTTP API speed: ``GET /v1/recommendations/{random user}`` through ``streamrec serve``, beside raw Redis GETs.

    python bench/http_load.py                    # ~3 min: offered 1000, 3000, 5000 req/s, 3 repeats of 10 s
    python bench/http_load.py --json             # one JSON object instead of the tables
    python bench/http_load.py --levers           # also the levers of the request path, each at saturation
    python bench/http_load.py --rates 200 --duration 1 --repeats 1 --users 1000   # seconds

It starts its own ``redis-server`` (loopback, a free port, no persistence) and fills it with
``--users`` lists of 50 items written by the worker's writer (``RecsWriter.write_lists``, the
worker's key format and JSON), then starts the real ``streamrec serve`` process on it (no broker:
reads only, with the defaults of the settings, so no API key, no rate limit and no access log).

Load: ``wrk`` (Debian's package; ``.ci/install-system.sh`` installs it), a C load generator. wrk is
closed-loop: each connection sends its next request when the previous one is answered. To hold an
offered rate, each connection waits ``--think-ms`` (10 ms) after every answer, and a rate R uses
R x (think + 1 ms) / 1000 connections; the achieved rate is reported beside the offered one (it
falls short when answers take longer than 1 ms, and a stalled server is not sent the requests it
would have missed: latency percentiles of a closed loop are optimistic under overload). Latency is
wrk's, from a request's first byte written to its answer, with a random user id per request
(``?n=10``). The "max" row is the closed loop without think time on ``--max-connections``
connections: the throughput ceiling.

Baseline, in the same run: ``redis-benchmark`` (shipped with redis-server) sending ``GET`` of the
same keys (random users) on as many connections as the HTTP row, as fast as Redis answers. The
server does an ``MGET`` of the user's key and the popular key per request (``AsyncRecsReader``).

Each row is the median of ``--repeats`` runs; ``server_cpu_us`` is the CPU time (user + system) of
the server's processes per answered request. ``--levers`` runs the app under uvicorn's own command
line (httptools + uvloop, no access log, ``bench.http_load:lever_app``) at saturation, with the
levers of the request path switched on one after the other: the FastAPI route with redis-py's
pure-Python reply parser, then the fast path of ``GET /v1/recommendations``
(``streams.tools.serve.FastRecommendations``), then hiredis' parser, then 2 worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._machine import cpu_model  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tools.dev import free_port, stop_process  # noqa: E402

PREFIX = "bench"
ITEMS_PER_LIST = 50
# wrk's Lua: a random user per request, a fixed think time per connection, and one JSON line at the end.
WRK_SCRIPT = r"""
local users = tonumber(os.getenv("BENCH_USERS"))
local think = tonumber(os.getenv("BENCH_THINK_MS"))
local counter = 0
function setup(thread) counter = counter + 1; thread:set("id", counter) end
function init(args) math.randomseed(id * 7919) end
function request()
  return wrk.format("GET", string.format("/v1/recommendations/u%012d?n=10", math.random(0, users - 1)))
end
if think > 0 then function delay() return think end end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors": %d, "non2xx": %d}\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def user_id(j: int) -> str:
    """The 12-digit form redis-benchmark's ``__rand_int__`` expands to, so both clients ask for the same keys."""
    return f"u{j:012d}"


# --- services ----------------------------------------------------------------------------------------


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - argv list, a fixed program
        [need("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_until(lambda: redis_ping(port), what=f"redis-server on port {port}")
    return process, port


def redis_ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


async def fill(settings: Settings, users: int) -> None:
    """``users`` lists of ``ITEMS_PER_LIST`` items and the popular list, as the worker writes them."""
    from streams.io.redis import RecsWriter, async_redis

    client = async_redis(settings)
    writer = RecsWriter(client, settings)
    rng = np.random.default_rng(0)
    now_ms = int(time.time() * 1000)
    try:
        for start in range(0, users, 5_000):
            chunk = [user_id(j) for j in range(start, min(users, start + 5_000))]
            items = [[f"i{k}" for k in rng.integers(0, 50_000, ITEMS_PER_LIST)] for _ in chunk]
            scores = -np.sort(-rng.random((len(chunk), ITEMS_PER_LIST)).astype(np.float32), axis=1)
            await writer.write_lists(chunk, items, scores, popular=[(f"i{k}", 1.0 / (k + 1)) for k in range(50)],
                                     model_version="bench", updated_ms=now_ms)
    finally:
        await client.aclose()


class Server:
    """``streamrec serve`` (or uvicorn's command line on the same app) as a process, until ``stop``."""

    def __init__(self, settings: Settings, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
               **(env or {})}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                            stdin=subprocess.DEVNULL)
        wait_until(self.up, what=f"the server ({' '.join(argv)})", timeout=60)

    def up(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"http_load: the server exited:\n{self.log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:  # noqa: S310 - our loopback URL
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server and its worker processes so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def stop(self) -> None:
        stop_process(self.process)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def wait_until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"http_load: {what} did not come up within {timeout:.0f} s")
        time.sleep(0.1)


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise SystemExit(f"http_load: {program} is not installed (bash .ci/install-system.sh installs it)")
    return path


# --- load ---------------------------------------------------------------------------------------------


def wrk(server: Server, script: Path, connections: int, think_ms: int, duration: float, users: int) -> dict[str, Any]:
    """One wrk run: requests/s, p50 / p99 / max latency (ms), errors, and the server's CPU per request."""
    env = {**os.environ, "BENCH_USERS": str(users), "BENCH_THINK_MS": str(think_ms)}
    cpu = server.cpu_s()
    out = subprocess.run(  # noqa: S603 - argv list
        [need("wrk"), f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "2s",
         "-s", str(script), server.url], env=env, capture_output=True, text=True, check=True)  # fmt: skip
    cpu = server.cpu_s() - cpu
    result = json.loads(out.stdout.strip().splitlines()[-1])
    answered = max(1, result["requests"])
    return {"rps": result["requests"] / (result["duration_us"] / 1e6), "p50_ms": result["p50_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000, "max_ms": result["max_us"] / 1000,
            "errors": result["errors"] + result["non2xx"], "server_cpu_us": cpu / answered * 1e6}


def redis_benchmark(port: int, connections: int, requests: int, users: int) -> dict[str, Any]:
    """GETs of random users' keys as fast as Redis answers them on ``connections`` connections."""
    out = subprocess.run(  # noqa: S603 - argv list
        [need("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-c", str(connections), "-n", str(requests),
         "-r", str(users), "--csv", "--precision", "3", "GET", f"{PREFIX}:rec:u__rand_int__"],
        capture_output=True, text=True, check=True)  # fmt: skip
    header, row = [line.replace('"', "").split(",") for line in out.stdout.strip().splitlines()[-2:]]
    values = dict(zip(header, row))
    return {"rps": float(values["rps"]), "p50_ms": float(values["p50_latency_ms"]),
            "p99_ms": float(values["p99_latency_ms"]), "max_ms": float(values["max_latency_ms"])}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def connections_for(rate: int, think_ms: int) -> int:
    return max(1, math.ceil(rate * (think_ms + 1) / 1000))


# --- the runs -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 3000, 5000], help="offered requests/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=100_000, help="lists in Redis (default 100000)")
    parser.add_argument("--think-ms", type=int, default=10, help="wait of a connection after each answer")
    parser.add_argument("--max-connections", type=int, default=16, help="connections of the saturation row")
    parser.add_argument("--redis-requests", type=int, default=100_000, help="GETs per redis-benchmark run")
    parser.add_argument("--workers", type=int, default=None, help="streamrec serve --workers (default: the setting)")
    parser.add_argument("--levers", action="store_true", help="also time the levers of the request path at saturation")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    for program in ("wrk", "redis-server", "redis-benchmark"):
        need(program)

    with tempfile.TemporaryDirectory(prefix="http-load-") as tmp:
        workdir = Path(tmp)
        script = workdir / "recommendations.lua"
        script.write_text(WRK_SCRIPT)
        redis_process, redis_port = start_redis(workdir)
        try:
            settings = Settings.from_env({}, redis_url=f"redis://127.0.0.1:{redis_port}/0", redis_prefix=PREFIX,
                                         broker_url=f"kafka://127.0.0.1:{free_port()}", log_level="warning")
            t0 = time.perf_counter()
            asyncio.run(fill(settings, args.users))
            progress(f"{args.users} lists written in {time.perf_counter() - t0:.1f} s")
            report: dict[str, Any] = {
                "machine": {"cpu": cpu_model(), "nproc": os.cpu_count(), "python": sys.version.split()[0],
                            "loadavg_start": os.getloadavg()[0]},
                "users": args.users, "duration_s": args.duration, "repeats": args.repeats,
                "think_ms": args.think_ms, "rows": run_rates(args, settings, script, workdir, redis_port),
            }  # fmt: skip
            if args.levers:
                report["levers"] = run_levers(args, settings, script, workdir)
            report["machine"]["loadavg_end"] = os.getloadavg()[0]
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_tables(report)
    return 0


def serve_argv(workers: int | None) -> list[str]:
    argv = [sys.executable, "-m", "streams.tools.cli", "serve", "--port", "{port}"]
    return argv + (["--workers", str(workers)] if workers else [])


def run_rates(args: argparse.Namespace, settings: Settings, script: Path, workdir: Path, redis_port: int
              ) -> list[dict[str, Any]]:
    server = Server(settings, serve_argv(args.workers), workdir / "serve.log")
    plan = [(str(rate), rate, connections_for(rate, args.think_ms), args.think_ms) for rate in args.rates]
    plan.append(("max", None, args.max_connections, 0))
    runs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {label: [] for label, *_ in plan}
    try:
        wrk(server, script, 4, 0, min(2.0, args.duration), args.users)  # warm-up, not counted
        for repeat in range(args.repeats):
            for label, _, connections, think in plan:
                http = wrk(server, script, connections, think, args.duration, args.users)
                raw = redis_benchmark(redis_port, connections, args.redis_requests, args.users)
                runs[label].append((http, raw))
                progress(f"repeat {repeat + 1} offered {label}: {http['rps']:.0f} req/s p99 {http['p99_ms']:.1f} ms; "
                         f"redis {raw['rps']:.0f} GET/s p99 {raw['p99_ms']:.2f} ms")
    finally:
        server.stop()
    rows = []
    for label, rate, connections, think in plan:
        http = median_of([h for h, _ in runs[label]])
        raw = median_of([r for _, r in runs[label]])
        rows.append({"offered_rps": rate, "connections": connections, "think_ms": think, "http": http, "redis": raw,
                     "p50_ratio": http["p50_ms"] / max(raw["p50_ms"], 1e-3),
                     "p99_ratio": http["p99_ms"] / max(raw["p99_ms"], 1e-3),
                     "rps_ratio": raw["rps"] / max(http["rps"], 1e-9)})
    return rows


UVICORN = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
# label, uvicorn options, the lever switches (lever_app reads them from the environment)
LEVERS: list[tuple[str, list[str], dict[str, str]]] = [
    ("FastAPI route, pure-Python Redis parser", UVICORN, {"BENCH_FAST_PATH": "0", "BENCH_HIREDIS": "0"}),
    ("fast path, pure-Python Redis parser", UVICORN, {"BENCH_FAST_PATH": "1", "BENCH_HIREDIS": "0"}),
    ("fast path, hiredis", UVICORN, {"BENCH_FAST_PATH": "1", "BENCH_HIREDIS": "1"}),
    ("fast path, hiredis, 2 workers", [*UVICORN, "--workers", "2"], {"BENCH_FAST_PATH": "1", "BENCH_HIREDIS": "1"}),
]


def lever_app() -> Any:
    """The app of ``STREAMREC_*`` with the levers of ``BENCH_FAST_PATH`` and ``BENCH_HIREDIS`` (``1`` on, ``0``
    off): ``uvicorn --factory bench.http_load:lever_app``."""
    from streams.client import AsyncRecsReader
    from streams.io.redis import async_redis
    from streams.tools.serve import create_app

    def reader(settings: Settings) -> AsyncRecsReader:
        client = async_redis(settings)
        if os.environ.get("BENCH_HIREDIS") == "0":  # the parser redis-py uses when hiredis is not installed
            from redis._parsers import _AsyncRESP3Parser

            client.connection_pool.connection_kwargs["parser_class"] = _AsyncRESP3Parser
        return AsyncRecsReader(settings, client=client)

    return create_app(Settings.from_env(), reader_factory=reader, fast_path=os.environ.get("BENCH_FAST_PATH") != "0")


def run_levers(args: argparse.Namespace, settings: Settings, script: Path, workdir: Path) -> list[dict[str, Any]]:
    base = [sys.executable, "-m", "uvicorn", "bench.http_load:lever_app", "--factory", "--host", "127.0.0.1",
            "--port", "{port}"]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in LEVERS}
    for repeat in range(args.repeats):
        for k, (label, options, switches) in enumerate(LEVERS):
            server = Server(settings, base + options, workdir / f"lever-{k}.log", env=switches)
            try:
                wrk(server, script, 4, 0, min(2.0, args.duration), args.users)  # warm-up
                runs[label].append(wrk(server, script, args.max_connections, 0, args.duration, args.users))
            finally:
                server.stop()
            progress(f"repeat {repeat + 1} {label}: {runs[label][-1]['rps']:.0f} req/s, "
                     f"{runs[label][-1]['server_cpu_us']:.0f} us CPU/request")
    return [{"lever": label, "uvicorn_args": " ".join(options), "switches": switches,
             "connections": args.max_connections, **median_of(runs[label])} for label, options, switches in LEVERS]


def progress(message: str) -> None:
    print(f"[http_load] {message}", file=sys.stderr, flush=True)


def print_tables(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"{machine['cpu']}, {machine['nproc']} cores, Python {machine['python']}; load average "
          f"{machine['loadavg_start']:.2f} -> {machine['loadavg_end']:.2f}; {report['users']} users, "
          f"{report['duration_s']:g} s per run, median of {report['repeats']}\n")
    print("| offered req/s | conns | HTTP req/s | p50 ms | p99 ms | max ms | errors | server CPU µs/req "
          "| Redis GET/s | Redis p50 ms | Redis p99 ms | p50 ×Redis | p99 ×Redis |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in report["rows"]:
        h, r = row["http"], row["redis"]
        offered = "max (no think time)" if row["offered_rps"] is None else f"{row['offered_rps']:,}"
        print(f"| {offered} | {row['connections']} | {h['rps']:,.0f} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} "
              f"| {h['max_ms']:.1f} | {h['errors']:.0f} | {h['server_cpu_us']:.0f} | {r['rps']:,.0f} "
              f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {row['p50_ratio']:.1f} | {row['p99_ratio']:.1f} |")
    if "levers" in report:
        print("\n| levers (httptools + uvloop, no access log, saturation) | req/s | p50 ms | p99 ms | server CPU µs/req |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for lever in report["levers"]:
            print(f"| {lever['lever']} | {lever['rps']:,.0f} | {lever['p50_ms']:.2f} | {lever['p99_ms']:.2f} "
                  f"| {lever['server_cpu_us']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
